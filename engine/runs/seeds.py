"""Seeds: one configuration trained K times with seeds S..S+K-1, so a difference can be told from luck.

Two runs of the same configuration with different seeds start from different weights and
see the batches in a different order, and their final accuracies differ by a few tenths of
a point. Repeating a configuration with K seeds measures that noise (engine.runs.compare
turns it into a verdict).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from engine.config import MAX_SEED, TrainConfig
from engine.errors import ConfigError

MAX_SEEDS = 100  # runs per configuration; more is almost surely a typo on a CPU
RECOMMENDED_SEEDS = 3  # the fewest that give a spread (and a t-test) worth reading


def check_seeds(k: int, start: int = 0) -> int:
    """`k` when it is a whole number from 1 to MAX_SEEDS and seeds start..start+k-1 all exist."""
    if isinstance(k, bool) or not isinstance(k, int):
        raise ConfigError(f"seeds (runs per configuration) must be a whole number from 1 to {MAX_SEEDS}, got {k!r}")
    if not 1 <= k <= MAX_SEEDS:
        raise ConfigError(f"seeds (runs per configuration) must be from 1 to {MAX_SEEDS}, got {k}")
    if isinstance(start, int) and start + k - 1 > MAX_SEED:
        raise ConfigError(
            f"{k} seeds from seed {start} go past the largest seed, {MAX_SEED}; "
            f"start from seed {MAX_SEED - k + 1} or lower"
        )
    return k


def expand_seeds(config: TrainConfig, k: int) -> list[TrainConfig]:
    """`config` repeated with seeds config.seed .. config.seed + k - 1 (k=1: just `config`)."""
    check_seeds(k, config.seed)
    return [config.replace(seed=config.seed + i) for i in range(k)]


def with_seeds(configs: Sequence[TrainConfig], k: int) -> list[TrainConfig]:
    """Every config expanded to k seeds, in order, duplicates dropped (seeds 0,1 with k=2 give 0,1,2)."""
    seen, out = set(), []
    for config in configs:
        for seeded in expand_seeds(config, k):
            key = json.dumps(seeded.to_dict(), sort_keys=True)
            if key not in seen:
                seen.add(key)
                out.append(seeded)
    return out
