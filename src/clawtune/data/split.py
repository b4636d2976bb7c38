"""Train/validation/test by session: no session in two splits, deterministic by seed, close to the target shares."""

from __future__ import annotations

import hashlib

SPLITS = ("train", "validation", "test")


def assign_splits(counts: dict[str, int], ratios: tuple[float, float, float], seed: int) -> dict[str, str]:
    """Map each session to a split so each split's share of examples approaches its ratio.

    Sessions are visited in a seeded hash order (a fixed shuffle) and each goes to the split furthest below its
    target; a split with a non-zero ratio gets at least one session when there are enough sessions.
    """
    total_ratio = sum(ratios)
    targets = [r / total_ratio for r in ratios]
    order = sorted(counts, key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).digest())
    have = [0, 0, 0]
    out: dict[str, str] = {}
    for i, session in enumerate(order):
        remaining = len(order) - i
        empty = [k for k in range(3) if targets[k] > 0 and have[k] == 0]
        if empty and remaining <= len(empty):
            k = empty[0]
        else:
            done = sum(have) + counts[session]
            k = max(range(3), key=lambda j: (targets[j] * done - have[j], -j))
        have[k] += counts[session]
        out[session] = SPLITS[k]
    return out
