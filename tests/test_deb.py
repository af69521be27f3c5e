"""The Debian package (debian/): built from a copy of the tree with
dpkg-buildpackage, without errors under lintian, holding the command, man page,
units, SysV script, logrotate snippet and example but no /etc/inosync.conf;
then installed on this machine with apt-get, run, and purged again, along with
whatever dependencies the install brought in.

Needs root and the build tools (tests/run installs them). The build uses the
system's python3 (/usr/bin), never a venv's or pyenv's that may come first in
PATH: the package is for Debian's Python and its python3-pyinotify.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from inosync import __version__

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
EXAMPLE = "/usr/share/doc/inosync/examples/inosync.conf.example"
CONFIG = Path("/etc/inosync.conf")
STATE_DIR = Path("/var/lib/inosync")  # what purge removes
LOGFILE = Path("/var/log/inosync.log")  # the shipped logrotate entry's
OLD_LOG = Path("/var/log/inosync.log.1")
MARKER = "# an admin's configuration (written by tests/test_deb.py)\n"

# What a sysadmin needs from the package, as dpkg-deb -c names it. Units are
# in /lib/systemd/system on Debian 12 and /usr/lib/systemd/system from 13 on.
EXPECTED = [
    "/usr/bin/inosync",
    "/usr/lib/python3/dist-packages/inosync/cli.py",
    "/usr/share/man/man8/inosync.8.gz",
    "/systemd/system/inosync.service",
    "/systemd/system/inosync@.service",
    "/etc/init.d/inosync",
    "/etc/logrotate.d/inosync",
    EXAMPLE,
    "/usr/share/doc/inosync/copyright",
]
# The only conffiles: neither ever holds the admin's configuration.
CONFFILES = {"/etc/init.d/inosync", "/etc/logrotate.d/inosync"}

needs_build_tools = pytest.mark.skipif(
    shutil.which("dpkg-buildpackage", path=SYSTEM_PATH) is None,
    reason="dpkg-buildpackage is not installed (tests/run installs it with debhelper, "
           "dh-python and lintian)")


def changelog_version() -> str:
    first = (ROOT / "debian" / "changelog").read_text().splitlines()[0]
    m = re.match(r"inosync \(([^)]+)\) ", first)
    assert m, f"debian/changelog: no version in {first!r}"
    return m.group(1)


def test_changelog_version_is_the_package_version() -> None:
    upstream, _, revision = changelog_version().rpartition("-")
    assert upstream == __version__, (f"debian/changelog says {upstream}, inosync/__init__.py "
                                     f"{__version__}: add a changelog entry "
                                     f"(dch -v {__version__}-1)")
    assert revision.isdigit()


def system_env() -> dict[str, str]:
    """The environment of an admin's root shell: no venv, no PYTHONPATH."""
    return {"PATH": SYSTEM_PATH, "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8",
            "DEBIAN_FRONTEND": "noninteractive"}


def run(argv: list[str], cwd: Path = Path("/"),
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    # cwd "/": python3 -c must not import this checkout's inosync from "."
    return subprocess.run(argv, cwd=cwd, env=system_env(), capture_output=True, text=True,
                          timeout=timeout)


def copy_source(into: Path) -> Path:
    """The files of this tree a release holds: git's list (tracked and new, not
    ignored) in a checkout, else everything but caches and the venv."""
    dest = into / "inosync"
    listed = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True)
    if listed.returncode != 0:
        shutil.copytree(ROOT, dest, symlinks=True, ignore=shutil.ignore_patterns(
            ".git", ".venv", "__pycache__", "*.egg-info", ".*_cache", ".hypothesis",
            "build", "dist", ".pybuild"))
        return dest
    for name in filter(None, listed.stdout.split("\0")):
        src = ROOT / name
        if not src.is_file():  # listed but deleted in the work tree
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / name, follow_symlinks=False)
    return dest


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deb")
    src = copy_source(out)
    build = run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, timeout=600)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    (package,) = out.glob("inosync_*_all.deb")
    assert package.name == f"inosync_{changelog_version()}_all.deb"
    return package


