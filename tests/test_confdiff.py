"""Issue 17.8: a reload says in the log what changed (confdiff.changes, a pure
function of two Configs), and a real daemon logs it after SIGHUP."""

from __future__ import annotations

import dataclasses
import signal

import pytest
from helpers import wait_converged, write_config

from inosync.confdiff import SHOWN_ENTRIES, SHOWN_VALUE, changes, shorten
from inosync.config import KNOWN, Config
from inosync.excludes import Excludes

OLD = Config(path="/etc/inosync.conf", wpath="/srv/www", configured_wpath="/srv/www",
             rnodes=("/backup/www", "web1:/srv/www"), rexcludes=("*.o",),
             excludes=Excludes(("*.o", "cache/")))


def replace(**changed: object) -> Config:
    return dataclasses.replace(OLD, **changed)


def test_nothing_changed():
    assert changes(OLD, replace()) == ["configuration unchanged"]
    # where the file sets things is no setting: moved lines change nothing
    assert changes(OLD, replace(setting_lines={"wpath": 9})) == ["configuration unchanged"]


def test_a_number_a_flag_and_a_file():
    new = replace(timeout=30, edelay=2.5, replay_moves=False, logfile="/var/log/inosync.log")
    assert changes(OLD, new) == [
        "edelay: 10 -> 2.5",
        "timeout: 60 -> 30",
        "logfile: none -> /var/log/inosync.log",
        "replay_moves: True -> False",
    ]


def test_nodes_added_and_removed():
    new = replace(rnodes=("/backup/www", "web2:/srv/www", "rsync://h/mod/www"))
    assert changes(OLD, new) == ["node removed: web1:/srv/www", "node added: web2:/srv/www",
                                 "node added: rsync://h/mod/www"]
    assert changes(OLD, replace(rnodes=OLD.rnodes[::-1])) == [
        "rnodes: the same nodes in another order"]


def test_excludes_as_patterns_added_and_removed():
    """rexcludes and rexcludes_from together: the patterns in force."""
    new = replace(rexcludes=("*.o", "*.tmp"), excludes=Excludes(("*.o", "*.tmp", "- x y")))
    assert changes(OLD, new) == ["excludes: added '*.tmp', '- x y'; removed 'cache/'"]
    swapped = replace(excludes=Excludes(("cache/", "*.o")))  # the first match wins
    assert changes(OLD, swapped) == ["excludes: the same entries in another order"]


def test_a_long_list_of_patterns_is_counted():
    many = tuple(f"*.tmp{i}" for i in range(SHOWN_ENTRIES + 3))
    line, = changes(OLD, replace(excludes=Excludes(("*.o", "cache/", *many))))
    assert line == "excludes: added " + ", ".join(map(repr, many[:SHOWN_ENTRIES])) + \
        " and 3 more"


def test_rsync_args_and_emask_as_entries_ssh_as_a_command():
    new = replace(rsync_args=("--hard-links", "--chmod=D755,F644"),
                  emask=OLD.emask[:-1], ssh=("ssh", "-p", "2222"))
    assert changes(OLD, new) == [
        "emask: removed IN_ATTRIB",
        "rsync_args: added --hard-links, --chmod=D755,F644",
        "ssh: ssh -o BatchMode=yes -o ConnectTimeout=10 -o ServerAliveInterval=10 -o "
        "ServerAliveCountMax=3 -> ssh -p 2222",
    ]


def test_wpath_as_set():
    new = replace(wpath="/data/www-2", configured_wpath="/srv/www-current")
    assert changes(OLD, new) == ["wpath: /srv/www -> /srv/www-current"]


def test_long_values_keep_their_start_and_end():
    path = "/srv/" + "d" * 200 + "/inosync.status"
    assert shorten(path) == "/srv/" + "d" * 59 + "..." + "d" * 18 + "/inosync.status"
    assert len(shorten(path)) == SHOWN_VALUE
    line, = changes(OLD, replace(statusfile=path))
    assert line == f"statusfile: none -> {shorten(path)}"
    args = tuple(f"--exclude=pattern-{i}" for i in range(40))  # said entry by entry
    line, = changes(OLD, replace(rsync_args=args))
    assert line == ("rsync_args: added " + ", ".join(args[:SHOWN_ENTRIES]) +
                    f" and {40 - SHOWN_ENTRIES} more")


# Values unlike the defaults, one for each setting a file may set.
OTHER_VALUES: dict[str, object] = {
    "rspeed": 100, "emask": ("IN_CLOSE_WRITE",), "edelay": 1.0, "rsync": "/opt/rsync",
    "rsync_args": ("--hard-links",), "ssh": ("ssh",), "timeout": 5, "contimeout": 5,
    "retry_min": 2.0, "retry_max": 30.0, "max_pending": 10, "max_parallel": 3, "full_threshold": 10,
    "rescan_interval": 5.0, "resync_interval": 0.0, "progress_interval": 0.0,
    "pidfile": "/run/i.pid", "logfile": "/var/log/i.log", "statusfile": "/run/i.json",
    "metrics_file": "/run/i.prom",
    "state_dir": "/var/lib/other", "allow_empty_wpath": True, "allow_system_wpath": True,
    "replay_moves": False, "ssh_control": False, "delete": "running",
}


@pytest.mark.parametrize("name", sorted(KNOWN - {"rpath", "rexcludes_from", "wpath", "rnodes",
                                                  "rexcludes"}))
def test_every_setting_is_compared(name):
    """A setting the comparison forgot would make a reload say "unchanged"."""
    line, = changes(OLD, replace(**{name: OTHER_VALUES[name]}))
    assert line.startswith(f"{name}: "), line


def test_the_table_covers_every_setting():
    assert set(OTHER_VALUES) == KNOWN - {"rpath", "rexcludes_from", "wpath", "rnodes",
                                         "rexcludes"}


@pytest.mark.slow
def test_a_reload_logs_what_changed(tree, tmp_path, run_inosync):
    src, nodes = tree["src"], tree["nodes"]
    conf = write_config(tmp_path / "inosync.conf", wpath=str(src), rnodes=[str(nodes[0])],
                        edelay=0.2, rexcludes=["*.o"])
    d = run_inosync(conf)
    wait_converged(src, [nodes[0]])
    d.proc.send_signal(signal.SIGHUP)
    d.wait_log(r"reload: configuration unchanged")
    write_config(conf, wpath=str(src), rnodes=[str(nodes[1])], edelay=0.2,
                 rexcludes=["*.tmp"], timeout=30)
    d.proc.send_signal(signal.SIGHUP)
    d.wait_log(r"reloaded; full sync")
    lines = [line.split(" INFO ", 1)[1] for line in d.log().splitlines()
             if " INFO reload: " in line]
    assert lines == [
        "reload: configuration unchanged",
        f"reload: unchanged nodes: no sync ({nodes[0]})",
        f"reload: node removed: {nodes[0]}",
        f"reload: node added: {nodes[1]}",
        "reload: excludes: added '*.tmp'; removed '*.o'",
        "reload: timeout: 60 -> 30",
        f"reload: full sync to {nodes[1]}: new node",
    ], d.log()
    wait_converged(src, [nodes[1]])
    assert d.stop() == 0
