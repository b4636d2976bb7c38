"""Rebuild the bundled `clawtune/tiny-agent` model: tokenizer, weights, general pre-training (about 23 minutes on
2 CPU cores; run once, the result is committed)."""

from __future__ import annotations

import argparse
from pathlib import Path

from clawtune.models import BUNDLED, TINY_AGENT
from clawtune.models.tiny import build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=BUNDLED[TINY_AGENT])
    parser.add_argument("--pretrain", type=int, default=10000, help="general conversations to pre-train on")
    parser.add_argument("--epochs", type=float, default=2)
    args = parser.parse_args()
    out = build(args.output, pretrain=args.pretrain, pretrain_epochs=args.epochs)
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"wrote {out} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