def dpkg_deb(*args: str) -> str:
    result = run(["dpkg-deb", *args])
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.slow
@needs_build_tools
def test_lintian_finds_no_errors(deb: Path) -> None:
    result = run(["lintian", "--no-tag-display-limit", str(deb)])
    tags = [line for line in result.stdout.splitlines() if re.match(r"[EWIPNX]: ", line)]
    errors = [line for line in tags if line.startswith("E: ")]
    assert errors == [], "\n".join(tags)
    # the init script hands over to systemd where it runs (one daemon, reached by upgrades)
    assert not [t for t in tags if "init.d-script-does-not-source-init-functions" in t], tags
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
@needs_build_tools
def test_package_holds_the_files_and_no_config(deb: Path) -> None:
    paths = [line.split()[-1].removeprefix(".") for line in dpkg_deb("-c", str(deb)).splitlines()]
    missing = [want for want in EXPECTED if not any(p.endswith(want) for p in paths)]
    assert missing == []
    assert not any(p.startswith("/etc/inosync") for p in paths)  # no config, no /etc/inosync/
    conffiles = set(dpkg_deb("-I", str(deb), "conffiles").split())
    assert conffiles == CONFFILES
    fields = {f: dpkg_deb("-f", str(deb), f).strip() for f in ("Depends", "Recommends")}
    depends = {d.split()[0] for d in fields["Depends"].split(", ")}
    assert {"python3-pyinotify", "python3-daemon", "rsync"} <= depends
    assert fields["Recommends"] == "openssh-client"  # ssh only for host:path nodes


def installed_packages() -> set[str]:
    out = run(["dpkg-query", "-W", "-f", "${Package}\t${db:Status-Status}\n"]).stdout
    return {name for name, status in (line.split("\t") for line in out.splitlines())
            if status == "installed"}


def apt_get(*args: str) -> subprocess.CompletedProcess[str]:
    # Other processes may hold the dpkg lock for a while: wait, do not fail.
    return run(["apt-get", "-y", "-o", "DPkg::Lock::Timeout=300", *args], timeout=900)


@pytest.fixture(scope="module")
def installed(deb: Path) -> Iterator[set[str]]:
    """The package installed with apt-get, as a sysadmin would; purged afterwards
    with the dependencies its install brought in. An /etc/inosync.conf written
    here (or the admin's own, if there is one) must come through untouched.
    Its tests are marked `alone`: the install and the purge (in the first one's
    setup and the last one's teardown) change the machine every test runs on."""
    if os.geteuid() != 0:
        pytest.skip("installing a package needs root")
    if "inosync" in installed_packages():
        pytest.fail("the inosync package is already installed on this machine; this test "
                    "installs and purges it: remove it first (apt-get purge inosync)")
    # Ours if absent, or left by a run of this test that was killed.
    made_config = not CONFIG.exists() or CONFIG.read_text(errors="replace") == MARKER
    if made_config:
        CONFIG.write_text(MARKER)
    config_before = CONFIG.read_bytes()
    # What a root daemon of the package leaves, for purge to remove (but not
    # an inosync's state or log that were on this machine before).
    leftovers = [p for p in (STATE_DIR, LOGFILE, OLD_LOG) if not p.exists()]
    before = installed_packages()
    try:
        result = apt_get("install", str(deb))
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
        added = installed_packages() - before
        if STATE_DIR in leftovers:
            STATE_DIR.mkdir(mode=0o700)
            (STATE_DIR / "node-0123.checkpoint").write_text("{}")
        if LOGFILE in leftovers:
            LOGFILE.write_text("a log line\n")
        if OLD_LOG in leftovers:
            OLD_LOG.write_text("an older one\n")
        yield added
    finally:
        auto = set(run(["apt-mark", "showauto"]).stdout.split())
        brought = sorted((installed_packages() - before) & auto)  # not another's manual install
        purge = apt_get("purge", "inosync", *brought)
        try:
            assert purge.returncode == 0, purge.stdout[-4000:] + purge.stderr[-4000:]
            assert "inosync" not in installed_packages()
            assert CONFIG.read_bytes() == config_before, "install or purge changed " \
                f"{CONFIG}"
            left = [str(p) for p in leftovers if p.exists()]
            for path in leftovers:  # ours, so that a failure leaves nothing either
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            assert left == [], "purge left the daemon's state or log"
        finally:
            if made_config:
                CONFIG.unlink()


