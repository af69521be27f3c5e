"""--check: the summary (a pure function of the loaded config), the checks a start
makes after loading, and the real command, which must touch nothing."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
from helpers import inosync_argv, wait_converged, wait_until, write_config

from inosync.check import non_defaults, preflight, summary
from inosync.config import load
from inosync.rsync import full_argv


def load_config(tmp_path: Path, **settings: object):
    return load(str(write_config(tmp_path / "inosync.conf", **settings)))


def test_summary_names_everything_that_matters(tree, tmp_path):
    link = tmp_path / "www"
    link.symlink_to(tree["src"])
    nodes = [str(tree["nodes"][0]), "root@db1:/srv/www", "rsync://h/mod/www"]
    excludes = [f"*.tmp{i}" for i in range(7)]
    c = load_config(tmp_path, wpath=str(link), rnodes=nodes, rexcludes=excludes, edelay=2.5,
                    timeout=30, rspeed=500, rsync_args=["--hard-links"], ssh_control=False)
    lines = summary(c)
    text = "\n".join(lines)
    assert lines[0] == f"config: {tmp_path / 'inosync.conf'}"
    assert f"wpath: {tree['src']} (set as {link})" in lines  # the real path, and as set
    assert f"  {nodes[0]} (local)" in lines
    assert "  root@db1:/srv/www (ssh)" in lines
    assert "move replay: on for local and ssh nodes" in "\n".join(lines)
    assert "  rsync://h/mod/www (rsync daemon)" in lines
    assert "excludes: 7 ('*.tmp0', '*.tmp1', '*.tmp2', '*.tmp3', '*.tmp4', ...)" in lines
    assert "edelay: 2.5 s" in lines
    for setting in ("timeout: 30", "rspeed: 500", "rsync_args: --hard-links",
                    "ssh_control: False"):
        assert setting in lines
    assert "retry_min" not in text and "emask" not in text  # defaults are not listed
    for node in nodes:  # the exact argv of a full sync, one line per node
        assert f"  {shlex.join(full_argv(c.rsync_options(), c.wpath, node, progress=True))}" \
            in lines
    assert "ControlMaster" not in text  # ssh_control is off


def test_summary_of_a_minimal_config(tree, tmp_path):
    c = load_config(tmp_path, wpath=str(tree["src"]), rnodes=[str(tree["nodes"][0])])
    lines = summary(c)
    assert f"wpath: {tree['src']}" in lines
    assert "excludes: none" in lines and "edelay: 10 s" in lines
    assert non_defaults(c) == [("state_dir", str(tmp_path / "state"))]  # the tests' own


def test_summary_notes_shared_ssh_connections(tree, tmp_path):
    c = load_config(tmp_path, wpath=str(tree["src"]), rnodes=["web1:/srv"])
    assert any("ControlMaster=auto" in line for line in summary(c))


def test_preflight_finds_ssh_only_when_a_node_needs_it(tree, tmp_path):
    local = [str(tree["nodes"][0])]
    missing = ["/nonexistent/ssh", "-o", "BatchMode=yes"]
    ok = load_config(tmp_path, wpath=str(tree["src"]), rnodes=local, ssh=missing)
    assert preflight(ok) is None
    bad = load_config(tmp_path, wpath=str(tree["src"]), rnodes=[*local, "h:/x"], ssh=missing)
    assert "ssh program '/nonexistent/ssh' not found" in (preflight(bad) or "")
    named = load_config(tmp_path, wpath=str(tree["src"]), rnodes=["h:/x"],
                        ssh=["no-such-ssh-inosync"])
    assert "'no-such-ssh-inosync' not found" in (preflight(named) or "")


def test_preflight_finds_a_local_node_whose_parent_is_missing(tree, tmp_path):
    deep = tmp_path / "no" / "such" / "node"
    c = load_config(tmp_path, wpath=str(tree["src"]), rnodes=[str(deep)])
    assert f"its parent directory {deep.parent} does not exist" in (preflight(c) or "")
    (tmp_path / "no" / "such").mkdir(parents=True)
    assert preflight(c) is None  # rsync makes the last directory itself


@pytest.mark.skipif(os.getuid() == 0, reason="root reads any directory")
def test_preflight_unreadable_wpath(tree, tmp_path):
    c = load_config(tmp_path, wpath=str(tree["src"]), rnodes=[str(tree["nodes"][0])])
    tree["src"].chmod(0o300)
    try:
        assert "cannot be read" in (preflight(c) or "")
    finally:
        tree["src"].chmod(0o755)


# ---- the real command


def run(conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*inosync_argv(), "-c", str(conf), *args], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def snapshot(top: Path) -> dict[bytes, tuple[int, int, int]]:
    """Every entry below top (and top): mode, size, mtime."""
    out = {}
    for path in [os.fsencode(top), *(os.path.join(d, n) for d, dirs, files in
                                     os.walk(os.fsencode(top)) for n in dirs + files)]:
        st = os.lstat(path)
        out[path] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


@pytest.mark.slow
def test_check_command_prints_and_touches_nothing(tree, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    daemon_files = {name: state / name for name in ("pid", "log", "status")}
    conf = write_config(tmp_path / "inosync.conf", wpath=str(tree["src"]),
                        rnodes=[str(n) for n in tree["nodes"]], pidfile=str(daemon_files["pid"]),
                        logfile=str(daemon_files["log"]), statusfile=str(daemon_files["status"]))
    before = {p: snapshot(p) for p in (tree["src"], *tree["nodes"], state)}
    done = run(conf, "--check")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert f"wpath: {tree['src']}" in done.stdout.splitlines()
    assert f"pidfile: {daemon_files['pid']}" in done.stdout.splitlines()
    assert done.stdout.count(" -a -r --delete --modify-window=-1 ") == 2  # one per node
    assert before == {p: snapshot(p) for p in before}  # no node written, no file made


@pytest.mark.slow
@pytest.mark.parametrize(("settings", "says"), [
    ({"rnodes": ["/tmp"]}, "wpath is not set"),
    ({"wpath": "WPATH", "rnodes": ["h:/x"], "ssh": ["/nonexistent/ssh"]},
     "ssh program '/nonexistent/ssh' not found"),
    ({"wpath": "WPATH", "rnodes": ["NODE"], "edelay": -1}, "edelay must be from 0"),
])
def test_check_command_errors_are_one_line(tree, tmp_path, settings, says):
    fixed = {k: str(tree["src"]) if v == "WPATH" else [str(tree["nodes"][0])] if v == ["NODE"]
             else v for k, v in settings.items()}
    done = run(write_config(tmp_path / "inosync.conf", **fixed), "--check")
    assert done.returncode == 2
    assert says in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


@pytest.mark.slow
@pytest.mark.parametrize("option", ["--version", "--no-from0", "-avV", "--info=help"])
def test_check_refuses_an_option_off_the_allowlist(tree, tmp_path, option):
    """Issue 16, rule 1: rsync prints its version (or help) and exits 0, and every
    run says "synced" while the nodes stay empty; --no-from0 switches off
    inosync's own --from0. Refused at load: one line, exit 2, nothing run."""
    conf = write_config(tmp_path / "inosync.conf", wpath=str(tree["src"]),
                        rnodes=[str(tree["nodes"][0])], rsync_args=[option])
    done = run(conf, "--check")
    assert done.returncode == 2, done.stdout
    assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1, done.stderr
    line = done.stderr.strip()
    assert f" {conf}:3: rsync_args has {option}" in line, line
    if option != "--info=help":
        assert "which is not on inosync's list of rsync options known to be safe (README, " \
            'section "rsync options")' in line, line
    assert not any(tree["nodes"][0].iterdir())


