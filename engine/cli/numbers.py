"""argparse types for numeric flags: NaN, infinities and out-of-range values are refused in one line.

    p.add_argument("--poll", type=real(above=0, high=3600))   # "error: argument --poll: must be a
                                                                #  finite number > 0 and <= 3600, got 'nan'"
argparse turns the ArgumentTypeError into a usage error, which the engine's parser prints as one
line on stderr with exit code 2. Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def _range(low: float | None, high: float | None, above: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if above else '>='} {low:g}")
    if high is not None:
        parts.append(f"<= {high:g}")
    return " and ".join(parts)


def real(low: float | None = None, high: float | None = None, *, above: float | None = None) -> Callable[[str], float]:
    """A finite number >= low (or > above) and <= high."""
    if above is not None:
        low = above
    wanted = "a finite number" + (
        f" {_range(low, high, above is not None)}" if low is not None or high is not None else ""
    )

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
        if (
            not math.isfinite(value)
            or (low is not None and (value <= low if above is not None else value < low))
            or (high is not None and value > high)
        ):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
        return value

    parse.__name__ = "number"  # argparse names the type in its own messages
    return parse


def whole(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An integer from low to high (either may be open)."""
    if low is not None and high is not None:
        wanted = f"an integer from {low:,} to {high:,}"
    elif low is not None:
        wanted = f"an integer >= {low:,}"
    elif high is not None:
        wanted = f"an integer <= {high:,}"
    else:
        wanted = "an integer"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
        return value

    parse.__name__ = "integer"
    return parse
