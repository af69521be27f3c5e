"""The configuration file: a Python file that sets inosync's variables.

It is executed (as in inosync 0.2), then every setting is checked before
anything touches a node. Every error is one line naming file and line.

One-off mode (``inosync SRC DEST [DEST...]``, no file) builds its Config with
the same code, as a file setting ``wpath = SRC`` and ``rnodes = [DEST, ...]``
would (``from_args``); its errors name the argument instead of a line.
"""

from __future__ import annotations

import ast
import difflib
import fnmatch
import inspect
import math
import os
import posixpath
import pwd
import shutil
import stat
import sys
import tempfile
import traceback
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from types import FrameType, MappingProxyType
from typing import Any

from . import deletepolicy, mounts, paths, rsync, slots, unverified
from .excludes import Excludes, ExcludeSyntaxError, read_exclude_file
from .metrics import SUFFIX
from .rsync import Options as RsyncOptions  # "rsync" is also a setting of Config
from .watch import EVENT_FLAGS

DEFAULT_PATH = "/etc/inosync.conf"

# Every change kind inosync promises to replicate needs one of these:
# IN_MODIFY catches truncate(2) and writes through files kept open,
# IN_ATTRIB chmod/chown/touch, the rest create, write, delete and rename.
DEFAULT_EMASK = (
    "IN_CLOSE_WRITE",
    "IN_CREATE",
    "IN_DELETE",
    "IN_MOVED_FROM",
    "IN_MOVED_TO",
    "IN_MODIFY",
    "IN_ATTRIB",
)
DEFAULT_SSH = (
    "ssh",
    "-o", "BatchMode=yes",
    "-o", "ConnectTimeout=10",
    "-o", "ServerAliveInterval=10",
    "-o", "ServerAliveCountMax=3",
)  # fmt: skip


DAY = 86_400.0  # the longest delay, timeout or interval accepted


class ConfigError(Exception):
    """A one-line, user-facing message about the configuration."""


class NotYet(ConfigError):
    """wpath is not there yet (missing, empty, its disk not mounted): at boot a late
    mount, which a retry may find; not a mistake in the file (exit 75, not 2)."""


class NodeError(ValueError):
    """What is wrong with one entry of rnodes (index counts from 0): said as
    "entry 'x' why" in a file, as "DEST 2 'x': why" on the command line."""

    def __init__(self, index: int, node: str, why: str, message: str | None = None) -> None:
        super().__init__(message or f"entry {node!r} {why}")
        self.index, self.node, self.why = index, node, why


@dataclass(frozen=True)
class Arguments:
    """One-off mode's command line (``inosync SRC DEST [DEST...]``), which an error
    about a setting names as a file's error names the line: SRC, DEST 2 'web1:',
    --state-dir."""

    src: str
    dests: tuple[str, ...]
    state_dir: str | None = None  # None: not given, the default (oneoff_state_dir)

    def where(self, setting: str) -> str:
        """The argument that gave the setting; "one-off mode" for one left at its
        default (the message names the setting)."""
        if setting == "wpath":
            return f"SRC {self.src!r}"
        if setting == "rnodes":
            return "DEST"
        if setting == "state_dir" and self.state_dir is not None:
            return f"--state-dir {self.state_dir!r}"
        return "one-off mode"

    def dest(self, index: int) -> str:
        """One DEST, counted from 1 as a reader counts them."""
        return f"DEST {index + 1} {self.dests[index]!r}"


