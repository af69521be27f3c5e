"""What a reload (SIGHUP) must send: which nodes get a full sync, and why.

A pure function of the old and the new Config. A node gets a full sync when
the new settings may change what it should hold: it is new; the tree is
another directory; a setting of the checkpoint's fingerprint changed
(excludes, rsync_args, delete: checkpoint.fingerprint); the rsync program
changed; for an ssh node, the ssh command changed (the same spelling may now
reach another host: the ssh command is part of the node's identity). Under
delete = 'startup' every reload makes the deleting full sync: that is what
the policy promises a reload does. Nothing else sends anything: edelay,
timeouts, rspeed, retry and the like change how, not what; the other nodes
keep what is pending and in flight.
"""

from __future__ import annotations

from . import checkpoint
from .config import Config
from .rsync import Kind, node_kind


def full_syncs(old: Config, new: Config, same_tree: bool = True) -> dict[str, str]:
    """Each node of new that needs a full sync, with why, in new's order.
    same_tree: wpath is still the same directory (device and inode)."""
    every = for_every_node(old, new, same_tree)
    plan: dict[str, str] = {}
    for dest in new.rnodes:
        if dest not in old.rnodes:
            plan[dest] = "new node"
            continue
        why = list(every)
        if node_kind(dest) is Kind.SSH and old.ssh != new.ssh:
            why.append("ssh changed (the same name may now reach another host)")
        if why:
            plan[dest] = "; ".join(why)
    return plan


def for_every_node(old: Config, new: Config, same_tree: bool = True) -> list[str]:
    """The reasons that apply to every node that was there before."""
    if not same_tree or old.wpath != new.wpath:
        return ["wpath is another directory"]
    reasons = []
    before, after = _fingerprint(old), _fingerprint(new)
    changed = [k for k in {**before, **after} if before.get(k) != after.get(k)]
    if changed:
        reasons.append(f"{', '.join(changed)} changed")
    if old.rsync != new.rsync:
        reasons.append("rsync changed (another program writes the nodes)")
    missed = sorted(checkpoint.NEEDED_EVENTS - set(old.emask))
    if old.emask != new.emask and missed:
        reasons.append(f"emask changed; the old one left out {', '.join(missed)}: the nodes "
                       "may lack changes it did not report")
    if new.delete == "startup":
        reasons.append("delete = 'startup': a reload's full sync makes the deletions")
    return reasons


def _fingerprint(c: Config) -> dict[str, str]:
    # The settings' part only: the kept mount points and the mounts inside wpath
    # are the tree's, the same before and after a reload on the same tree.
    return checkpoint.fingerprint(c.excludes.patterns, c.rsync_args, (), [], c.delete)
