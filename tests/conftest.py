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
from alone import RunLock
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

    def start(config: Path | None, *args: str, env: dict[str, str] | None = None,
              wrap: tuple[str, ...] = ()) -> Inosync:
        d = Inosync(config, args, tmp_path, env, wrap)
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


def in_worker(config: pytest.Config) -> bool:
    """A pytest-xdist worker: the controller runs the session-wide clean-up once,
    after every worker is done (a worker that ends first would take the lock
    files of another's running daemons for left-overs)."""
    return hasattr(config, "workerinput")


def lock_dirs() -> dict[Path, str]:
    """The replay's lock directory, and the tree locks' (/run/inosync.tree when
    root runs the tests), with the names of their lock files."""
    from inosync.treelock import lock_dir

    return {Path("/run/inosync.replay"): "*.lock", Path(lock_dir()): "tree-*.lock"}


LOCKS_BEFORE: dict[Path, set[Path] | None] = {}  # None: the directory was not there


def pytest_sessionstart(session: pytest.Session) -> None:
    if in_worker(session.config):
        return
    for where, pattern in lock_dirs().items():
        LOCKS_BEFORE[where] = set(where.glob(pattern)) if where.exists() else None


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The lock files the tests left, and the directories if the tests made them:
    a replay killed on purpose does not remove its own lock file; the tree
    locks' are removed unless held (another test session on this machine may
    run a daemon of its own)."""
    if in_worker(session.config):
        return
    for where, pattern in lock_dirs().items():
        if where not in LOCKS_BEFORE:
            continue
        before = LOCKS_BEFORE[where]
        for path in set(where.glob(pattern)) - (before or set()):
            if pattern == "*.lock":
                path.unlink(missing_ok=True)
            else:
                unlink_unheld(path)
        if before is None and where.is_dir() and not any(where.iterdir()):
            where.rmdir()


def unlink_unheld(lock: Path) -> None:
    """Remove a tree lock file unless a live inosync holds it: a second instance
    of that tree would take a new file of the same name and run beside it."""
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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """A test marked `alone` runs while no other worker runs one; every other
    test runs beside the others (see alone.py). The lock covers the whole
    protocol, the module fixtures a test sets up or tears down included (a
    network namespace's sshd, a package apt-get installs)."""
    lock = run_lock(item.config)
    if lock is None:  # no other worker: nothing to wait for
        yield
        return
    with lock.exclusive() if item.get_closest_marker("alone") else lock.shared():
        yield


RUN_LOCKS: dict[int, RunLock] = {}


def run_lock(config: pytest.Config) -> RunLock | None:
    """This worker's handle on the run's lock, in the base directory every worker's
    own lies in (pytest-xdist gives each its basetemp below the run's)."""
    if not in_worker(config):
        return None
    if id(config) not in RUN_LOCKS:
        RUN_LOCKS[id(config)] = RunLock(Path(config.option.basetemp).parent)
    return RUN_LOCKS[id(config)]


# The files that take longest (measured with --durations=0), longest first: under
# pytest-xdist's --dist loadfile each goes whole to one worker, in collection
# order, so these go out first and the many short files fill in at the end
# instead of one long file running alone there. A name missing here only
# costs time.
LONGEST_FIRST = [
    "test_safety.py", "test_packaging.py", "test_checkpoint_restart.py", "test_faults.py",
    "test_random.py", "test_review18.py", "test_bench_smoke.py", "test_deb.py",
    "test_replay.py", "test_treelock.py", "test_deletepolicy_e2e.py", "test_oneoff_e2e.py",
    "test_replay_hostile2.py", "test_kept.py", "test_daemonize.py", "test_replication.py",
    "test_boot.py", "test_excludes.py", "test_replay_safety.py", "test_sshcontrol.py",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist only: the longest files first, then those with slow tests,
    then the rest (a stable sort: within a file, tests keep their order)."""
    if not in_worker(config):
        return
    slow_files = {item.path.name for item in items if item.get_closest_marker("slow")}

    def rank(item: pytest.Item) -> tuple[int, int]:
        name = item.path.name
        first = LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
        return first, 0 if name in slow_files else 1

    items.sort(key=rank)