@dataclass(frozen=True)
class Config:
    path: str  # absolute; "" in one-off mode (no file: nothing to reload)
    wpath: str  # the real directory: absolute, symlinks resolved
    rnodes: tuple[str, ...]  # local nodes made absolute
    configured_wpath: str = ""  # as set, made absolute; what a swap of wpath is followed by
    base_dir: str = "/"  # what relative paths in the file are relative to
    rexcludes: tuple[str, ...] = ()
    rspeed: int = 0
    emask: tuple[str, ...] = DEFAULT_EMASK
    edelay: float = 10.0
    rsync: str = "/usr/bin/rsync"
    rsync_args: tuple[str, ...] = ()
    ssh: tuple[str, ...] = DEFAULT_SSH
    timeout: int = 60
    contimeout: int = 10
    retry_min: float = 1.0
    retry_max: float = 60.0
    max_pending: int = 100_000
    max_parallel: int = field(default_factory=slots.default_max_parallel)  # rsync runs at once
    full_threshold: int = 20_000
    rescan_interval: float = 60.0
    resync_interval: float = DAY  # a whole-tree sync per node; 0: never
    progress_interval: float = 30.0  # progress lines during long work; 0: none
    pidfile: str | None = None
    logfile: str | None = None
    statusfile: str | None = None
    metrics_file: str | None = None  # Prometheus' text format, for node_exporter (metrics.py)
    state_dir: str = "/var/lib/inosync"  # what must outlive a restart (unverified.py)
    allow_empty_wpath: bool = False
    allow_system_wpath: bool = False
    replay_moves: bool = True
    delete: deletepolicy.Policy = True  # when runs delete on the nodes (deletepolicy.py)
    ssh_control: bool = True
    excludes: Excludes = field(default_factory=lambda: Excludes(()), compare=False)
    # Where each setting was given, what every error about a setting names: the
    # line where the file sets it, or in one-off mode (no file) the argument.
    setting_lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)
    arguments: Arguments | None = field(default=None, compare=False, repr=False)

    def where(self, setting: str) -> str:
        """Where the setting was given, for an error about it: "FILE:LINE" of the
        file, or the argument in one-off mode (see locate)."""
        return locate(self.path, self.setting_lines, self.arguments, setting)

    def rsync_options(self, phase: deletepolicy.Phase = deletepolicy.Phase.START
                      ) -> RsyncOptions:
        """The options of a run of this phase (what it may delete: see deletepolicy)."""
        return RsyncOptions(
            deletes=deletepolicy.deletes(self.delete, phase),
            rsync=self.rsync,
            excludes=self.excludes.patterns,
            bwlimit=self.rspeed,
            timeout=self.timeout,
            contimeout=self.contimeout,
            ssh=self.ssh,
            extra=self.rsync_args,
        )


# Settings the file may set besides the checked ones: rpath is the original's
# helper for building rnodes; rexcludes_from is folded into excludes.
KNOWN = {f for f in Config.__dataclass_fields__
         if f not in ("path", "excludes", "configured_wpath", "base_dir", "setting_lines",
                      "arguments")}
KNOWN |= {"rpath", "rexcludes_from"}


def load(path: str, base_dir: str | None = None) -> Config:
    """Read, run and check the file at path.

    Relative paths, the file's own included, are relative to base_dir (the
    current directory when None). The daemon keeps that directory, so a
    reload after -d (which changes to /) means the same paths as the start.
    """
    base_dir = base_dir or os.getcwd()
    path = os.path.join(base_dir, path)
    source = _read(path)
    namespace, lines = run(path, source)
    return _build(path, namespace, lines, base_dir)


def from_args(src: str, dests: Sequence[str], state_dir: str | None = None,
              base_dir: str | None = None) -> Config:
    """One-off mode: the Config of a file that sets wpath = src, rnodes = dests and
    state_dir (oneoff_state_dir() if None), built and checked by the same code, so
    every refusal of a file applies. Relative paths start at base_dir (the
    current directory when None), as in a file."""
    base_dir = base_dir or os.getcwd()
    state = oneoff_state_dir() if state_dir is None else state_dir  # "" is refused, not the default
    ns = {"wpath": src, "rnodes": list(dests), "state_dir": state}
    return _build("", ns, {}, base_dir, Arguments(src, tuple(dests), state_dir))


ONEOFF_STATE_DIR = ".inosync-state"  # in the home of a user other than root


def oneoff_state_dir() -> str:
    """One-off mode's state_dir: root's is the service's (/var/lib/inosync), so the
    marks of nodes still to be compared by content and the kept places of a tree
    hold whichever of the two runs next; another user's is ~/.inosync-state (the
    home of the password database, as the tree locks'), as /var/lib is root's."""
    default: str = Config.state_dir
    if os.getuid() == 0:
        return default
    try:
        home = pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        return default  # refused at start, with the advice to give --state-dir
    return os.path.join(home, ONEOFF_STATE_DIR) if home.startswith("/") else default


def _read(path: str) -> str:
    why = paths.strict_modes(path, "runs")  # it is code: trusted as sshd trusts keys
    if why:
        raise ConfigError(f"{path}: {why}")
    try:
        data, st = paths.read_regular_file(paths.real(path))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read configuration: {e.strerror}") from None
    check_owner(path, st)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: configuration is not UTF-8 text") from None


def check_owner(path: str, st: os.stat_result) -> None:
    """Refuse a config others could edit: it is code we run, as sshd refuses keys."""
    if st.st_uid not in (0, os.getuid()):
        raise ConfigError(f"{path}: owned by uid {st.st_uid}, not by root or by us; "
                          f"fix with: chown root {path}")
    if st.st_mode & 0o022:
        raise ConfigError(f"{path}: writable by group or others (mode "
                          f"{stat.S_IMODE(st.st_mode):04o}); anyone who can edit it runs "
                          f"code as this daemon; fix with: chmod go-w {path}")


