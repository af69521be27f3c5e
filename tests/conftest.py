"""Fixtures: a source tree with two replica directories, `inosync` processes
stopped at teardown, a session-wide sshd, a host behind a slow link. The helpers
they use are in helpers.py."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import Inosync, Sshd
from hosts import TestHost, can_make_namespaces


def pytest_configure(config: pytest.Config) -> None:
    """tmp_path away from /tmp: inosync refuses a file it opens by name below a
    directory others may write (strict modes), and /tmp is one (sticky 1777).
    The tests' files go to a directory of the user running them instead (pytest
    still keeps the last three runs there); --basetemp DIR chooses another."""
    if config.option.basetemp or "PYTEST_DEBUG_TEMPROOT" in os.environ:
        return
    from inosync.paths import strict_modes

    root = Path.home() / ".cache" / "inosync-tests"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    why = strict_modes(str(root.resolve()), "keeps tests in", directory=True)
    if why:
        raise pytest.UsageError(f"no private directory for the tests' files: {why}; "
                                "or give one with --basetemp DIR")
    os.environ["PYTEST_DEBUG_TEMPROOT"] = str(root)


@pytest.fixture
def run_inosync(tmp_path: Path) -> Iterator[Callable[..., Inosync]]:
    started: list[Inosync] = []

    def start(config: Path | None, *args: str, env: dict[str, str] | None = None) -> Inosync:
        d = Inosync(config, args, tmp_path, env)
        started.append(d)
        return d

    yield start
    for d in started:
        d.kill()


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, object]:
    """A source tree with some content and two empty local replica directories."""
    src = tmp_path / "src"
    (src / "docs" / "old").mkdir(parents=True)
    (src / "index.html").write_text("<h1>hello</h1>\n")
    (src / "docs" / "a.txt").write_text("a\n")
    (src / "docs" / "old" / "b.txt").write_text("b\n")
    nodes = [tmp_path / "node1", tmp_path / "node2"]
    for n in nodes:
        n.mkdir()
    return {"src": src, "nodes": nodes, "dir": tmp_path}


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    if not (shutil.which("sshd") or os.path.exists("/usr/sbin/sshd")):
        pytest.skip("sshd is not installed (apt-get install openssh-server)")
    server = Sshd(tmp_path_factory.mktemp("sshd")).start()
    yield server
    server.stop()


@pytest.fixture
def own_sshd(tmp_path: Path) -> Iterator[Callable[..., Sshd]]:
    """An sshd whose sessions get these environment variables (via authorized_keys)."""
    started: list[Sshd] = []

    def start(**env: str) -> Sshd:
        server = Sshd(tmp_path / f"sshd{len(started)}")
        server.config.write_text(server.config.read_text() + "PermitUserEnvironment yes\n")
        keys = server.dir / "authorized_keys"
        options = ",".join(f'environment="{k}={v}"' for k, v in env.items())
        keys.write_text(f"{options} {keys.read_text()}")
        started.append(server.start())
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def slow_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestHost]:
    """A host behind a 20 Mbit/s link with 50 ms of round trip (tbf + delayproxy.py)."""
    reason = can_make_namespaces()
    if reason:
        pytest.skip(reason)
    host = TestHost(7, tmp_path_factory.mktemp("slowhost"))
    try:
        host.create()
        host.shape(20)
        yield host
    finally:
        host.destroy()


@pytest.fixture(scope="session", autouse=True)
def replay_lock_files() -> Iterator[None]:
    """The replay's lock directory (/run/inosync.replay), and the lock files that
    tests left in it: a replay killed on purpose does not remove its own."""
    locks = Path("/run/inosync.replay")
    existed = locks.exists()
    before = set(locks.glob("*.lock"))
    yield
    for path in set(locks.glob("*.lock")) - before:
        path.unlink(missing_ok=True)
    if not existed and locks.is_dir() and not any(locks.iterdir()):
        locks.rmdir()


@pytest.fixture(scope="session", autouse=True)
def tree_lock_files() -> Iterator[None]:
    """The tree locks' directory (/run/inosync.tree when root runs the tests):
    the lock files the tests' daemons made there, and the directory if they made it."""
    from inosync.treelock import lock_dir

    locks = Path(lock_dir())
    existed = locks.exists()
    before = set(locks.glob("tree-*.lock"))
    yield
    for path in set(locks.glob("tree-*.lock")) - before:
        unlink_unheld(path)
    if not existed and locks.is_dir() and not any(locks.iterdir()):
        locks.rmdir()


def unlink_unheld(lock: Path) -> None:
    """Remove a tree lock file unless a live inosync holds it: another test session
    on this machine may run a daemon of its own, and a second instance of that
    tree would take a new file of the same name and run beside it."""
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.unlink(missing_ok=True)  # while we hold it: no one took it meanwhile
    except OSError:
        pass  # held: its daemon is running
    finally:
        os.close(fd)


SYSTEM_STATE_DIR = Path("/var/lib/inosync")  # Config.state_dir's default


@pytest.fixture(autouse=True)
def no_state_written_into_the_system(tmp_path_factory: pytest.TempPathFactory,
                                     ) -> Iterator[None]:
    """A test's daemon keeps its checkpoints, kept records and marks under the
    test's own directories, never in the machine's /var/lib/inosync: left there,
    they pile up, and a later daemon of this machine could take one for its own.
    Files that name this session's (or xdist worker's) temporary directory are
    this test's: removed, and the test fails."""
    def ours() -> set[Path]:
        base = str(tmp_path_factory.getbasetemp()).encode()
        try:
            names = list(SYSTEM_STATE_DIR.iterdir())
        except OSError:
            return set()
        found = set()
        for path in names:
            try:
                if base in path.read_bytes():
                    found.add(path)
            except OSError:
                pass
        return found

    before = ours()
    yield
    leaked = ours() - before
    for path in leaked:
        path.unlink(missing_ok=True)
    assert not leaked, (f"the test wrote {sorted(p.name for p in leaked)} into "
                        f"{SYSTEM_STATE_DIR}: give its daemon a state_dir under tmp_path")


@pytest.fixture(autouse=True)
def inosync_logger_left_as_found() -> Iterator[None]:
    """A test that sets up inosync's logging in this process (cli.Logs turns
    propagation off and adds a handler) puts it back. Left changed, the records of
    every later test stop reaching caplog under pytest 8 (pytest 9 also hooks
    loggers that do not propagate), so those tests fail or pass by the order they
    run in and by the pytest version."""
    log = logging.getLogger("inosync")
    before = (log.level, log.propagate, list(log.handlers))
    yield
    after = (log.level, log.propagate, list(log.handlers))
    assert after == before, f"the test left the 'inosync' logger changed: {before} -> {after}"
