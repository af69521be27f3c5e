"""The configuration file: a Python file that sets inosync's variables.

It is executed (as in inosync 0.2), then every setting is checked before
anything touches a node. Every error is one line naming file and line.
"""

from __future__ import annotations

import ast
import difflib
import os
import stat
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import rsync
from .excludes import Excludes, ExcludeSyntaxError, read_exclude_file
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


class ConfigError(Exception):
    """A one-line, user-facing message about the configuration."""


@dataclass(frozen=True)
class Config:
    path: str
    wpath: str
    rnodes: tuple[str, ...]
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
    full_threshold: int = 20_000
    rescan_interval: float = 60.0
    pidfile: str | None = None
    logfile: str | None = None
    statusfile: str | None = None
    allow_empty_wpath: bool = False
    excludes: Excludes = field(default_factory=lambda: Excludes(()), compare=False)

    def rsync_options(self) -> rsync.Options:
        return rsync.Options(
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
KNOWN = {f for f in Config.__dataclass_fields__ if f not in ("path", "excludes")}
KNOWN |= {"rpath", "rexcludes_from"}


def load(path: str) -> Config:
    source = _read(path)
    check_owner(path)
    lines = _assignment_lines(path, source)
    namespace = _execute(path, source)
    return _build(path, namespace, lines)


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read configuration: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: configuration is not UTF-8 text") from None


def check_owner(path: str) -> None:
    """Refuse a config others could edit: it is code we run, as sshd refuses keys."""
    st = os.stat(path)
    if st.st_uid not in (0, os.getuid()):
        raise ConfigError(f"{path}: owned by uid {st.st_uid}, not by root or by us; "
                          f"fix with: chown root {path}")
    if st.st_mode & 0o022:
        raise ConfigError(f"{path}: writable by group or others (mode "
                          f"{stat.S_IMODE(st.st_mode):04o}); anyone who can edit it runs "
                          f"code as this daemon; fix with: chmod go-w {path}")


def _assignment_lines(path: str, source: str) -> dict[str, int]:
    """Line where each top-level name is (last) assigned, for messages."""
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as e:
        raise ConfigError(f"{path}:{e.lineno}: syntax error: {e.msg}") from None
    lines: dict[str, int] = {}
    for node in _module_statements(tree.body):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for target in targets:
            for name in ast.walk(target):
                if isinstance(name, ast.Name):
                    lines[name.id] = node.lineno
    return lines


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


def _execute(path: str, source: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__file__": path, "__name__": "inosync_config"}
    try:
        exec(compile(source, path, "exec"), namespace)
    except (Exception, SystemExit) as e:
        frames = traceback.extract_tb(e.__traceback__)
        line = next((f.lineno for f in reversed(frames) if f.filename == path), "?")
        message = " ".join(str(e).split())  # one line, whatever the exception says
        raise ConfigError(f"{path}:{line}: {type(e).__name__}: {message}") from None
    return namespace


def _build(path: str, ns: dict[str, Any], lines: dict[str, int]) -> Config:
    def where(name: str) -> str:
        return f"{path}:{lines.get(name, '?')}"

    _check_unknown(ns, lines, where)
    values: dict[str, Any] = {"path": path}
    for name, check in _CHECKS.items():
        if name in ns:
            try:
                values[name] = check(ns[name])
            except ValueError as e:
                raise ConfigError(f"{where(name)}: {name} {e}") from None
    for required in ("wpath", "rnodes"):
        if required not in values:
            raise ConfigError(f"{path}: {required} is not set; {_HELP[required]}")
    patterns = list(values.get("rexcludes", ()))
    if "rexcludes_from" in ns:
        patterns += _exclude_file(ns["rexcludes_from"], where("rexcludes_from"), path)
    try:
        values["excludes"] = Excludes(patterns)
    except ExcludeSyntaxError as e:
        raise ConfigError(f"{where('rexcludes')}: rexcludes: {e}") from None
    config = Config(**values)
    _check_together(config, where)
    return config


def _check_unknown(ns: dict[str, Any], lines: dict[str, int], where: Callable[[str], str]) -> None:
    """A name that is almost a setting is a typo that would silently do nothing."""
    for name in lines:
        if name in KNOWN or name.startswith("_"):
            continue
        close = difflib.get_close_matches(name.lower(), sorted(KNOWN), n=1, cutoff=0.75)
        if close:
            raise ConfigError(f"{where(name)}: unknown setting {name!r}; did you mean "
                              f"{close[0]!r}? (a helper variable must not look like a "
                              "setting: rename it or start it with _)")


def _exclude_file(value: Any, where: str, config_path: str) -> list[str]:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: rexcludes_from must be a file name (a string)")
    name = os.path.join(os.path.dirname(os.path.abspath(config_path)), value)
    try:
        return read_exclude_file(name)
    except OSError as e:
        raise ConfigError(f"{where}: rexcludes_from: cannot read {name}: {e.strerror}") from None


def _check_together(config: Config, where: Callable[[str], str]) -> None:
    if config.retry_min > config.retry_max:
        name = "retry_max" if where("retry_min").endswith(":?") else "retry_min"
        raise ConfigError(f"{where(name)}: retry_min ({config.retry_min}) must not exceed "
                          f"retry_max ({config.retry_max})")
    if not config.allow_empty_wpath and not os.listdir(config.wpath):
        raise ConfigError(
            f"{where('wpath')}: wpath {config.wpath} is empty; syncing it would delete "
            "everything on the nodes (unmounted disk?). Set allow_empty_wpath = True if intended"
        )


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


def _number(value: Any, minimum: float = 0, integer: bool = False) -> Any:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "an integer" if integer else "a number"
        raise ValueError(f"must be {kind}, got {value!r}")
    if value < minimum:
        raise ValueError(f"must be >= {minimum}, got {value!r}")
    return value


def _wpath(value: Any) -> str:
    path = os.path.abspath(_string(value))
    if not os.path.isdir(path):
        raise ValueError(f"{path} is not a directory")
    return os.path.realpath(path)


def _rnodes(value: Any) -> tuple[str, ...]:
    nodes = _string_list(value, "rsync destinations")
    if not nodes:
        raise ValueError("is empty; list at least one destination")
    for node in nodes:
        if node.startswith("-"):
            raise ValueError(f"entry {node!r} starts with '-' and would be taken as an option")
    if len(set(nodes)) != len(nodes):
        raise ValueError("lists the same destination twice")
    return nodes


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
    path = _string(value)
    st = os.stat(path) if os.path.exists(path) else None
    if st is None or not stat.S_ISREG(st.st_mode) or not os.access(path, os.X_OK):
        raise ValueError(f"{path} is not an executable file (install rsync or fix the path)")
    return path


def _optional_path(value: Any) -> str | None:
    return None if value is None else os.path.abspath(_string(value))


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be True or False, got {value!r}")
    return value


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "wpath": _wpath,
    "rnodes": _rnodes,
    "rexcludes": lambda v: _string_list(v, "patterns"),
    "rspeed": lambda v: _number(v, 0, integer=True),
    "emask": _emask,
    "edelay": lambda v: float(_number(v, 0)),
    "rsync": _executable,
    "rsync_args": lambda v: _string_list(v, "rsync options"),
    "ssh": lambda v: _string_list(v, "ssh command words") or _raise("must not be empty"),
    "timeout": lambda v: _number(v, 1, integer=True),
    "contimeout": lambda v: _number(v, 1, integer=True),
    "retry_min": lambda v: float(_number(v, 0.1)),
    "retry_max": lambda v: float(_number(v, 0.1)),
    "max_pending": lambda v: _number(v, 1, integer=True),
    "full_threshold": lambda v: _number(v, 1, integer=True),
    "rescan_interval": lambda v: float(_number(v, 0.1)),
    "pidfile": _optional_path,
    "logfile": _optional_path,
    "statusfile": _optional_path,
    "allow_empty_wpath": _bool,
}

_HELP = {
    "wpath": 'set it to the directory to watch, e.g. wpath = "/var/www/"',
    "rnodes": 'list the destinations, e.g. rnodes = ["www1.example.com:/var/www/"]',
}


def _raise(message: str) -> Any:
    raise ValueError(message)