def locate(path: str, lines: Mapping[str, int], arguments: Arguments | None,
           setting: str) -> str:
    """Where the setting was given, what every error about a setting starts with:
    "FILE:LINE" where the file sets it, just "FILE" for one left at its default
    (its message names it); in one-off mode the argument (Arguments.where)."""
    if arguments is not None:
        return arguments.where(setting)
    line = lines.get(setting)
    return path if line is None else f"{path}:{line}"


def run(path: str, source: str) -> tuple[dict[str, Any], dict[str, int]]:
    """The file's names once run, and the line of each one's assignment that ran
    last (the last in the text for one that never ran: a typo there is a typo)."""
    assigned = _assignment_lines(path, source)
    lines = {name: line for line in sorted(assigned) for name in assigned[line]}
    return _execute(path, source, assigned, lines), lines


def _assignment_lines(path: str, source: str) -> dict[int, list[str]]:
    """The top-level names each line assigns, for messages."""
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as e:
        raise ConfigError(f"{path}:{e.lineno}: syntax error: {e.msg}") from None
    assigned: dict[int, list[str]] = {}
    for node in _module_statements(tree.body):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.For, ast.AsyncFor)):
            targets = [node.target]  # a loop's name stays set after it, as a variable
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            targets = [i.optional_vars for i in node.items if i.optional_vars is not None]
        for target in targets:
            for name in ast.walk(target):
                if isinstance(name, ast.Name):
                    assigned.setdefault(node.lineno, []).append(name.id)
    return assigned


