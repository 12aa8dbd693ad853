"""The ``amal`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="amal",
        description="amal_verified: auxiliary agents explore; world models learn from primary data only.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="show the gate refusing leaks and accepting clean world-model updates"
    )
    demo.add_argument("--seed", type=int, default=0, help="seed for data collection and initialisation")
    args = parser.parse_args(argv)

    import torch

    from amal_verified.demo import run_demo

    torch.set_num_threads(min(2, torch.get_num_threads()))
    return 0 if run_demo(seed=args.seed) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
