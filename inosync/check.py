"""``inosync --check``: what a start would do with this configuration.

``summary`` is a pure function of a loaded Config; ``preflight`` runs the
checks a start makes after ``config.load`` (STARTUP_CHECKS: reading wpath,
finding ssh, the directories of the daemon's files...). Neither watches
anything, takes the pidfile or touches a node, so a check may run beside the
daemon it is about.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from collections.abc import Callable

from . import deletepolicy, keptstore, paths, replay
from .confdiff import show
from .config import Config, oneoff_state_dir
from .keptstore import KeptError, KeptFile
from .mounts import read_mounts
from .rsync import Kind, full_argv, node_kind, ssh_host, ssh_parts

SHOWN_EXCLUDES = 5  # a long exclude list is summed up by its first few

_KIND_NAMES = {Kind.LOCAL: "local", Kind.SSH: "ssh", Kind.DAEMON: "rsync daemon"}
# Shown on lines of their own, or not settings at all.
_NOT_LISTED = {"path", "wpath", "configured_wpath", "base_dir", "rnodes", "rexcludes",
               "excludes", "edelay", "setting_lines", "arguments"}

# What a start-up check finds: (the setting to blame, why), as config.py's
# layout_problem says it; the error starts with that setting's file and line.
Problem = tuple[str, str]


def preflight(config: Config) -> str | None:
    """Why a start would fail after the configuration loaded, or None: the first of
    STARTUP_CHECKS that fails. --check, --verify, a start (in every mode) and a
    reload all ask this one function, so they give one verdict."""
    found = first_failure(config)
    return found[0] if found else None


def first_failure(config: Config) -> tuple[str, bool] | None:
    """The first failing start-up check's error, and whether a later try may pass
    (wpath's disk not mounted yet: exit 75, which the units retry, not 2). One
    pass: asking twice let a disk that mounted in between make the error of an
    unmounted disk exit 2, which the units never restart."""
    for startup_check in STARTUP_CHECKS:
        problem = startup_check(config)
        if problem:
            setting, why = problem
            return f"{config.where(setting)}: {why}", startup_check in TEMPORARY
    return None


def _wpath_readable(config: Config) -> Problem | None:
    try:
        with os.scandir(config.wpath) as entries:
            next(entries, None)
    except OSError as e:
        return "wpath", f"wpath {config.wpath} cannot be read: {e.strerror}"
    return None


def _ssh_program(config: Config) -> Problem | None:
    if any(node_kind(n) is Kind.SSH for n in config.rnodes):
        program = config.ssh[0]
        if paths.program(program) is None:
            return "ssh", (f"ssh program {program!r} not found or not executable "
                           "(install openssh-client or fix the ssh setting)")
    return None


def _local_node_parents(config: Config) -> Problem | None:
    for node in config.rnodes:
        parent = os.path.dirname(node.rstrip("/"))
        if node_kind(node) is Kind.LOCAL and not os.path.isdir(parent):
            return "rnodes", (f"node {node}: its parent directory {parent} does not "
                              "exist (rsync makes only the last directory); create it")
    return None


def _daemon_file_folders(config: Config) -> Problem | None:
    for name in ("logfile", "pidfile", "statusfile", "metrics_file"):
        why = _daemon_file_folder(name, getattr(config, name))
        if why:
            return name, why
    return None


def _daemon_file_folder(name: str, path: str | None) -> str | None:
    """The log, pid and status files are made (or replaced) in their directory:
    it must be there, and writable. Nothing is opened or made here."""
    if not path:
        return None
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        what = "is not a directory" if os.path.lexists(folder) else "does not exist"
        return (f"{name} {path}: its directory {folder} {what}; create it "
                f"(mkdir -p {folder}) or set {name} elsewhere")
    if os.path.isdir(path):
        return f"{name} {path} is a directory; name a file"
    too_long = _name_too_long(folder, os.path.basename(path),
                              _TEMP_NAME_ROOM if name in REPLACED else 0)
    if too_long:
        return f"{name} {path}: {too_long}; choose a shorter name"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{name} {path}: its directory {folder} is not writable by uid {os.getuid()}"
    return None


# The statusfile and metrics_file are replaced through ".NAME.XXXXXXXX.tmp"
# beside them (mkstemp).
_TEMP_NAME_ROOM = len("..XXXXXXXX.tmp")
REPLACED = ("statusfile", "metrics_file")


def _name_too_long(folder: str, name: str, room: int) -> str | None:
    """Why the file name cannot be made in folder (with room more bytes), or None."""
    limit = os.pathconf(folder, "PC_NAME_MAX") - room
    size = len(os.fsencode(name))
    if size > limit:
        return f"its name is too long for the filesystem ({size} bytes, at most {limit})"
    full = len(os.fsencode(os.path.join(folder, name))) + room
    if full >= os.pathconf(folder, "PC_PATH_MAX"):
        return f"the path is too long ({full} bytes)"
    return None


def _state_dir(config: Config) -> Problem | None:
    """state_dir is made at start if missing (the replay marks live there): it must
    be a directory already, or the nearest existing directory above it writable."""
    here = config.state_dir
    while not os.path.lexists(here):
        here = os.path.dirname(here)
    if not os.path.isdir(here) or not os.access(here, os.W_OK | os.X_OK):
        why = "is not a directory" if not os.path.isdir(here) else \
            f"is not writable by uid {os.getuid()}"
        advice = ("set state_dir to a directory of root's, e.g. /var/lib/inosync" if config.path
                  else "give --state-dir a directory of yours that only you may change")
        return "state_dir", (f"state_dir {config.state_dir} cannot be made or written ({here} "
                             f"{why}); {advice}")
    return None


def _kept_record(config: Config) -> Problem | None:
    """The record of kept mount points must be readable: it may name a copy on
    the nodes that the start's full sync would delete (keptstore.py). It lies in
    state_dir, the setting that says where to look."""
    try:
        KeptFile(config.state_dir).load(config.wpath)
    except KeptError as e:
        return "state_dir", str(e)
    return None


def _wpath_disk_mounted(config: Config) -> Problem | None:
    """A boot where wpath's own disk did not mount (nofail) leaves its bare mount
    point: syncing it, with whatever an application wrote there meanwhile, would
    delete the nodes' copy. fstab's mount points are compared as real paths."""
    point = keptstore.fstab_above([os.path.realpath(p) for p in keptstore.read_fstab()],
                                  config.wpath)
    if point is None or point in {m.point for m in read_mounts()} or os.path.ismount(point):
        return None
    return "wpath", (f"wpath {config.wpath}: {point} is a mount point in {keptstore.FSTAB}, "
                     "but nothing is mounted there (the disk did not mount?); syncing the bare "
                     "directory would delete the nodes' copy; mount it, then start inosync")


# Every check a start makes once the configuration has loaded (config.load makes
# the rest): each returns (the setting to blame, why the start would fail), or
# None. Add new ones here (and a case to tests/test_setting_lines.py).
STARTUP_CHECKS: list[Callable[[Config], Problem | None]] = [
    _wpath_readable, _ssh_program, _local_node_parents, _daemon_file_folders, _state_dir,
    _kept_record, _wpath_disk_mounted,
]
# Those a later try may pass: the start fails with exit 75 (EX_TEMPFAIL), retried.
TEMPORARY: set[Callable[[Config], Problem | None]] = {_wpath_disk_mounted}


def summary(config: Config) -> list[str]:
    """The lines ``inosync --check`` prints: what would be synced where, and how."""
    source = config.path or "none (one-off mode: wpath and rnodes from the command line)"
    lines = [f"config: {source}", f"wpath: {config.wpath}"]
    if config.configured_wpath and config.configured_wpath != config.wpath:
        lines[-1] += f" (set as {config.configured_wpath})"
    lines.append(f"nodes: {len(config.rnodes)}")
    lines += [_node_line(node) for node in config.rnodes]
    lines.append(_excludes_line(config.excludes.patterns))
    off = replay.off_because(config.replay_moves, config.rsync_args, config.delete)
    lines.append(f"move replay: off ({off})" if off else
                 "move replay: on for local and ssh nodes (directories under which an exclude "
                 "may match are sent as data; see README, Moves and ssh connections)")
    lines.append(f"edelay: {show(config.edelay)} s")
    lines += [f"{name}: {show(value)}" for name, value in non_defaults(config)]
    opts = dataclasses.replace(config.rsync_options(), stats=bool(config.metrics_file))
    lines.append("full sync, per node (rsync argv, shown quoted):")
    progress = config.progress_interval > 0  # as the daemon decides
    lines += [f"  {shlex.join(full_argv(opts, config.wpath, node, progress))}"
              for node in config.rnodes]
    lines.append("  (the daemon gives rsync wpath as /proc/self/fd/N, a descriptor it opened "
                 "and checked, and leaves out empty mount points whose copy it keeps)")
    if any(node_kind(n) is Kind.SSH for n in config.rnodes) and config.ssh_control:
        # The daemon's socket directory exists only while it runs.
        lines.append("  (the daemon adds -o ControlMaster=auto -o ControlPath=... to -e "
                     "for its shared ssh connections, and ServerAlive options if the ssh "
                     "command sets none)")
    # The first full sync deletes whatever a node holds that wpath lacks: say how
    # to see that before it runs, and what makes a first ssh run fail.
    deleting = deletepolicy.deletes(config.delete, deletepolicy.Phase.START).delete
    lines.append(f"before the first start: {verify_command(config)} lists what the first "
                 "full sync would change on each node " + (
                     "(*deleting: what it would delete)" if deleting else
                     f"(it deletes nothing: {deletepolicy.shown(config.delete)})"))
    ssh_hosts = [ssh_host(n) for n in config.rnodes if node_kind(n) is Kind.SSH]
    if ssh_hosts:
        lines.append(f"ssh nodes: accept each host key first ({accept_key(config, ssh_hosts[0])}, "
                     "as the daemon's user): with BatchMode=yes an unknown key fails every run")
    return lines


def accept_key(config: Config, host: str) -> str:
    """The command that records host's key where the daemon's ssh looks for it: the
    ssh setting itself (its port, -i, -F, UserKnownHostsFile), able to ask. ssh
    takes the first value given for an option, so BatchMode=no goes first."""
    return shlex.join([config.ssh[0], "-o", "BatchMode=no", *config.ssh[1:], host, "true"])


def verify_command(config: Config) -> str:
    """The --verify of this config: of its file, or in one-off mode of its arguments."""
    if config.path:
        return f"inosync -c {shlex.quote(config.path)} --verify"
    state = ["--state-dir", config.state_dir] if config.state_dir != oneoff_state_dir() else []
    return shlex.join(["inosync", "--verify", *state, config.configured_wpath, *config.rnodes])


def _node_line(node: str) -> str:
    kind = node_kind(node)
    line = f"  {node} ({_KIND_NAMES[kind]}"
    if kind is Kind.SSH and not ssh_parts(node)[1].startswith("/"):
        line += f": {replay.meaning(node)}"  # as rsync and the replay both read it
    return line + ")"


def non_defaults(config: Config) -> list[tuple[str, object]]:
    """Settings whose value is not the default, in declaration order."""
    changed = []
    for f in dataclasses.fields(config):
        if f.name in _NOT_LISTED:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        value = getattr(config, f.name)
        if value != default:
            changed.append((f.name, value))
    return changed


def _excludes_line(patterns: tuple[str, ...]) -> str:
    if not patterns:
        return "excludes: none"
    shown = ", ".join(repr(p) for p in patterns[:SHOWN_EXCLUDES])
    more = ", ..." if len(patterns) > SHOWN_EXCLUDES else ""
    return f"excludes: {len(patterns)} ({shown}{more})"
