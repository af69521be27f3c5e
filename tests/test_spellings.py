"""Issue 16, spellings and places that turn into a wipe: one meaning per node
spelling, no control characters in a node, duplicates found after
normalisation, no unknown settings, no daemon file inside a local node, and
one verdict for --check and a start."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
from helpers import Sshd, inosync_argv, wait_until, write_config

from inosync import check, config, rsync
from inosync.config import ConfigError, load


@pytest.fixture
def wdir(tmp_path: Path) -> Path:
    d = tmp_path / "www"
    d.mkdir()
    (d / "index.html").write_text("hello\n")
    return d


def conf_text(tmp_path: Path, text: str) -> str:
    path = tmp_path / "inosync.conf"
    path.write_text(text)
    path.chmod(0o644)
    return str(path)


def error_of(path: str | Path, base_dir: str | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(str(path), base_dir)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    return message


def with_nodes(tmp_path: Path, wdir: Path, nodes: list[str], **settings: object) -> Path:
    return write_config(tmp_path / "inosync.conf", wpath=str(wdir), rnodes=nodes, **settings)


# ---- 1. "host:" is not the remote root


@pytest.mark.parametrize("dest", ["web1:", "root@web1:", "root@[::1]:"])
def test_an_ssh_node_without_a_path_is_refused(tmp_path, wdir, dest):
    """0.4 synced 'host:' to 'host:/', the remote root; rsync reads it as the
    login directory: a spelling with two meanings is refused, not guessed."""
    message = error_of(with_nodes(tmp_path, wdir, [dest]))
    assert f"entry {dest!r} names no directory" in message
    assert f"{dest}/path" in message and f"{dest}~/path" in message


@pytest.mark.parametrize("dest", ["web1:/", "web1://", "web1:/."])  # /srv/..: test_review16
def test_an_ssh_node_at_the_remote_root_is_refused(tmp_path, wdir, dest):
    message = error_of(with_nodes(tmp_path, wdir, [dest]))
    assert f"entry {dest!r} is the root directory of web1" in message


def test_the_login_directory_has_one_spelling_and_one_meaning(tmp_path, wdir):
    c = load(str(with_nodes(tmp_path, wdir, ["web1:site"])))
    assert rsync.full_argv(c.rsync_options(), c.wpath, "web1:site")[-1] == "web1:site/"
    assert "  web1:site (ssh: site in the login directory)" in check.summary(c)
    # Built by hand, past load (the login directory itself is refused at load,
    # test_review16): never the remote root.
    assert rsync.with_slash("web1:") == "web1:./"


GUARD = """#!/bin/sh
# The node's sshd runs this for every command: the login directory is {login},
# and only rsync into its directory site (". site/") or the replay (which reads its root on
# stdin) may run. Anything else is refused before it runs: a test of a wipe
# must not be able to wipe.
cd {login} || exit 1
case "$SSH_ORIGINAL_COMMAND" in
    true) exit 0 ;;
    "rsync --server "*" . site/" | "perl -e "*) ;;
    *) printf '%s\\n' "$SSH_ORIGINAL_COMMAND" >> {refused}; exit 1 ;;
