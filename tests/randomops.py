"""Random operations on a watched tree, shared by the tests and the soak command.

``RandomOps(src, seed)`` makes seeded random changes with hard names
(creates, writes, renames, deletes, symlinks, hard links, modes, file <->
directory swaps; with ``swaps=True`` also swaps through a temporary name,
log-style rotations, and "twins", files of one size and one mtime, which
``twin_renames()`` swaps and rotates); ``drive(ops, count)`` runs them in
bursts with short random pauses. tests/test_random.py runs them against a
live daemon, and ``python bench/soak.py`` does the same for longer (it puts
tests/ on ``sys.path`` to import this module). Everything random comes from
``random.Random(seed)``: the same seed makes the same operations on the same
tree, whatever the timing (pauses come from a separate generator). Only the
standard library is used.
"""

from __future__ import annotations

import os
import random
import shutil
import stat
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

# Names that break naive tools (shells, line-based lists, UTF-8 decoders);
# tests/test_replication.py replicates each one, then plain ones.
ODD_NAMES = [
    "with space", "new\nline", "back\\slash", "star*", "quest?", "[bracket", "brace{}",
    "-leading-dash", "--delete", "ünïcödé", "tab\tname", "quote'\"", ".hidden", "#hash",
    os.fsdecode(b"bad\xff\xfeutf8"),
]
# More names that tools treat specially (";" starts a comment, like "#", in rsync lists).
EXTRA_NAMES = [";semi", "x~"]
PLAIN_NAMES = ["a", "b", "c", "data.txt", "index.html", "sub", "img.png", "notes", "x.y", "z"]
NAMES = ODD_NAMES + EXTRA_NAMES + PLAIN_NAMES

FILE_MODES = (0o600, 0o644, 0o755)
DIR_MODES = (0o700, 0o755)
# Where "outside" symlinks point (absolute). The tree's parent is added per
# instance: it holds the replicas, so following such a link would show at once.
OUTSIDE_TARGETS = ("/", "/etc", "/etc/hostname", "/nonexistent/inosync-soak")


@dataclass(frozen=True)
class Entry:
    """One thing found in the tree (never the root itself)."""

    rel: str  # relative to root, '/'-separated, str via os.fsdecode
    kind: str  # "f" regular file, "d" directory, "l" symlink, "o" anything else
    depth: int  # number of components of rel
    nlink: int
    size: int = 0
    mtime_ns: int = 0