@pytest.mark.slow
@pytest.mark.alone
@needs_build_tools
def test_installed_package_runs_with_debians_python_modules(installed: set[str]) -> None:
    assert "inosync" in installed
    version = run(["/usr/bin/inosync", "--version"])
    assert (version.returncode, version.stdout) == (0, f"inosync {__version__}\n")
    where = run(["/usr/bin/python3", "-c",
                 "import inosync, pyinotify, daemon; "
                 "print(inosync.__file__, pyinotify.__version__, daemon.__file__)"])
    assert where.returncode == 0, where.stderr
    assert where.stdout.split() == [
        "/usr/lib/python3/dist-packages/inosync/__init__.py", "0.9.6",
        "/usr/lib/python3/dist-packages/daemon/__init__.py"]

    # The example parses and passes every setting check (strict modes too: root's,
    # 0644, under /usr/share/doc); its wpath /var/www is a placeholder that a
    # fresh machine lacks: exit 75, "not there yet", and nothing is synced.
    check = run(["inosync", "-c", EXAMPLE, "--check"])
    if not os.path.lexists("/var/www"):
        assert (check.returncode, check.stdout, check.stderr) == (
            75, "", f"inosync: {EXAMPLE}:5: wpath /var/www does not exist (not mounted yet, "
            "or a typo?); exit 75: a later start may find it\n")
    else:  # a web server's machine: the example is still no configuration error
        assert check.returncode in (0, 75) and "Traceback" not in check.stderr, check.stderr

    # Nothing was started by the install, though a config is in place.
    status = run(["/etc/init.d/inosync", "status"])
    assert (status.returncode, status.stdout) == (3, "inosync is not running\n")


@pytest.mark.slow
@pytest.mark.alone
@needs_build_tools
def test_installed_units_and_script_run_the_packaged_command(installed: set[str]) -> None:
    units = [Path(d) / name for d in ("/lib/systemd/system", "/usr/lib/systemd/system")
             for name in ("inosync.service", "inosync@.service")]
    texts = {u.name: u.read_text() for u in units if u.is_file()}
    assert sorted(texts) == ["inosync.service", "inosync@.service"]
    assert "ExecStart=/usr/bin/inosync -c /etc/inosync.conf\n" in texts["inosync.service"]
    assert "ExecStart=/usr/bin/inosync -c /etc/inosync/%i.conf\n" in texts["inosync@.service"]
    assert all("\nDocumentation=man:inosync(8)\n" in t for t in texts.values())
    assert Path("/usr/share/man/man8/inosync.8.gz").is_file()  # what they name
    init = Path("/etc/init.d/inosync").read_text()
    assert "DAEMON=${DAEMON:-/usr/bin/inosync}\n" in init
    assert not [n for n, t in {**texts, "init": init}.items() if "/usr/local/bin/inosync" in t]
    # systemd's own check of the installed units (ExecStart, the man page in
    # Documentation=...): whatever it says about them is an error.
    if shutil.which("systemd-analyze", path=SYSTEM_PATH):
        unit_dir = next(u.parent for u in units if u.is_file())
        for instance in ("inosync.service", "inosync@www.service"):  # a template via one
            verify = run(["systemd-analyze", "verify", str(unit_dir / instance)])
            about = [line for line in (verify.stdout + verify.stderr).splitlines()
                     if "inosync" in line]
            assert about == [], "\n".join(about)
    # Installed, not enabled: no runlevel starts it.
    assert not list(Path("/etc").glob("rc[2345].d/S*inosync"))
    assert not Path("/etc/systemd/system/multi-user.target.wants/inosync.service").exists()