def _module_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements that run at module level, also inside if/try/with/for blocks."""
    for node in body:
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for name in ("body", "orelse", "finalbody"):
            yield from _module_statements(getattr(node, name, []))
        for handler in getattr(node, "handlers", []):
            yield from _module_statements(handler.body)


def _execute(path: str, source: str, assigned: Mapping[int, list[str]],
             lines: dict[str, int]) -> dict[str, Any]:
    """Run the file. lines (each name's last assignment in the text) is updated to
    the assignment that ran last: "edelay = -1" in an if and "edelay = 5" in its
    else must blame the line whose value is in force."""
    namespace: dict[str, Any] = {"__file__": path, "__name__": "inosync_config"}
    code = compile(source, path, "exec")

    def top_level(frame: FrameType, event: str, arg: object) -> Any:
        if event == "line" and frame.f_lineno in assigned:
            for name in assigned[frame.f_lineno]:
                lines[name] = frame.f_lineno
        return top_level

    def calls(frame: FrameType, event: str, arg: object) -> Any:
        # the file's own top level only: what it calls runs untraced
        return top_level if frame.f_code is code else None

    previous = sys.gettrace()
    sys.settrace(calls)
    try:
        exec(code, namespace)
    except (Exception, SystemExit) as e:
        frames = traceback.extract_tb(e.__traceback__)
        line = next((f.lineno for f in reversed(frames) if f.filename == path), "?")
        message = " ".join(str(e).split())  # one line, whatever the exception says
        raise ConfigError(f"{path}:{line}: {type(e).__name__}: {message}") from None
    finally:
        sys.settrace(previous)
    return namespace


def _build(path: str, ns: dict[str, Any], lines: dict[str, int], base_dir: str,
           arguments: Arguments | None = None) -> Config:
    where = partial(locate, path, lines, arguments)  # what Config.where will say
    _check_unknown(ns, lines, where)
    values: dict[str, Any] = {"path": path, "base_dir": base_dir,
                              "setting_lines": MappingProxyType(dict(lines)),
                              "arguments": arguments}
    for name, check in {**_path_checks(base_dir), **_CHECKS}.items():
        if name in ns:
            try:
                values[name] = check(ns[name])
            except ValueError as e:
                raise ConfigError(_bad_value(where, arguments, name, e)) from None
    for required in ("wpath", "rnodes"):
        if required not in values:
            raise ConfigError(f"{path}: {required} is not set; {_HELP[required]}")
    values["excludes"] = _excludes(values.get("rexcludes", ()), ns, where, path)
    if "wpath" in values:
        values["configured_wpath"] = values["wpath"]
        resolved = paths.resolve(values["wpath"])
        if resolved.problem:  # it would let another user choose what root sends
            raise ConfigError(f"{where('wpath')}: wpath {values['wpath']}: {resolved.problem}")
        values["wpath"] = resolved.path
    config = Config(**values)
    _check_together(config)
    return config


def _bad_value(where: Callable[[str], str], arguments: Arguments | None, name: str,
               error: ValueError) -> str:
    """The error of a value no checker takes; on the command line a bad node names
    its DEST ("DEST 2 'web1:': why"), as a file names its line."""
    if arguments is not None and isinstance(error, NodeError):
        return f"{arguments.dest(error.index)}: {error.why}"
    return f"{where(name)}: {name} {error}"


def _check_unknown(ns: dict[str, Any], lines: dict[str, int], where: Callable[[str], str]) -> None:
    """Every name the file defines must be a setting: an unknown one would silently
    do nothing (exclude_file = ... would replicate what was meant to stay private).
    A helper is fine when it cannot be taken for a setting: a module, function or
    class, or a name that starts with _. Names assigned in a branch that did not
    run count too: a typo there is a typo."""
    names = sorted({*lines, *ns}, key=lambda n: lines.get(n, 0))
    for name in names:
        if name in KNOWN or name.startswith("_") or _is_code(ns.get(name)):
            continue
        typo = difflib.get_close_matches(name.lower(), sorted(KNOWN), n=1, cutoff=0.75)
        if typo:
            raise ConfigError(f"{where(name)}: unknown setting {name!r}; did you mean "
                              f"{typo[0]!r}? (a helper variable must not look like a "
                              "setting: rename it or start it with _)")
        close = difflib.get_close_matches(name.lower(), sorted(KNOWN), n=3, cutoff=0.6)
        shown = "closest: " + ", ".join(map(repr, close)) if close else "no setting is close"
        raise ConfigError(f"{where(name)}: unknown setting {name!r} ({shown}): "
                          "inosync has no such setting and would ignore it; see README, "
                          "Configuration reference (a helper variable must start with _)")


def _excludes(rexcludes: tuple[str, ...], ns: dict[str, Any], where: Callable[[str], str],
              config_path: str) -> Excludes:
    """rexcludes, then the patterns of rexcludes_from; a bad one blames its setting."""
    try:
        Excludes(rexcludes)
    except ExcludeSyntaxError as e:
        raise ConfigError(f"{where('rexcludes')}: rexcludes: {e}") from None
    if "rexcludes_from" not in ns:
        return Excludes(rexcludes)
    name, patterns = _exclude_file(ns["rexcludes_from"], where("rexcludes_from"), config_path)
    try:
        return Excludes([*rexcludes, *patterns])
    except ExcludeSyntaxError as e:
        raise ConfigError(f"{where('rexcludes_from')}: rexcludes_from {name}: {e}") from None


def _is_code(value: Any) -> bool:
    return inspect.ismodule(value) or inspect.isclass(value) or inspect.isroutine(value)


def _exclude_file(value: Any, where: str, config_path: str) -> tuple[str, list[str]]:
    """The file's name, made absolute, and its patterns."""
    if not isinstance(value, str) or not value or "\0" in value:
        raise ConfigError(f"{where}: rexcludes_from must be a file name (a string "
                          f"without NUL), got {value!r}")
    name = os.path.join(os.path.dirname(os.path.abspath(config_path)), value)
    why = paths.strict_modes(name, "reads")
    if why:
        raise ConfigError(f"{where}: rexcludes_from {name}: {why}")
    try:
        return name, read_exclude_file(paths.real(name))
    except OSError as e:
        raise ConfigError(f"{where}: rexcludes_from: cannot read {name}: {e.strerror}") from None


def _check_together(config: Config) -> None:
    where = config.where
    if config.retry_min > config.retry_max:
        name = "retry_min" if "retry_min" in config.setting_lines else "retry_max"
        raise ConfigError(f"{where(name)}: retry_min ({config.retry_min}) must not exceed "
                          f"retry_max ({config.retry_max})")
    deleting = deletepolicy.refused_args(config.delete,
                                         [name for _, name, _ in rsync.options(config.rsync_args)])
    if deleting:
        raise ConfigError(f"{where('rsync_args')}: rsync_args has {deleting}, which deletes "
                          f"on the nodes against {deletepolicy.shown(config.delete)}; remove it "
                          "(inosync passes the deleting options the policy allows)")
    if not os.path.lexists(config.wpath):
        raise NotYet(f"{where('wpath')}: wpath {config.wpath} does not exist (not mounted "
                     "yet, or a typo?); exit 75: a later start may find it")
    if not os.path.isdir(config.wpath):
        raise ConfigError(f"{where('wpath')}: wpath {config.wpath} is not a directory")
    problem = trust_problem(config) or layout_problem(config, config.wpath)
    if problem:
        setting, why = problem
        empty = not config.allow_empty_wpath and not paths.has_content(config.wpath,
                                                                       config.excludes)
        raise (NotYet if setting == "wpath" and empty else ConfigError)(
            _layout_message(config, setting, why))
    popt = popt_rsync_line()
    if popt:  # no setting's fault: the file is named (one-off mode has none)
        raise ConfigError(f"{config.path or 'one-off mode'}: {popt}: this line gives rsync "
                          "options that inosync never sees (and so cannot check); remove "
                          "it, and put options in rsync_args")


def _layout_message(config: Config, setting: str, why: str) -> str:
    """The error of a layout_problem: at config.where(setting). On the command line,
    the DEST that alone gives the same refusal (a node inside wpath, or holding
    state_dir; none for two DESTs that overlap each other), and where the opt-in
    setting the advice names has to go."""
    where = config.where(setting)
    arguments = config.arguments
    if arguments is None:
        return f"{where}: {why}"
    if setting in ("rnodes", "state_dir"):
        where = next((arguments.dest(i) for i, node in enumerate(config.rnodes)
                      if layout_problem(replace(config, rnodes=(node,)), config.wpath)
                      == (setting, why)), where)
    opt_in = next((name for name in ("allow_empty_wpath", "allow_system_wpath")
                   if f"set {name}" in why.lower()), None)
    if opt_in:
        why += (f"; one-off mode has no settings: put wpath, rnodes and {opt_in} in a "
                "configuration file (-c FILE)")
    return f"{where}: {why}"


POPT_FILES = ("/etc/popt",)
POPT_DIRS = ("/etc/popt.d",)
POPT_MAX = 1 << 20  # bytes read of one popt file: no real one comes near
# libpopt 1.19 reads each directory's "*" (no dot files) but these.
_POPT_SKIPPED = (".rpmnew", ".rpmsave")
FNM_EXTMATCH = 1 << 5  # glibc's fnmatch flag for @(..) +(..) and the like


def popt_rsync_line() -> str | None:
    """"file:line" of a popt line for rsync (an alias or exec that adds options to
    every run), or None. ~/.popt is out of reach: rsync runs with an empty HOME.

    Read as libpopt reads them: the files of each directory but dot files and
    *.rpmnew, *.rpmsave; regular files only (a FIFO is never opened for
    reading: it would block); "\\<newline>" joins lines; the first word is a
    pattern matched against the program's name by fnmatch(3) with extended
    patterns (libc's own, so that [^x], [[:alpha:]], \\s and @(..) mean what
    popt takes them to mean; where libc cannot be asked, any pattern counts)."""
    names = list(POPT_FILES)
    for folder in POPT_DIRS:
        try:
            names += sorted(os.path.join(folder, n) for n in os.listdir(folder)
                            if not n.startswith(".") and not n.endswith(_POPT_SKIPPED))
        except OSError:
            pass
    for name in names:
        data = _popt_file(name)
        if data is None:
            continue
        logical, first = b"", 0
        for number, line in enumerate(data.split(b"\n"), 1):
            first = first or number
            if line.endswith(b"\\"):  # continued on the next line
                logical += line[:-1]
                continue
            words = (logical + line).split()[:1]
            if words and _popt_names_rsync(words[0]):
                return f"{name}:{first}"
            logical, first = b"", 0
        words = logical.split()[:1]  # the last line continued into the end of the file
        if words and _popt_names_rsync(words[0]):
            return f"{name}:{first}"
    return None


def popt_refusal(line: str) -> str:
    """Why no run starts while popt_rsync_line() found line (made since the start;
    at load the same line stops the start)."""
    return (f"{line}: this popt line (made since the start) gives rsync options inosync "
            "never sees, such as --dry-run or --delete; no run until it is removed (put "
            "options in rsync_args)")


def _popt_file(name: str) -> bytes | None:
    """The contents of a regular file (opened without blocking), or None."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, POPT_MAX)
    except OSError:
        return None
    finally:
        os.close(fd)


def _popt_names_rsync(word: bytes) -> bool:
    """Whether popt takes this first word of a line to name rsync."""
    if word == b"rsync":
        return True
    if not any(c in word for c in b"*?[\\@+!("):
        return False
    if fnmatch.fnmatchcase("rsync", os.fsdecode(word)):
        return True
    libc = _libc_fnmatch()
    if libc is None:
        return True  # cannot tell: a pattern could name it
    return libc(word, b"rsync", FNM_EXTMATCH) == 0


_LIBC: list[Callable[[bytes, bytes, int], int] | None] = []


def _libc_fnmatch() -> Callable[[bytes, bytes, int], int] | None:
    """libc's fnmatch(3), the one libpopt calls; None where it cannot be loaded."""
    if not _LIBC:
        try:
            import ctypes
            import ctypes.util

            fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").fnmatch
            fn.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int)
            fn.restype = ctypes.c_int
            _LIBC.append(fn)
        except (OSError, AttributeError):
            _LIBC.append(None)
    return _LIBC[0]


