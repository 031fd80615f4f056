"""Algorithms by name. Each module holds one algorithm: its config dataclass (defaults from the
paper, help text citing it) and its step recipe, composed from `dcrl.core`. aepo, dcpo and icr are
presets of `composed` (GRPO plus target distributions, `dcrl.targets`) with one target each.

>>> sorted(ALGORITHMS)[:3]
['aepo', 'clip_cov', 'clip_higher']
"""

from __future__ import annotations

import importlib

from dcrl.algorithms.base import Algorithm, AlgorithmConfig, StepContext, TrainBatch

# name -> module; a module is imported only when its algorithm is asked for.
ALGORITHMS: dict[str, str] = {
    "grpo": "dcrl.algorithms.grpo",
    "aepo": "dcrl.algorithms.aepo",
    "dcpo": "dcrl.algorithms.dcpo",
    "icr": "dcrl.algorithms.icr",
    "entropy_reg": "dcrl.algorithms.entropy_reg",
    "entropy_adv": "dcrl.algorithms.entropy_adv",
    "clip_cov": "dcrl.algorithms.clip_cov",
    "kl_cov": "dcrl.algorithms.kl_cov",
    "clip_higher": "dcrl.algorithms.clip_higher",
    "lp_f": "dcrl.algorithms.lp_f",
    "kimi": "dcrl.algorithms.kimi",
    "shorter_better": "dcrl.algorithms.shorter_better",
    # GRPO plus a list of target distributions (dcrl.targets): aepo, dcpo, icr, best_of_n, yours
    "composed": "dcrl.algorithms.composed",
}


def get_algorithm_class(name: str) -> type[Algorithm]:
    """The Algorithm subclass registered under `name`."""
    if name not in ALGORITHMS:
        raise ValueError(
            f"unknown algorithm {name!r}; choose one of {', '.join(sorted(ALGORITHMS))}"
        )
    module = importlib.import_module(ALGORITHMS[name])
    return module.ALGORITHM


def make_algorithm(config: AlgorithmConfig) -> Algorithm:
    """Instantiate the algorithm that `config.name` names."""
    return get_algorithm_class(config.name)(config)


__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "AlgorithmConfig",
    "StepContext",
    "TrainBatch",
    "get_algorithm_class",
    "make_algorithm",
]