esac
exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"
"""


@pytest.fixture
def login_sshd(tmp_path: Path):
    """An sshd whose login directory is tmp_path/login, through a forced command
    that lets only rsync into that directory run (see GUARD)."""
    login, refused = tmp_path / "login", tmp_path / "refused"
    login.mkdir()
    refused.write_text("")
    guard = tmp_path / "guard"
    guard.write_text(GUARD.format(login=login, refused=refused))
    guard.chmod(0o755)
    server = Sshd(tmp_path / "sshd")
    keys = server.dir / "authorized_keys"
    keys.write_text(f'command="{guard}" {keys.read_text()}')
    server.start()
    yield server, login, refused
    server.stop()


def run(conf: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*inosync_argv(), "-c", str(conf), *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def start_briefly(conf: Path, *args: str) -> tuple[int | None, str]:
    """Start inosync in the foreground; (its exit status, or None if it still
    ran after 5 s (then stopped), and what it wrote)."""
    proc = subprocess.Popen([*inosync_argv(), "-c", str(conf), *args], text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        out, _ = proc.communicate(timeout=5)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
        return None, out


@pytest.mark.slow
def test_host_colon_never_reaches_the_remote_root(tmp_path, wdir, login_sshd):
    """End to end over a real sshd: 'host:' is refused by --check and by a start,
    nothing is sent anywhere; so is 'host:.' (the login directory itself: its
    ~/.ssh would go); 'host:site' lands in the login directory's site."""
    server, login, refused = login_sshd
    (login / "kept").write_text("the login directory's own file\n")
    bare = with_nodes(tmp_path, wdir, ["root@127.0.0.1:"], ssh=server.ssh_command(),
                      edelay=0.2)
    checked = run(bare, "--check")
    for code, out in ((checked.returncode, checked.stderr), start_briefly(bare)):
        assert code == 2, out
        assert "names no directory" in out and len(out.strip().splitlines()) == 1, out
    assert refused.read_text() == ""  # nothing even tried to reach '/'
    assert sorted(os.listdir(login)) == ["kept"]

    dot = with_nodes(tmp_path, wdir, ["root@127.0.0.1:."], ssh=server.ssh_command())
    checked = run(dot, "--check")
    assert checked.returncode == 2 and "is the login directory itself" in checked.stderr

    site = with_nodes(tmp_path, wdir, ["root@127.0.0.1:site"], ssh=server.ssh_command(),
                      edelay=0.2)
    proc = subprocess.Popen([*inosync_argv(), "-c", str(site)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: (login / "site" / "index.html").exists(), 30, "site synced")
    finally:
        proc.terminate()
        proc.wait(30)
    assert (login / "site" / "index.html").read_text() == "hello\n"
    assert (login / "kept").exists()  # the login directory's own files stay
    assert refused.read_text() == ""


# ---- 2. control characters and surrounding whitespace


@pytest.mark.parametrize("node", ["NODE\n", "NODE\r", "NO\tDE", "NODE\x7f", "NODE\x1b[0m",
                                  " NODE", "NODE ", "h:/srv/www\t", "h:/srv/w\x01ww",
                                  " h:/srv", "h:/srv/a\nb", "rsync://h/m/\n", "NODE\u00a0",
                                  "NODE\x85"])
def test_a_node_with_a_control_character_or_outer_space_is_refused(tmp_path, wdir, node):
    """A trailing newline was synced into a new directory 'n1\\n'."""
    node = node.replace("NODE", str(tmp_path / "n1"))
    message = error_of(with_nodes(tmp_path, wdir, [node]))
    assert repr(node) in message
    assert "control character" in message or "space" in message


def test_spaces_inside_a_node_are_fine(tmp_path, wdir):
    node = str(tmp_path / "my site")
    assert load(str(with_nodes(tmp_path, wdir, [node, "h:/srv/my site"]))).rnodes[0] == node


# ---- 3. one node listed twice


@pytest.mark.parametrize("nodes, shown", [
    (["a", "a/"], "BASE/a"),
    (["a", "./a"], "BASE/a"),
    (["BASE/a", "a//"], "BASE/a"),
    (["h:/srv", "h:/srv/"], "h:/srv"),
    (["h:/srv", "h://srv//./"], "h:/srv"),  # ".." is refused on its own (test_review16)
    (["h:site", "h:./site/"], "h:site"),
    (["h:~/site", "h:~/site/"], "h:~/site"),
    (["rsync://h/m/x", "rsync://h/m/x/"], "rsync://h/m/x"),
])
def test_one_node_listed_twice_is_said_plainly(tmp_path, wdir, nodes, shown):
    base = str(tmp_path)
    nodes = [n.replace("BASE", base) for n in nodes]
    message = error_of(with_nodes(tmp_path, wdir, nodes), base)
    first, second = nodes
    assert f"rnodes lists {shown.replace('BASE', base)} twice (as {first!r} and " \
           f"{second!r})" in message


def test_nodes_that_are_not_provably_the_same_are_kept(tmp_path, wdir):
    nodes = ["h:/srv", "root@h:/srv", "h:srv", "h2:/srv"]
    assert load(str(with_nodes(tmp_path, wdir, nodes))).rnodes == tuple(nodes)


# ---- 4. unknown settings


@pytest.mark.parametrize("line", ["exclude_file = 'private.txt'", "bwlimit = 100",
                                  "max_delete = 10", "delete_excluded = True", "ignore = ['*.tmp']",
                                  "ssh_args = ['-p', '2222']", "hosts = ['a', 'b']"])
def test_an_unknown_setting_is_an_error(tmp_path, wdir, line):
    path = conf_text(tmp_path, f"wpath = {str(wdir)!r}\nrnodes = ['h:/srv']\n{line}\n")
    message = error_of(path)
    name = line.split(" = ")[0]
    assert message.startswith(f"{path}:3: unknown setting {name!r}"), message


def test_an_unknown_setting_names_the_closest_ones(tmp_path, wdir):
    path = conf_text(tmp_path, f"wpath = {str(wdir)!r}\nrnodes = ['h:/srv']\n"
                               "exclude_file = 'x'\n")
    assert "(closest: 'rexcludes_from', 'rexcludes')" in error_of(path)


def test_a_name_set_by_a_loop_is_found_with_its_line(tmp_path, wdir):
    path = conf_text(tmp_path, f"wpath = {str(wdir)!r}\nrnodes = []\n"
                               "for host in ['a', 'b']:\n    rnodes.append(host + ':/srv')\n")
    assert error_of(path).startswith(f"{path}:3: unknown setting 'host'")


def test_helpers_that_cannot_be_mistaken_for_settings_are_fine(tmp_path, wdir):
    path = conf_text(tmp_path, "\n".join([
        "import os", "import os.path as osp", "from os.path import join",
        "def node(h):", "    local = h + ':/srv'", "    return local",
        "class Helper:", "    pass",
        "_hosts = ['a', 'b']", "for _h in _hosts:", "    pass",
        f"wpath = {str(wdir)!r}", "rpath = '/srv/'",
        "rnodes = [node(h) for h in _hosts]", ""]))
    assert load(path).rnodes == ("a:/srv", "b:/srv")


def test_the_shipped_configs_define_only_settings_and_helpers():
    """The demo's helper variable was 'here' (now '_here'); the example's rpath is known."""
    repo = Path(__file__).resolve().parents[1]
    for path in (repo / "demo" / "inosync.conf", repo / "inosync.conf.example"):
        text = path.read_text()
        namespace, names = config.run(str(path), text)
        config._check_unknown(namespace, names, lambda name, where=str(path): where)


# ---- 5. the daemon's own files inside a local node


@pytest.mark.parametrize("setting", ["pidfile", "logfile", "statusfile"])
def test_a_daemon_file_inside_a_local_node_is_refused(tmp_path, wdir, setting):
    """The first sync deleted the pidfile; a second daemon of the tree then started."""
    node = tmp_path / "node"
    (node / "run").mkdir(parents=True)
    path = node / "run" / "inosync.file"
    message = error_of(with_nodes(tmp_path, wdir, [str(node)], **{setting: str(path)}))
    assert f"{setting} {path} lies inside local node {node}" in message


def test_state_dir_inside_a_local_node_is_refused(tmp_path, wdir):
    node = tmp_path / "node"
    message = error_of(with_nodes(tmp_path, wdir, [str(node)], state_dir=str(node / "state")))
    assert "state_dir" in message and f"inside local node {node}" in message


def test_a_daemon_file_inside_a_node_through_a_symlink_is_refused(tmp_path, wdir):
    node = tmp_path / "node"
    node.mkdir()
    (tmp_path / "run").symlink_to(node)
    message = error_of(with_nodes(tmp_path, wdir, [str(node)],
                                  pidfile=str(tmp_path / "run" / "x.pid")))
    assert "inside local node" in message


def test_the_list_directory_inside_a_local_node_is_refused(tmp_path, wdir, monkeypatch):
    node = tmp_path / "node"
    (node / "tmp").mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(node / "tmp"))
    assert "inside local node" in error_of(with_nodes(tmp_path, wdir, [str(node)]))