def trust_problem(config: Config) -> tuple[str, str] | None:
    """Why a file the daemon writes, or its state_dir, is not safe for it to use:
    (the setting to blame, why), or None. Strict modes (paths.strict_modes):
    whoever can write on the way to a file root writes by name decides which
    file that is."""
    for name in _DAEMON_FILES:
        path = getattr(config, name)
        why = path and paths.strict_modes(path, "writes", writes=True)
        if why:
            return name, f"{name} {path}: {why}"
    why = paths.strict_modes(config.state_dir, "keeps its state in", directory=True)
    if why:
        return "state_dir", (f"state_dir {config.state_dir}: {why}; another user could take "
                             "away what it keeps (which nodes must be compared by content)")
    return None


def layout_problem(config: Config, wpath: str) -> tuple[str, str] | None:
    """Why syncing the real directory wpath with this config could delete or loop:
    (the setting to blame, why), or None.

    Checked at load and again whenever the configured wpath comes to mean
    another directory (a deploy swapped it).
    """
    if not config.allow_empty_wpath and not paths.has_content(wpath, config.excludes):
        return "wpath", (f"wpath {wpath} is empty (or holds only lost+found or excluded "
                         "entries); syncing it would delete everything on the nodes (unmounted "
                         "disk, or excludes that hide everything?). Set allow_empty_wpath = True "
                         "if intended; exit 75: a later start may find it")
    system = paths.system_inside(wpath)
    if system and not config.allow_system_wpath:
        return "wpath", (f"wpath {wpath} holds the system directory {system}, which changes "
                         "all the time; watch a narrower tree, or set allow_system_wpath = "
                         "True and exclude what must not be copied")
    local_nodes = [n for n in config.rnodes if rsync.node_kind(n) is rsync.Kind.LOCAL]
    why = local_node_problem(local_nodes) or _system_node(local_nodes) \
        or paths.node_overlap(wpath, local_nodes)
    if why:
        return "rnodes", why
    own = {name: getattr(config, name) for name in _DAEMON_FILES if getattr(config, name)}
    own["the directory for rsync list files (TMPDIR)"] = os.path.join(
        tempfile.gettempdir(), "inosync-lists")
    own["state_dir"] = os.path.join(config.state_dir, "node" + unverified.SUFFIX)
    for name, path in own.items():
        why = paths.own_file_inside(wpath, name, path, config.excludes)
        blame = "wpath"
        if not why:
            why, blame = own_file_in_node(config.rnodes, name, path), "rnodes"
        if why:
            setting = name if name in (*_DAEMON_FILES, "state_dir") else blame
            return setting, why
    why = mounts.problem(wpath, mounts.read_mounts(), config.excludes)
    return ("wpath", why) if why else None


