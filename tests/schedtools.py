"""Builders for the tests of the pure scheduler (no processes): a Config of
two ssh nodes, and the runs a list of actions starts. Tests import them
(``from schedtools import ...``)."""

from __future__ import annotations

import dataclasses

from inosync.config import Config
from inosync.scheduler import StartRun

A, B = "a.example.com:/www/", "b.example.com:/www/"


def config(**changes: object) -> Config:
    """wpath /srv/www synced to A and B (unless rnodes says otherwise), edelay 2 s,
    retries from 1 s up to 8 s; changes replace any field."""
    base = Config(path="/etc/inosync.conf", wpath="/srv/www", configured_wpath="/srv/www",
                  rnodes=(A, B), edelay=2.0, retry_min=1.0, retry_max=8.0)
    return dataclasses.replace(base, **changes)


def starts(actions: list) -> dict[str, StartRun]:
    """The runs started by actions, by node."""
    return {a.dest: a for a in actions if isinstance(a, StartRun)}
