"""Summarise a py-spy ``--format raw`` profile (collapsed stacks) by function.

``python bench/hotspots.py FILE [--top N]`` prints self and inclusive shares of the samples,
per function and per library, so the costly frames stand out.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def frame_key(frame: str) -> str:
    """``func (path/to/file.py:12)`` -> ``func (file relative to site-packages or repo)``."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['func']} ({path})"


def summarise(text: str) -> tuple[int, Counter[str], Counter[str]]:
    total = 0
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [frame_key(f) for f in stack.split(";") if f and not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        if not frames:
            continue
        total += n
        self_counts[frames[-1]] += n
        for key in set(frames):
            incl_counts[key] += n
    return total, self_counts, incl_counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    total, self_counts, incl_counts = summarise(Path(args.file).read_text())
    if not total:
        print("no samples")
        return
    print(f"{total} samples")
    print(f"\n-- top {args.top} by self time --")
    for key, n in self_counts.most_common(args.top):
        print(f"{100 * n / total:6.1f}%  {key}")
    print(f"\n-- top {args.top} sidecar/ functions by inclusive time --")
    ours = [(k, n) for k, n in incl_counts.items() if "sidecar/" in k]
    for key, n in sorted(ours, key=lambda kv: -kv[1])[: args.top]:
        print(f"{100 * n / total:6.1f}%  {key}")
    print("\n-- self time by library --")
    libs: Counter[str] = Counter()
    for key, n in self_counts.items():
        match = re.search(r"\(([^/)]+)", key)
        libs[match.group(1) if match else key] += n
    for lib, n in libs.most_common(12):
        print(f"{100 * n / total:6.1f}%  {lib}")


if __name__ == "__main__":
    main()