def local_node_problem(nodes: list[str]) -> str | None:
    """Why root's rsync --delete and the move replay must not work in one of these
    local nodes (a symlink on the way that another user could point elsewhere), or None."""
    for node in nodes:
        problem = paths.resolve(node).problem
        if problem:
            return f"local node {node}: {problem}"
    return None


def _system_node(nodes: list[str]) -> str | None:
    """Why a local node is or holds a directory of the system (rnodes = ["/etc"],
    one typo from a wipe of /etc by --delete), or None."""
    for node in nodes:
        system = paths.system_inside(node, paths.SYSTEM_NODE_DIRS)
        if system:
            return (f"local node {node} is or holds the system directory {system}: the "
                    "sync would delete there everything wpath does not hold; name the "
                    "directory to keep in sync (such as /srv/www)")
    return None


def own_file_in_node(rnodes: tuple[str, ...], name: str, path: str) -> str | None:
    """Why a file the daemon writes may not lie at path because a local node holds it,
    or None. The sync to that node deletes it (--delete makes the node equal to
    wpath): a pidfile gone lets a second daemon of the tree start. No exclude makes
    it safe (the temporary names written beside a file, a reload that drops the
    rule), so it is refused plainly."""
    for node in rnodes:
        if rsync.node_kind(node) is rsync.Kind.LOCAL and paths.file_inside(path, node):
            return (f"{name} {path} lies inside local node {node}: the sync to that node "
                    "would delete it (--delete makes the node equal to wpath); move it out "
                    "of the node")
    return None


# ---- one checker per setting: value in, clean value out, ValueError says why


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a non-empty string, got {value!r}")
    if "\0" in value:
        raise ValueError("must not contain NUL")
    return value


def _string_list(value: Any, what: str = "strings") -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ValueError(f"must be a list of {what}, got {type(value).__name__}")
    return tuple(_string(v) for v in value)


def _number(value: Any, minimum: float, maximum: float, integer: bool = False) -> Any:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "an integer" if integer else "a number"
        raise ValueError(f"must be {kind}, got {value!r}")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too big for a float
        finite = False
    if not (finite and minimum <= value <= maximum):
        raise ValueError(f"must be from {minimum:g} to {maximum:g}, got {value!r}")
    return value