@pytest.mark.slow
def test_check_while_the_daemon_runs(tree, tmp_path, run_inosync):
    pidfile = tmp_path / "inosync.pid"
    conf = write_config(tmp_path / "inosync.conf", wpath=str(tree["src"]), edelay=0.2,
                        rnodes=[str(n) for n in tree["nodes"]], pidfile=str(pidfile))
    d = run_inosync(conf)
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 20, "pidfile")
    wait_converged(tree["src"], tree["nodes"])
    held = pidfile.read_text()
    done = run(conf, "--check")
    assert done.returncode == 0, done.stderr
    assert pidfile.read_text() == held and d.proc.poll() is None
    assert d.stop() == 0


@pytest.mark.parametrize("dest, meaning", [
    ("root@db1:site", "site in the login directory"),
    # "root@db1:", ":.", ":~" and ":~www/site" are refused (issue 16 and its reviews)
    ("root@db1:./site", "./site in the login directory"),
    ("root@db1:~/site", "site in the home directory of the login user"),
    ("root@[::1]:~/site/", "site/ in the home directory of the login user"),
])
def test_summary_says_what_an_ssh_node_path_means(tree, tmp_path, dest, meaning):
    """Issue 15.6: one meaning of every node spelling, for rsync, the replay and --check."""
    conf = write_config(tmp_path / "inosync.conf", wpath=str(tree["src"]), rnodes=[dest])
    assert f"  {dest} (ssh: {meaning})" in summary(load(str(conf)))


@pytest.mark.parametrize("args, shown", [
    (["-z", "--rsync-path=/opt/rsync/bin/rsync"], "--rsync-path=/opt/rsync/bin/rsync"),
    (["--confine-root", "/srv"], "--confine-root"),
    (["--max-delete=100"], "--max-delete=100"),
])
def test_summary_says_which_option_turns_the_replay_off(tree, tmp_path, args, shown):
    """Issue 15.3: an option a replayed rename would bypass turns replay off, said here."""
    conf = write_config(tmp_path / "inosync.conf", wpath=str(tree["src"]),
                        rnodes=[str(tree["nodes"][0])], rsync_args=args)
    lines = summary(load(str(conf)))
    assert any(line.startswith(f"move replay: off (rsync_args has {shown},") for line in lines)
