"""Summarise a py-spy raw profile (``py-spy record -f raw``): the frames with the
most samples of their own, and the most samples including their callees.

    python scripts/profile-summary.py profile.txt [TOP_SELF] [TOP_INCLUSIVE]
"""

from __future__ import annotations

import sys
from collections import Counter


def main(path: str, top_self: int = 30, top_inclusive: int = 45) -> None:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            n = int(count)
            total += n
            frames = stack.split(";")
            own[frames[-1]] += n
            for frame in set(frames):
                inclusive[frame] += n
    print("total", total)
    print("--- self")
    for frame, n in own.most_common(top_self):
        print(f"{100 * n / total:5.1f}% {frame[:150]}")
    print("--- inclusive")
    for frame, n in inclusive.most_common(top_inclusive):
        print(f"{100 * n / total:5.1f}% {frame[:150]}")


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:4]))