@dataclass(frozen=True)
class Number:
    """The checker of a numeric setting. A callable with its bounds in the open,
    so that the man page's table of settings is made from them
    (doc/man_settings.py), never copied by hand."""

    minimum: float
    maximum: float
    integer: bool = False  # an int (a count); else int or float, kept as float
    never: bool = False  # 0 also accepted, meaning never (an interval)

    def __call__(self, value: Any) -> Any:
        if self.never and value == 0 and not isinstance(value, bool):
            return 0.0
        try:
            number = _number(value, self.minimum, self.maximum, self.integer)
        except ValueError:
            if not self.never:
                raise
            raise ValueError(f"must be 0 (never) or from {self.minimum:.0f} to "
                             f"{self.maximum:.0f} seconds, got {value!r}") from None
        return int(number) if self.integer else float(number)


def _seconds(minimum: float, maximum: float = DAY) -> Number:
    return Number(minimum, maximum)


def _interval(minimum: float, maximum: float) -> Number:
    """Seconds between periodic jobs, or 0 for never."""
    return Number(minimum, maximum, never=True)


def _count(minimum: int, maximum: int) -> Number:
    return Number(minimum, maximum, integer=True)


# rsync (3.2.4+) escapes every other shell character of a remote path, and leaves
# these to the remote shell: a path with one means one thing to rsync and another
# to the move replay and --check.
_SHELL_READS = "*?[]\n\r"


def _rnodes(value: Any, base_dir: str) -> tuple[str, ...]:
    """The destinations; local ones made absolute (relative ones are relative to base_dir)."""
    nodes = _string_list(value, "rsync destinations")
    if not nodes:
        raise ValueError("is empty; list at least one destination")
    for index, node in enumerate(nodes):
        why = _node_problem(node)
        if why:
            raise NodeError(index, node, why)
    absolute = tuple(os.path.normpath(os.path.join(base_dir, n))
                     if rsync.node_kind(n) is rsync.Kind.LOCAL else n for n in nodes)
    _check_twice(nodes, absolute)
    return absolute


def _node_problem(node: str) -> str | None:
    """One spelling, one place: why rsync, the replay or a reader of the config
    could each take this node for another directory (after "entry 'NODE' "), or None."""
    control = next((c for c in node if unicodedata.category(c) == "Cc"), None)
    if control is not None:
        return (f"holds the control character {control!r}: rsync would make a directory "
                "of that name; remove it")
    if node != node.strip():
        return "starts or ends with a space: rsync would make a directory of that name; remove it"
    if node.startswith("-"):
        return "starts with '-' and would be taken as an option"
    if rsync.node_kind(node) is rsync.Kind.LOCAL:
        return None  # resolved here, and checked as a real path (layout_problem)
    remote = rsync.ssh_parts(node)[1] if rsync.node_kind(node) is rsync.Kind.SSH else node
    if ".." in remote.split("/"):
        # Only the node knows where .. after ~ or the login directory leads:
        # "host:~root/.." is the remote root that "host:/" spells plainly.
        return ("has '..' in its path, which only the node can resolve (host:~root/.. is "
                "its root directory); name the directory without '..'")
    if rsync.node_kind(node) is not rsync.Kind.SSH:
        return None
    host, path = rsync.ssh_parts(node)
    if not path:
        # inosync 0.4 sent this to "host:/", rsync reads it as the login
        # directory: whichever we chose, someone's tree would be wiped.
        return (f"names no directory (inosync 0.4 synced it to the root of {host}, rsync "
                f"reads it as the login directory); write {node}/path or {node}~/path")
    if rsync.normal_form(node) == f"{host}:/":
        return (f"is the root directory of {host}: --delete would remove everything there "
                "that wpath does not hold; name the directory to keep in sync")
    why = _remote_path_problem(host, path)
    if why:
        return why
    if any(c in path for c in _SHELL_READS):
        return ("holds * ? [ ] or a line break: rsync leaves * ? [ ] and line breaks in an "
                "ssh node's path to the remote shell, which would expand or split them "
                "(rsync and the move replay would work in different places); rename the "
                "directory")
    return None


