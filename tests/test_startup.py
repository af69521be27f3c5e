"""Start-up before the loop runs: watching with progress, and the statusfile when it fails."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from inosync import cli
from inosync.config import Config
from inosync.excludes import Excludes
from inosync.watch import Watcher

EMASK = ("IN_CLOSE_WRITE", "IN_CREATE", "IN_DELETE", "IN_MOVED_FROM", "IN_MOVED_TO")


def config(tmp_path: Path, **changes: object) -> Config:
    base = Config(path=str(tmp_path / "c.conf"), wpath=str(tmp_path / "src"),
                  configured_wpath=str(tmp_path / "src"), rnodes=(str(tmp_path / "n"),),
                  statusfile=str(tmp_path / "status.json"), progress_interval=1.0)
    return dataclasses.replace(base, **changes)


def test_progress_is_reported_while_watching_only(tmp_path):
    for i in range(600):
        (tmp_path / "src" / f"d{i}").mkdir(parents=True)
    c = config(tmp_path)
    shown: list[str] = []
    w = Watcher(c.wpath, EMASK, Excludes(()))
    try:
        w.progress_every = 0.0
        cli.watch(w, c, shown.append)
        assert w.on_progress is None  # a rescan later is not start-up: no start-up status
        assert shown[-1] == ""  # the live line is cleared at the end
    finally:
        w.close()


def test_a_failed_start_up_leaves_a_stopped_status(tmp_path):
    c = config(tmp_path)
    assert cli.start_failed(c, "cannot watch it") == cli.EXIT_RUNTIME
    data = json.loads(Path(c.statusfile or "").read_text())
    assert (data["state"], data["exit_status"], data["nodes"]) == ("stopped", 1, [])
