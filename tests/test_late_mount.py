"""Issue 17.1: a wpath that mounts late is a temporary failure (exit 75, EX_TEMPFAIL),
which the units retry, not a configuration error (exit 2, never restarted)."""

from __future__ import annotations

import configparser
import subprocess
from pathlib import Path

import pytest
from helpers import inosync_argv, write_config

ROOT = Path(__file__).resolve().parent.parent
EX_TEMPFAIL = 75


def run(conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*inosync_argv(), "-c", str(conf), *args], capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("args", [[], ["--check"], ["-p"], ["-d", "--pidfile", "PID"]])
@pytest.mark.parametrize("state", ["missing", "empty"])
def test_a_wpath_not_there_yet_is_a_temporary_failure(tmp_path, args, state):
    wpath = tmp_path / "www"
    if state == "empty":
        wpath.mkdir()
    conf = write_config(tmp_path / "c.conf", wpath=str(wpath), rnodes=[str(tmp_path / "n")])
    done = run(conf, *[a.replace("PID", str(tmp_path / "pid")) for a in args])
    assert done.returncode == EX_TEMPFAIL, done
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "n").exists()


def test_a_configuration_error_stays_exit_2(tmp_path):
    wpath = tmp_path / "www"
    wpath.mkdir()
    (wpath / "index.html").write_text("x\n")
    conf = write_config(tmp_path / "c.conf", wpath=str(wpath), rnodes=[str(tmp_path / "n")],
                        edelay=-1)
    assert run(conf).returncode == 2


@pytest.mark.parametrize("unit", ["inosync.service", "inosync@.service"])
def test_the_units_retry_a_late_wpath_after_remote_filesystems(unit):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read(ROOT / "contrib" / unit)
    assert "remote-fs.target" in parser["Unit"]["After"].split()
    service = parser["Service"]
    assert service["Restart"] == "on-failure"
    assert str(EX_TEMPFAIL) not in service["RestartPreventExitStatus"].split()
    assert float(service["RestartSec"]) >= 10


@pytest.mark.parametrize("mode", ["check", "verify", "nagios"])
def test_an_unmounted_fstab_wpath_is_temporary_for_check_and_verify(tmp_path, monkeypatch, mode,
                                                                     capsys):
    """--verify without --nagios used to say 2 here, where --check and a start say 75."""
    from inosync import cli, config, keptstore

    wpath = tmp_path / "www"
    wpath.mkdir()
    (wpath / "stale.html").write_text("what the mount point holds under the disk\n")
    fstab = tmp_path / "fstab"
    fstab.write_text(f"/dev/sdz1 {wpath} ext4 nofail 0 2\n")
    monkeypatch.setattr(keptstore, "FSTAB", str(fstab))
    conf = write_config(tmp_path / "c.conf", wpath=str(wpath), rnodes=[str(tmp_path / "n")])
    loaded = config.load(str(conf))
    status = cli.check(loaded) if mode == "check" else cli.verify(loaded, False, mode == "nagios")
    assert status == (3 if mode == "nagios" else EX_TEMPFAIL)
    out = capsys.readouterr()
    assert "fstab" in (out.out if mode == "nagios" else out.err)
    assert not (tmp_path / "n").exists()