def _remote_path_problem(host: str, path: str) -> str | None:
    """Why an ssh node's path may not be used, or None: its place only the node
    knows, or --delete must never empty it: another user's home (~user: '/' for
    systemd-network, /bin for bin), a system directory, or the login directory
    itself (its ~/.ssh would go, and with it the way in)."""
    if path.startswith("~") and not path.startswith("~/") and path != "~":
        return (f"names a ~user home, which only {host} knows (it may be / or /bin); write "
                "its absolute path")
    normal = posixpath.normpath(path)
    if normal in (".", "~"):
        return ("is the login directory itself: --delete would remove everything there "
                "that wpath does not hold, ~/.ssh included; name a directory inside it "
                f"({host}:www)")
    if normal.startswith("/"):
        normal = "/" + normal.lstrip("/")
        system = next((d for d in paths.SYSTEM_NODE_DIRS
                       if d == normal or d.startswith(normal + "/")), None)
        if system:
            return (f"is or holds the system directory {system} of {host}: the sync would "
                    "delete there everything wpath does not hold; name the directory to "
                    "keep in sync (such as /srv/www)")
    return None


def _check_twice(nodes: tuple[str, ...], absolute: tuple[str, ...]) -> None:
    """Two spellings of one node ("a" and "a/") would run two rsyncs into one place."""
    seen: dict[str, str] = {}
    for index, (given, node) in enumerate(zip(nodes, absolute)):
        key = rsync.normal_form(node)
        if key in seen:
            raise NodeError(index, given, f"names {key} a second time (first as "
                            f"{seen[key]!r}); list each node once",
                            f"lists {key} twice (as {seen[key]!r} and {given!r})")
        seen[key] = given


def _rsync_args(value: Any) -> tuple[str, ...]:
    args = _string_list(value, "rsync options")
    rsync.check_extra_args(args)
    return args


def _emask(value: Any) -> tuple[str, ...]:
    names = _string_list(value, "event names")
    for name in names:
        if name not in EVENT_FLAGS:
            close = difflib.get_close_matches(name, sorted(EVENT_FLAGS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"has unknown event {name!r}{hint}")
    if not names:
        raise ValueError("is empty; nothing would ever be synced")
    return names


def _executable(value: Any) -> str:
    name = _string(value)
    path = paths.program(name)
    if path is None:
        shown = name if "/" in name else shutil.which(name) or name
        raise ValueError(f"{shown} is not an executable file (install rsync or fix the path)")
    return path


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be True or False, got {value!r}")
    return value


_DAEMON_FILES = ("pidfile", "logfile", "statusfile", "metrics_file")


def _path_checks(base_dir: str) -> dict[str, Callable[[Any], Any]]:
    """Checkers of the settings that name local paths: relative ones start at base_dir."""

    def local(value: Any) -> str:
        return os.path.normpath(os.path.join(base_dir, _string(value)))

    def optional(value: Any) -> str | None:
        return None if value is None else local(value)

    def metrics_file(value: Any) -> str | None:
        path = optional(value)
        if path is not None and not path.endswith(SUFFIX):
            raise ValueError(f"{path} must end in {SUFFIX}: node_exporter's textfile "
                             f"collector reads only *{SUFFIX} files")
        return path

    def program(value: Any) -> str:
        # A bare name stays as is (found on PATH, as rsync finds it); a
        # relative path must keep meaning the same file after -d's cd /.
        name = _string(value)
        return _executable(local(name) if "/" in name else name)

    return {"wpath": local, "rnodes": lambda v: _rnodes(v, base_dir),
            **{name: optional for name in _DAEMON_FILES}, "metrics_file": metrics_file,
            "state_dir": local,
            "rsync": program}


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "rexcludes": lambda v: _string_list(v, "patterns"),
    "rspeed": _count(0, 1_000_000_000),  # KB/s, as rsync --bwlimit
    "emask": _emask,
    "edelay": _seconds(0),
    "rsync_args": _rsync_args,
    "ssh": lambda v: _string_list(v, "ssh command words") or _raise("must not be empty"),
    "timeout": _count(1, int(DAY)),
    "contimeout": _count(1, 3600),
    "retry_min": _seconds(0.1),
    "retry_max": _seconds(0.1),
    "max_pending": _count(1, 10_000_000),
    "max_parallel": _count(1, 10_000),
    "full_threshold": _count(1, 10_000_000),
    "rescan_interval": _seconds(0.1),
    "resync_interval": _interval(1, 366 * DAY),
    "progress_interval": _interval(1, DAY),
    "allow_empty_wpath": _bool,
    "allow_system_wpath": _bool,
    "replay_moves": _bool,
    "delete": deletepolicy.check,
    "ssh_control": _bool,
}

# Defaults that are no one value on every machine: how the man page states them.
SHOWN_DEFAULTS = {"max_parallel": slots.DEFAULT_SHOWN}

_HELP = {
    "wpath": 'set it to the directory to watch, e.g. wpath = "/var/www/"',
    "rnodes": 'list the destinations, e.g. rnodes = ["www1.example.com:/var/www/"]',
}


def _raise(message: str) -> Any:
    raise ValueError(message)