class RandomOps:
    """Seeded random operations on the tree at ``root``, all of them inside it.

    Each ``step()`` walks the tree afresh (``os.scandir``, never following a
    symlink), picks one operation and its targets, and does it. An operation
    whose target is unsuitable is skipped; one that fails with ``OSError`` is
    recorded as failed and otherwise ignored. Files are opened with
    ``O_NOFOLLOW`` and only paths found by that walk are used, so nothing is
    ever written through a symlink.

    Two knobs keep out what is known not to converge (see the soak command's
    ``--hardlink-writes`` and ``--same-size``):

    * ``hardlink_writes=False`` (the default) keeps in-place changes (write,
      append, truncate, chmod, utime) off files with more than one link:
      inotify reports such a change only under the name it was made through,
      so the file's other names are never synced.
    * ``same_size=False`` (the default) gives every new content of a file a
      size no earlier content had (empty files aside). rsync's quick check
      skips a file whose size and mtime (in whole seconds) match the node's
      copy, so a path that gets another content of the same size within the
      same second keeps the old content on the nodes.

    ``swaps=True`` adds three operations (off by default, so that a seed
    makes the same operations it always made): ``twins`` writes two files
    of one size back to back in one directory, with one mtime (as a coarse
    file clock gives them); ``swap`` swaps two files through a temporary
    name (``mv x t; mv y x; mv t y``) and ``rotate`` moves one into
    another's place (``mv cur prev; mv next cur``), both on files of
    different sizes. ``twin_renames(n)`` swaps and rotates twins, n times.
    rsync's quick check (size and mtime) cannot tell twins apart: once
    their renames are done on a node, only doing each of them there once
    leaves the node equal to the source. Twins are renamed by
    ``twin_renames()`` only, never by a step: renamed while an rsync reads
    them (a change racing a running batch), the node gets their new
    contents from that rsync, and the next batch's replay renames them once
    more (tests/test_random.py calls it while the daemon is idle).
    """

    def __init__(self, root: Path | str, seed: int, *, max_entries: int = 200,
                 max_depth: int = 5, hardlink_writes: bool = False,
                 same_size: bool = False, swaps: bool = False,
                 names: Sequence[str] = NAMES) -> None:
        self.root = str(root)
        self.names = list(names)
        self.seed = seed
        self.rng = random.Random(seed)
        self.max_entries = max_entries
        self.max_depth = max_depth
        self.hardlink_writes = hardlink_writes
        self.same_size = same_size
        self.sizes: set[int] = set()  # sizes content has had, for same_size=False
        self.outside = (*OUTSIDE_TARGETS, os.path.dirname(os.path.abspath(self.root)))
        self.history: list[str] = []  # one line per step: what was done (or skipped)
        self.counts: dict[str, int] = {}  # operation name -> times done
        self.failed = 0
        self._ops = [
            (self.op_create, 10), (self.op_write, 8), (self.op_append, 6),
            (self.op_truncate, 5), (self.op_mkdir, 7), (self.op_rmtree, 3),
            (self.op_unlink, 6), (self.op_rename_file, 7), (self.op_rename_dir, 5),
            (self.op_file_to_dir, 2), (self.op_dir_to_file, 2), (self.op_symlink, 5),
            (self.op_chmod, 4), (self.op_utime, 4), (self.op_atomic_save, 5),
            (self.op_hardlink, 3),
        ]
        if swaps:
            self._ops += [(self.op_twins, 6), (self.op_swap, 4), (self.op_rotate, 4)]
        self._shrink = [(self.op_rmtree, 3), (self.op_unlink, 5), (self.op_dir_to_file, 1)]
        # A small tree grows: whole subtrees go less often.
        self._grow = [(f, 1 if f in (self.op_rmtree, self.op_dir_to_file) else w)
                      for f, w in self._ops]

    # ---- the tree as it is now

    def walk(self) -> list[Entry]:
        """Every entry below root, sorted (bytewise) so that choices are deterministic."""
        found: list[Entry] = []

        def visit(rel: str, depth: int) -> None:
            with os.scandir(self.path(rel)) as it:
                entries = sorted(it, key=lambda e: os.fsencode(e.name))
            for e in entries:
                child = f"{rel}/{e.name}" if rel else e.name
                st = e.stat(follow_symlinks=False)
                kind = ("d" if stat.S_ISDIR(st.st_mode) else "f" if stat.S_ISREG(st.st_mode)
                        else "l" if stat.S_ISLNK(st.st_mode) else "o")
                found.append(Entry(child, kind, depth + 1, st.st_nlink, st.st_size,
                                   st.st_mtime_ns))
                if kind == "d":
                    visit(child, depth + 1)

        visit("", 0)
        return found

    def path(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    # ---- helpers

    def _choice(self, items: list[Entry]) -> Entry | None:
        return self.rng.choice(items) if items else None

    def _files(self, tree: list[Entry], in_place: bool = False) -> list[Entry]:
        return [e for e in tree if e.kind == "f"
                and (not in_place or self.hardlink_writes or e.nlink == 1)]

    def _dirs(self, tree: list[Entry], below: int | None = None) -> list[str]:
        """Directories (root is "") whose depth is below ``below``."""
        limit = self.max_depth if below is None else below
        return [""] + [e.rel for e in tree if e.kind == "d" and e.depth < limit]

    def _depth(self, rel: str) -> int:
        return len(rel.split("/")) if rel else 0

    def _name(self, parent: str) -> str:
        """A name that does not exist yet in parent (sometimes with a suffix)."""
        name = self.rng.choice(self.names)
        if os.path.lexists(os.path.join(self.path(parent), name)):
            name = f"{name}.{self.rng.randrange(100)}"
        return name

    def _size(self, lo: int, hi: int) -> int:
        """A size from lo to hi; unless same_size, one that no content had yet (or 0)."""
        while True:
            for _ in range(5):
                n = self.rng.randint(lo, hi)
                if n == 0 or self.same_size or n not in self.sizes:
                    self.sizes.add(n)
                    return n
            lo, hi = hi + 1, 2 * hi + 2  # crowded: look further up

    def _data(self) -> bytes:
        size = self.rng.choice((0, 1, 10, 100, 1000, 4096, 5000, 20000))
        return self.rng.randbytes(self._size(size // 2, size))

    def _open_write(self, rel: str, flags: int, data: bytes, mode: int = 0o644) -> None:
        fd = os.open(self.path(rel), flags | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def _join(self, parent: str, name: str) -> str:
        return f"{parent}/{name}" if parent else name

    def _twin_pairs(self, tree: list[Entry]) -> list[tuple[Entry, Entry]]:
        """Pairs of non-empty files in one directory with the same size and mtime."""
        groups: dict[tuple[str, int, int], list[Entry]] = {}
        for e in self._files(tree):
            if e.size:
                groups.setdefault((os.path.dirname(e.rel), e.size, e.mtime_ns), []).append(e)
        return [pair for group in groups.values() for pair in combinations(group, 2)]

    def _subtree_depth(self, tree: list[Entry], top: Entry) -> int:
        """How many levels top and what is below it occupy (1 for an empty dir)."""
        prefix = top.rel + "/"
        deepest = max((e.depth for e in tree if e.rel.startswith(prefix)), default=top.depth)
        return deepest - top.depth + 1

    # ---- one step

    def step(self) -> str:
        """Do one random operation; return (and record) what it was."""
        tree = self.walk()
        ops = (self._shrink if len(tree) >= self.max_entries
               else self._grow if len(tree) < self.max_entries // 5 else self._ops)
        op = self.rng.choices([f for f, _ in ops], [w for _, w in ops])[0]
        name = op.__name__[3:]
        try:
            what = op(tree)
        except OSError as e:
            self.failed += 1
            what = f"{name}: failed: {e}"
        else:
            if what is None:
                what = f"{name}: skipped"
            else:
                self.counts[name] = self.counts.get(name, 0) + 1
        self.history.append(what)
        return what

    # ---- the operations; each returns a description, or None to skip

    def op_create(self, tree: list[Entry]) -> str | None:
        parent = self.rng.choice(self._dirs(tree))
        rel = self._join(parent, self._name(parent))
        self._open_write(rel, os.O_CREAT | os.O_EXCL, self._data())
        return f"create {rel!r}"

    def op_write(self, tree: list[Entry]) -> str | None:
        f = self._choice(self._files(tree, in_place=True))
        if f is None:
            return None
        self._open_write(f.rel, os.O_TRUNC, self._data())
        return f"write {f.rel!r}"

    def op_append(self, tree: list[Entry]) -> str | None:
        f = self._choice(self._files(tree, in_place=True))
        if f is None:
            return None
        size = os.lstat(self.path(f.rel)).st_size
        grow = self.rng.choice((1, 10, 100, 1000, 5000))
        new = self._size(size + 1, size + grow)
        self._open_write(f.rel, os.O_APPEND, self.rng.randbytes(new - size))
        return f"append {f.rel!r} {size} -> {new}"

    def op_truncate(self, tree: list[Entry]) -> str | None:
        f = self._choice(self._files(tree, in_place=True))
        if f is None:
            return None
        size = os.lstat(self.path(f.rel)).st_size
        new = (self._size(0, size - 1) if size and self.rng.random() < 0.6
               else self._size(size + 1, size + 10000))
        fd = os.open(self.path(f.rel), os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.truncate(fd, new)
        finally:
            os.close(fd)
        return f"truncate {f.rel!r} {size} -> {new}"

    def op_mkdir(self, tree: list[Entry]) -> str | None:
        levels = 1 if self.rng.random() < 0.5 else self.rng.randint(2, 4)
        parents = self._dirs(tree, below=self.max_depth - levels + 1)
        parent = self.rng.choice(parents)
        rel = self._join(parent, self._name(parent))
        top = rel
        for i in range(levels):
            if i:
                rel = self._join(rel, self.rng.choice(self.names))
            os.mkdir(self.path(rel))
            if levels > 1 and self._depth(rel) < self.max_depth:
                for _ in range(self.rng.randint(0, 2)):
                    inner = self._join(rel, self._name(rel))
                    self._open_write(inner, os.O_CREAT | os.O_EXCL, self._data())
        return f"mkdir{' -p' if levels > 1 else ''} {top!r} ({levels} levels)"

    def op_rmtree(self, tree: list[Entry]) -> str | None:
        d = self._choice([e for e in tree if e.kind == "d"])
        if d is None:
            return None
        shutil.rmtree(self.path(d.rel))  # unlinks symlinks inside, never follows them
        return f"rm -r {d.rel!r}"

    def op_unlink(self, tree: list[Entry]) -> str | None:
        e = self._choice([e for e in tree if e.kind in "flo"])
        if e is None:
            return None
        os.unlink(self.path(e.rel))
        return f"unlink {e.rel!r}"

    def op_rename_file(self, tree: list[Entry]) -> str | None:
        f = self._choice([e for e in tree if e.kind in "fl"])
        if f is None:
            return None
        how = self.rng.choice(("same dir", "other dir", "over file"))
        if how == "over file":
            others = [e for e in self._files(tree) if e.rel != f.rel]
            if not others:
                return None
            dest = self.rng.choice(others).rel
        else:
            parent = (os.path.dirname(f.rel) if how == "same dir"
                      else self.rng.choice(self._dirs(tree)))
            dest = self._join(parent, self._name(parent))
        os.rename(self.path(f.rel), self.path(dest))
        return f"rename {f.rel!r} -> {dest!r} ({how})"

    def op_rename_dir(self, tree: list[Entry]) -> str | None:
        d = self._choice([e for e in tree if e.kind == "d"])
        if d is None:
            return None
        height = self._subtree_depth(tree, d)
        inside = d.rel + "/"
        how = self.rng.choice(("same dir", "other dir", "over empty dir"))
        if how == "over empty dir":
            empty = [e.rel for e in tree if e.kind == "d" and e.rel != d.rel
                     and not e.rel.startswith(inside) and not inside.startswith(e.rel + "/")
                     and e.depth + height - 1 <= self.max_depth
                     and not os.listdir(self.path(e.rel))]
            if not empty:
                return None
            dest = self.rng.choice(empty)
        else:
            if how == "same dir":
                parent = os.path.dirname(d.rel)
            else:
                parents = [p for p in self._dirs(tree, below=self.max_depth - height + 1)
                           if p != d.rel and not p.startswith(inside)]
                parent = self.rng.choice(parents)
            dest = self._join(parent, self._name(parent))
        os.rename(self.path(d.rel), self.path(dest))
        return f"rename dir {d.rel!r} -> {dest!r} ({how})"

    def op_file_to_dir(self, tree: list[Entry]) -> str | None:
        f = self._choice([e for e in self._files(tree) if e.depth < self.max_depth])
        if f is None:
            return None
        os.unlink(self.path(f.rel))
        os.mkdir(self.path(f.rel))
        if self.rng.random() < 0.7:
            self._open_write(self._join(f.rel, self.rng.choice(self.names)),
                             os.O_CREAT | os.O_EXCL, self._data())
        return f"file -> dir {f.rel!r}"

    def op_dir_to_file(self, tree: list[Entry]) -> str | None:
        d = self._choice([e for e in tree if e.kind == "d"])
        if d is None:
            return None
        shutil.rmtree(self.path(d.rel))
        self._open_write(d.rel, os.O_CREAT | os.O_EXCL, self._data())
        return f"dir -> file {d.rel!r}"

    def op_symlink(self, tree: list[Entry]) -> str | None:
        parent = self.rng.choice(self._dirs(tree))
        rel = self._join(parent, self._name(parent))
        how = self.rng.choice(("to file", "to dir", "dangling", "outside"))
        here = self.path(parent)
        if how == "to file":
            f = self._choice(self._files(tree))
            if f is None:
                return None
            target = os.path.relpath(self.path(f.rel), here)
        elif how == "to dir":
            target = os.path.relpath(self.path(self.rng.choice(self._dirs(tree))), here)
        elif how == "dangling":
            target = self.rng.choice(("does/not/exist", "../" * (self._depth(parent) + 1)
                                      + "nowhere", self.rng.choice(self.names) + ".missing"))
        else:
            target = self.rng.choice(self.outside)
        os.symlink(target, self.path(rel))
        return f"symlink {rel!r} -> {target!r} ({how})"

    def op_chmod(self, tree: list[Entry]) -> str | None:
        items = [e for e in self._files(tree, in_place=True)] + [
            e for e in tree if e.kind == "d"]
        e = self._choice(items)
        # Rarely wpath itself: that makes the daemon sync everything, hiding other misses.
        rel, kind = ("", "d") if e is None or self.rng.random() < 0.01 else (e.rel, e.kind)
        mode = self.rng.choice(FILE_MODES if kind == "f" else DIR_MODES)
        fd = os.open(self.path(rel), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        return f"chmod {mode:o} {rel!r}"

    def op_utime(self, tree: list[Entry]) -> str | None:
        items = [e for e in tree if e.kind in "dl"] + self._files(tree, in_place=True)
        e = self._choice(items)
        rel = "" if e is None or self.rng.random() < 0.01 else e.rel
        mtime = self.rng.randint(10**9, 17 * 10**8) * 10**9 + self.rng.randrange(10**9)
        atime = mtime + self.rng.randrange(10**12)
        os.utime(self.path(rel), ns=(atime, mtime), follow_symlinks=False)
        return f"utime {rel!r}"

    def op_atomic_save(self, tree: list[Entry]) -> str | None:
        f = self._choice(self._files(tree))
        if f is None or self.rng.random() < 0.15:  # sometimes a new file, saved atomically
            parent = self.rng.choice(self._dirs(tree))
            target = self._join(parent, self._name(parent))
        else:
            parent, target = os.path.dirname(f.rel), f.rel
        tmp = self._join(parent, f".{os.path.basename(target)}.tmp")
        self._open_write(tmp, os.O_CREAT | os.O_EXCL, self._data(),
                         self.rng.choice(FILE_MODES))
        try:
            os.rename(self.path(tmp), self.path(target))
        except OSError:
            os.unlink(self.path(tmp))
            raise
        return f"atomic save {target!r}"

    def op_hardlink(self, tree: list[Entry]) -> str | None:
        f = self._choice(self._files(tree))
        if f is None:
            return None
        parent = self.rng.choice(self._dirs(tree))
        rel = self._join(parent, self._name(parent))
        os.link(self.path(f.rel), self.path(rel), follow_symlinks=False)
        return f"hard link {rel!r} -> {f.rel!r}"

    def op_twins(self, tree: list[Entry]) -> str | None:
        parent = self.rng.choice(self._dirs(tree))
        size = self._size(1, self.rng.choice((10, 1000, 5000)))
        first = self._join(parent, self._name(parent))
        self._open_write(first, os.O_CREAT | os.O_EXCL, self.rng.randbytes(size))
        second = self._join(parent, self._name(parent))
        self._open_write(second, os.O_CREAT | os.O_EXCL, self.rng.randbytes(size))
        st = os.lstat(self.path(first))
        os.utime(self.path(second), ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        return f"twins {first!r} {second!r} ({size} bytes)"

    def op_swap(self, tree: list[Entry]) -> str | None:
        pair = self._two_files(tree)
        return None if pair is None else self._swap(*pair)

    def op_rotate(self, tree: list[Entry]) -> str | None:
        pair = self._two_files(tree)
        return None if pair is None else self._rotate(tree, *pair)

    def _two_files(self, tree: list[Entry]) -> tuple[str, str] | None:
        """Two files of different sizes (never twins)."""
        files = self._files(tree)
        if not files:
            return None
        a = self.rng.choice(files)
        b = self._choice([e for e in files if e.size != a.size])
        return None if b is None else (a.rel, b.rel)

    def _fresh(self, parent: str) -> str:
        """A path in parent that does not exist (a rename there overwrites nothing)."""
        rel = self._join(parent, self._name(parent))
        while os.path.lexists(self.path(rel)):
            rel = f"{rel}.{self.rng.randrange(100)}"
        return rel

    def _swap(self, x: str, y: str) -> str:
        tmp = self._fresh(os.path.dirname(x))
        os.rename(self.path(x), self.path(tmp))
        os.rename(self.path(y), self.path(x))
        os.rename(self.path(tmp), self.path(y))
        return f"swap {x!r} <-> {y!r} through {tmp!r}"

    def _rotate(self, tree: list[Entry], cur: str, nxt: str,
                keep: frozenset[str] = frozenset()) -> str:
        parent = os.path.dirname(cur)
        # Over the file a rotation before left there (not one in keep), or to a new name.
        olds = [e.rel for e in self._files(tree) if os.path.dirname(e.rel) == parent
                and e.rel not in (cur, nxt) and e.rel not in keep]
        prev = (self.rng.choice(olds) if olds and self.rng.random() < 0.5
                else self._fresh(parent))
        os.rename(self.path(cur), self.path(prev))
        os.rename(self.path(nxt), self.path(cur))
        return f"rotate {nxt!r} -> {cur!r} -> {prev!r}"

    def add_twins(self, count: int) -> None:
        """count more pairs of twins, recorded as steps are."""
        for _ in range(count):
            try:
                what = self.op_twins(self.walk())
            except OSError as e:
                self.failed += 1
                what = f"twins: failed: {e}"
            else:
                self.counts["twins"] = self.counts.get("twins", 0) + 1
            self.history.append(what or "twins: skipped")

    def twin_renames(self, count: int) -> list[str]:
        """Swaps and rotations of up to count pairs of twins, recorded as steps
        are; what was done. Each file is renamed once at most: renames of
        one pair that undo each other would change nothing."""
        tree = self.walk()
        pairs = self._twin_pairs(tree)
        twins = {e.rel for pair in pairs for e in pair}
        used: set[str] = set()
        done: list[str] = []
        while len(done) < count:
            pairs = [(a, b) for a, b in pairs if a.rel not in used and b.rel not in used]
            if not pairs:
                break
            a, b = self.rng.choice(pairs)
            x, y = (a.rel, b.rel) if self.rng.random() < 0.5 else (b.rel, a.rel)
            used |= {x, y}
            name = self.rng.choice(("twin_swap", "twin_rotate"))
            try:
                if name == "twin_swap":
                    what = self._swap(x, y)
                else:
                    what = self._rotate(tree, x, y, keep=frozenset(twins | used))
            except OSError as e:
                self.failed += 1
                what = f"{name}: failed: {e}"
            else:
                self.counts[name] = self.counts.get(name, 0) + 1
                what = "twins: " + what
            self.history.append(what)
            done.append(what)
        return done


PAUSES = (0.0, 0.01, 0.05, 0.1, 0.3, 0.5)


def pauses(seed: int, rate: float | None = None, max_burst: int = 30,
           choices: Sequence[float] = PAUSES) -> Iterator[float]:
    """Seconds to sleep after each operation.

    With a rate, a steady 1/rate. Without, bursts of 1..max_burst operations
    at full speed, each followed by a pause from ``choices``: some shorter
    and some longer than a typical edelay of 0.2 s, so batches go out while
    changes continue. Its own generator: timing never changes the operations.
    """
    rng = random.Random(f"pauses-{seed}")
    while True:
        if rate:
            yield 1.0 / rate
            continue
        for _ in range(rng.randint(1, max_burst) - 1):
            yield 0.0
        yield rng.choice(choices)


def drive(ops: RandomOps, count: int, rate: float | None = None, max_burst: int = 30,
          choices: Sequence[float] = PAUSES) -> float:
    """Do ``count`` operations, paced by ``pauses()``; return the seconds it took.

    With a rate, each operation starts on schedule (late ones do not wait).
    """
    started = time.monotonic()
    due = started
    for _, pause in zip(range(count), pauses(ops.seed, rate, max_burst, choices)):
        ops.step()
        due += pause
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif not rate:
            due = time.monotonic()
    return time.monotonic() - started