def test_a_daemon_file_beside_a_local_node_is_fine(tmp_path, wdir):
    node = tmp_path / "node"
    c = load(str(with_nodes(tmp_path, wdir, [str(node)], pidfile=str(tmp_path / "node.pid"))))
    assert c.pidfile == str(tmp_path / "node.pid")


@pytest.mark.slow
def test_pidfile_option_inside_a_local_node_is_refused(tmp_path, wdir):
    node = tmp_path / "node"
    node.mkdir()
    conf = with_nodes(tmp_path, wdir, [str(node)])
    code, out = start_briefly(conf, "--pidfile", str(node / "inosync.pid"))
    assert code == 2 and "inside local node" in out, out
    assert not (node / "inosync.pid").exists()


# ---- 6. --check and a start: one verdict


def start_up_problems(tmp_path: Path, wdir: Path) -> dict[str, tuple[dict[str, object], str]]:
    missing = tmp_path / "missing"
    return {
        "logfile": ({"logfile": str(missing / "inosync.log")},
                    f"logfile {missing / 'inosync.log'}: its directory {missing} does not exist"),
        "statusfile": ({"statusfile": str(missing / "status.json")},
                       f"statusfile {missing / 'status.json'}: its directory {missing} does "
                       "not exist"),
        "pidfile": ({"pidfile": str(missing / "inosync.pid")},
                    f"pidfile {missing / 'inosync.pid'}: its directory {missing} does not "
                    "exist"),
        "ssh": ({"rnodes": ["h:/srv"], "ssh": ["/nonexistent/ssh"]},
                "ssh program '/nonexistent/ssh' not found"),
        "parent": ({"rnodes": [str(missing / "node")]},
                   f"its parent directory {missing} does not exist"),
        # A file where state_dir's parent should be: the replay marks
        # cannot be made (the start failed with exit 2 that --check never saw).
        "state_dir": ({"state_dir": str(tmp_path / "inosync.conf" / "state")},
                      f"state_dir {tmp_path / 'inosync.conf' / 'state'} cannot be made"),
    }


