"""The delete setting: when a run may remove from a node what wpath lacks.

As lsyncd's ``delete``: True (the default) keeps every node equal to wpath;
"startup" deletes only in the whole-tree sync at start-up and after a reload;
"running" deletes exactly the paths seen deleted while inosync runs, never
with a whole-tree --delete; False deletes nothing, ever.

Every way a run can remove something on a node is decided here, per phase:
rsync's --delete (whole tree, and inside each listed directory),
--delete-missing-args (a listed path that is gone), --force (a non-empty
directory the source replaced by a file, or a listed directory that is gone)
and the move replay (a rename removes the old name). A shortcut must never
leave a node as plain rsync with the same policy would not.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

Policy = Union[bool, str]
POLICIES: tuple[Policy, ...] = (True, "startup", "running", False)

# rsync_args options that delete on the node by themselves: each --delete-WHEN
# implies --delete; --force deletes a non-empty directory replaced by a file.
_DELETING = ("--delete", "--del", "--delete-during", "--delete-before", "--delete-delay",
             "--delete-after")


class Phase(enum.Enum):
    START = "start"  # the whole-tree sync at start-up or after a reload
    FULL = "full"  # any other whole-tree sync: resync_interval, lost events, a swap
    LIST = "list"  # the changed paths only


@dataclass(frozen=True)
class Deletes:
    """The deleting options of one run."""

    delete: bool  # --delete: the whole tree, or inside each listed directory
    missing: bool  # lists: --delete-missing-args (else --ignore-missing-args)
    force: bool  # --force: a directory goes with all it holds (gone, or now a file)


# missing matters in lists only; a whole-tree run with delete set deletes all
# a list would, so it says True there too.
_ALL = Deletes(delete=True, missing=True, force=False)
_NONE = Deletes(delete=False, missing=False, force=False)
_TABLE: dict[tuple[Policy, Phase], Deletes] = {
    (True, Phase.START): _ALL,
    (True, Phase.FULL): _ALL,
    (True, Phase.LIST): _ALL,
    ("startup", Phase.START): _ALL,
    # Exactly the listed paths that are gone, each with all it holds
    # (--delete-missing-args alone keeps a directory that is not empty).
    ("running", Phase.LIST): Deletes(False, True, True),
}


def deletes(policy: Policy, phase: Phase) -> Deletes:
    """What a run of this phase may delete under this policy."""
    return _TABLE.get((policy, phase), _NONE)


def phase_of(full: bool, start: bool) -> Phase:
    """The phase of a run: whole tree (of a start or reload, or not) or a list."""
    if not full:
        return Phase.LIST
    return Phase.START if start else Phase.FULL


def shown(policy: Policy) -> str:
    """The setting as written in the config: "delete = 'running'"."""
    return f"delete = {policy!r}"


def check(value: object) -> Policy:
    """The config's checker: the value, or ValueError saying what is allowed."""
    if any(value is p or (isinstance(value, str) and value == p) for p in POLICIES):
        return value  # type: ignore[return-value]
    raise ValueError(f"must be True, 'startup', 'running' or False, got {value!r}")


def replay_off(policy: Policy) -> str | None:
    """Why renames are not replayed under this policy, or None.

    A replayed rename removes the old name on the node and carries along what
    only the node holds below it; under True the list run's --delete then
    makes the node what plain rsync would. Under "startup" and False no
    deletion runs while inosync runs; under "running" the old name's files
    that only the node had would live on under the new name, where plain
    rsync deletes them with the old one.
    """
    if policy is True:
        return None
    return f"{shown(policy)} (a replayed rename would remove or carry files that plain " \
           "rsync with this policy keeps or deletes)"


def keeps_node_only(policy: Policy) -> bool:
    """Whether files only on a node are drift the policy allows (--verify)."""
    return policy is not True


def refused_args(policy: Policy, names: Sequence[str]) -> str | None:
    """The first rsync_args option name (as rsync.options() names it) that would
    delete against this policy, or None."""
    if policy is True:
        return None  # --force too: --delete already deletes such a directory
    return next((n for n in names if n in (*_DELETING, "--force")), None)
