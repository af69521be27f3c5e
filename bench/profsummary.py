#!/usr/bin/env python3
"""Summarize the profiles that ``bench.py --pyspy DIR`` or ``--profile DIR`` wrote.

Usage::

    python bench/profsummary.py FILE [FILE ...] [--top N] [--all] [--merge]

A ``.txt`` file is py-spy's raw (folded) output: one ``frame;frame;... count``
line per distinct stack. For it this prints, per function, the share of
samples spent in the function itself ("self") and in it or anything it
called ("total"); then, per line of inosync's code, the share of samples
whose innermost inosync frame is that line (time in library calls made
there included). Only inosync's functions are listed unless ``--all``.

A ``.prof`` file is cProfile's output; it is printed with pstats, sorted by
cumulative time, top N entries.
"""

from __future__ import annotations

import argparse
import pstats
import re
import sys
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def parse_frame(frame: str) -> tuple[str, str]:
    """(function, short location) of one py-spy frame like 'read (inosync/watch.py:258)'."""
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip(), ""
    path = m.group("file")
    short = path
    for marker in ("/inosync/", "/site-packages/", "/lib/python"):
        if marker in path:
            short = path[path.index(marker) + 1:]
            break
    return m.group("func"), short + (f":{m.group('line')}" if m.group("line") else "")


def is_ours(location: str) -> bool:
    return location.startswith("inosync/")


def summarize_pyspy(paths: list[Path], top: int, everything: bool) -> None:
    total = 0
    self_count: Counter[str] = Counter()
    incl_count: Counter[str] = Counter()
    line_count: Counter[str] = Counter()  # self samples by inosync line (the innermost ours)
    lines = [line for path in paths for line in path.read_text(errors="replace").splitlines()]
    name = str(paths[0]) if len(paths) == 1 else f"{len(paths)} files"
    for raw in lines:
        if not raw.strip():
            continue
        stack, _, n = raw.rpartition(" ")
        try:
            count = int(n)
        except ValueError:
            continue
        total += count
        frames = [parse_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        keys = [f"{func} ({loc.rsplit(':', 1)[0]})" for func, loc in frames]
        for key in set(keys):
            incl_count[key] += count
        self_count[keys[-1]] += count
        ours = [(func, loc) for func, loc in frames if is_ours(loc)]
        if ours:
            func, loc = ours[-1]
            line_count[f"{loc} in {func}"] += count
    if not total:
        print(f"{name}: no samples")
        return
    print(f"== {name}: {total} samples")
    print(f"{'self %':>7} {'total %':>8}  function")
    shown = 0
    for key, n in incl_count.most_common():
        if not everything and "(inosync/" not in key:
            continue
        print(f"{100 * self_count[key] / total:7.1f} {100 * n / total:8.1f}  {key}")
        shown += 1
        if shown >= top:
            break
    print(f"\n{'%':>7}  innermost inosync line (samples there or in what it called)")
    for key, n in line_count.most_common(top):
        print(f"{100 * n / total:7.1f}  {key}")
    if everything:
        print(f"\n{'self %':>7}  any function")
        for key, n in self_count.most_common(top):
            print(f"{100 * n / total:7.1f}  {key}")
    print()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--all", action="store_true", help="list library functions too")
    p.add_argument("--merge", action="store_true", help="one summary for all the files")
    args = p.parse_args(argv)
    profs = [f for f in args.files if f.suffix == ".prof"]
    stacks = [f for f in args.files if f.suffix != ".prof"]
    if args.merge:
        if profs:
            print(f"== {len(profs)} cProfile file(s)")
            stats = pstats.Stats(*(str(f) for f in profs))
            stats.sort_stats("cumulative").print_stats(args.top)
        if stacks:
            summarize_pyspy(stacks, args.top, args.all)
        return 0
    for f in profs:
        print(f"== {f}")
        pstats.Stats(str(f)).sort_stats("cumulative").print_stats(args.top)
    for f in stacks:
        summarize_pyspy([f], args.top, args.all)
    return 0


if __name__ == "__main__":
    sys.exit(main())