@pytest.mark.parametrize("problem", ["logfile", "statusfile", "pidfile", "ssh", "parent",
                                     "state_dir"])
def test_preflight_finds_every_start_up_problem(tmp_path, wdir, problem):
    settings, says = start_up_problems(tmp_path, wdir)[problem]
    nodes = settings.pop("rnodes", [str(tmp_path / "node")])
    c = load(str(with_nodes(tmp_path, wdir, nodes, **settings)))
    assert says in (check.preflight(c) or "")


def test_preflight_is_a_list_of_checks(tmp_path, wdir):
    c = load(str(with_nodes(tmp_path, wdir, [str(tmp_path / "node")])))
    assert check.preflight(c) is None
    assert all(callable(f) for f in check.STARTUP_CHECKS)


@pytest.mark.slow
@pytest.mark.parametrize("problem", ["logfile", "statusfile", "pidfile", "ssh", "parent",
                                     "state_dir"])
def test_check_and_a_start_refuse_the_same(tmp_path, wdir, problem):
    """--check passed a log file in a missing directory, then the start failed;
    the start accepted a missing ssh program and retried forever. Now both
    give the same one line and exit 2."""
    settings, says = start_up_problems(tmp_path, wdir)[problem]
    nodes = settings.pop("rnodes", [str(tmp_path / "node")])
    conf = with_nodes(tmp_path, wdir, nodes, **settings)
    checked = run(conf, "--check")
    assert checked.returncode == 2 and says in checked.stderr, checked
    for args in ([], ["-p"]):
        code, out = start_briefly(conf, *args)
        assert code == 2, (args, out)
        assert len(out.strip().splitlines()) == 1, out
        assert message(out) == message(checked.stderr), (out, checked.stderr)


def message(output: str) -> str:
    """A one-line error without the time stamp the log handler adds."""
    return output.strip().split(" ERROR ", 1)[-1]


@pytest.mark.slow
def test_a_reload_refuses_what_a_start_refuses(tmp_path, wdir, run_inosync):
    """A HUP took a statusfile in a missing directory (then warned after every run)
    and a missing ssh program (then retried forever); now the old config stays."""
    node = tmp_path / "node"
    conf = with_nodes(tmp_path, wdir, [str(node)], edelay=0.2)
    d = run_inosync(conf)
    wait_until(lambda: (node / "index.html").exists(), 20, "the first sync")
    missing = tmp_path / "missing" / "status.json"
    with_nodes(tmp_path, wdir, [str(node)], edelay=0.2, statusfile=str(missing))
    d.signal(signal.SIGHUP)
    d.wait_log(f"reload failed, keeping the old configuration: .*statusfile {missing}: its "
               "directory .* does not exist")
    (wdir / "after.txt").write_text("still syncing\n")
    wait_until(lambda: (node / "after.txt").exists(), 20, "a sync with the old config")
    assert d.stop() == 0
