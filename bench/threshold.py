"""Where a whole-tree rsync gets cheaper than a --files-from list.

    python bench/threshold.py [--files 50000] [--dir DIR]

Builds a tree of small files (on DIR, ideally a tmpfs), changes N random
files for growing N, and times, from the same starting replica, inosync's
list run (``rsync -a -r --delete --delete-missing-args --from0
--files-from``) against one whole-tree ``rsync -a --delete``. Prints the
times and the ratio N / tree size where the whole tree starts to win; that
ratio is what ``inosync.daemon.full_sync_above`` uses.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import tempfile
import time

RSYNC = shutil.which("rsync") or "/usr/bin/rsync"


def build(src: str, files: int, per_dir: int = 250) -> list[str]:
    names = []
    for i in range(files):
        rel = f"d{i // per_dir}/f{i % per_dir}"
        os.makedirs(os.path.join(src, os.path.dirname(rel)), exist_ok=True)
        with open(os.path.join(src, rel), "wb") as f:
            f.write(b"x" * 512)
        names.append(rel)
    return names


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure(work: str, names: list[str], n: int, rng: random.Random) -> tuple[float, float]:
    src, base = os.path.join(work, "src"), os.path.join(work, "base")
    changed = rng.sample(names, n)
    for rel in changed:
        with open(os.path.join(src, rel), "ab") as f:
            f.write(b"y")
    listing = os.path.join(work, "files-from")
    with open(listing, "wb") as f:
        f.write(b"".join(os.fsencode(p) + b"\0" for p in changed))
    times = []
    for kind in ("list", "full"):
        dst = os.path.join(work, kind)
        shutil.rmtree(dst, ignore_errors=True)
        subprocess.run(["cp", "-a", base, dst], check=True)
        extra = ["--delete-missing-args", "--from0", f"--files-from={listing}"]
        argv = [RSYNC, "-a", "-r", "--delete", *(extra if kind == "list" else []),
                f"{src}/", f"{dst}/"]
        times.append(timed(argv))
    subprocess.run([RSYNC, "-a", "--delete", f"{src}/", f"{base}/"], check=True)
    return times[0], times[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=50_000)
    p.add_argument("--dir", default=None, help="work directory (default: a new tmp dir)")
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="inosync-threshold-", dir=args.dir)
    try:
        names = build(os.path.join(work, "src"), args.files)
        subprocess.run([RSYNC, "-a", f"{work}/src/", f"{work}/base/"], check=True)
        rng = random.Random(1)
        crossover = None
        print(f"tree: {args.files} files")
        for fraction in (0.002, 0.01, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5):
            n = max(1, int(args.files * fraction))
            listed, full = measure(work, names, n, rng)
            print(f"{n:>7} changed ({fraction:>5.1%}): list {listed:6.3f} s   "
                  f"whole tree {full:6.3f} s")
            if crossover is None and full < listed:
                crossover = fraction
        print(f"whole tree wins from about {crossover:.0%} of the tree" if crossover
              else "the list won everywhere")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
