"""How exclude matching scales with the number of patterns, against rsync itself.

For 10, 1,000 and 10,000 patterns (a mix as a real exclude list has: file
names, "*.ext" suffixes, "name*" prefixes, anchored paths, paths with a
slash and a few true wildcards), it times what the daemon does for the
events of 20,000 new files (two events each, every ancestor checked too:
``Excludes.excluded``), and what rsync takes to apply the same list to the
same tree (``rsync -a -n`` of the tree into an empty directory, with the
patterns in an ``--exclude-from`` file). Prints a table; run it with the
repository on ``sys.path`` (``python bench/excludes.py``) or point
PYTHONPATH at another checkout to measure that one.

    python bench/excludes.py [--files 20000] [--counts 10,1000,10000]
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inosync.excludes import Excludes  # noqa: E402

RSYNC = shutil.which("rsync") or "/usr/bin/rsync"


def patterns(count: int, seed: int = 1) -> list[str]:
    """count patterns in the proportions of a long real-world exclude list."""
    r = random.Random(seed)
    made: list[str] = []
    for i in range(count):
        kind = r.random()
        if kind < 0.45:
            made.append(f"name{i}.tmp")  # a file name, at any depth
        elif kind < 0.75:
            made.append(f"*.ext{i}")  # a suffix
        elif kind < 0.85:
            made.append(f"cache{i}*/")  # a prefix, directories only
        elif kind < 0.93:
            made.append(f"/top{i}/")  # anchored
        elif kind < 0.98:
            made.append(f"build/obj{i}")  # the last two elements
        else:
            made.append(f"log{i}.[0-9]*")  # a true wildcard, tried in order
    return made


def make_tree(root: Path, files: int) -> list[str]:
    """files new files in directories of 100; their relative paths."""
    paths = []
    for d in range(files // 100):
        folder = root / f"d{d}" / "sub"
        folder.mkdir(parents=True)
        for f in range(100):
            (folder / f"f{f}.txt").touch()
            paths.append(f"d{d}/sub/f{f}.txt")
    return paths


def time_matcher(pats: list[str], paths: list[str]) -> float:
    """CPU seconds the watcher spends on two events per new file."""
    ex = Excludes(pats)
    started = time.process_time()
    for path in paths:
        for _ in range(2):  # IN_CREATE, IN_CLOSE_WRITE
            ex.excluded(path, False)
    return time.process_time() - started


def time_rsync(pats: list[str], tree: Path, work: Path) -> float:
    rules = work / "excludes"
    rules.write_text("".join(p + "\n" for p in pats))
    dest = work / "dest"
    dest.mkdir(exist_ok=True)
    started = time.monotonic()
    subprocess.run([RSYNC, "-a", "-n", f"--exclude-from={rules}", f"{tree}/", f"{dest}/"],
                   check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--files", type=int, default=20_000)
    p.add_argument("--counts", default="10,1000,10000")
    args = p.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",")]
    with tempfile.TemporaryDirectory(prefix="inosync-bench-excludes-") as work_dir:
        work = Path(work_dir)
        paths = make_tree(work / "tree", args.files)
        print(f"{args.files} new files, {2 * args.files} events; seconds")
        print(f"{'patterns':>10}  {'inosync CPU':>11}  {'rsync':>7}  {'ratio':>6}")
        for count in counts:
            pats = patterns(count)
            ours = time_matcher(pats, paths)
            theirs = time_rsync(pats, work / "tree", work)
            print(f"{count:>10}  {ours:>11.3f}  {theirs:>7.3f}  {ours / theirs:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
