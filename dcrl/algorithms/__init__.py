"""Algorithms by name. Every one is GRPO (dcrl.algorithms.base: the algorithm, its settings and
the stage order of its targets) plus at most one fixed target, configured by one flat config (a
preset, dcrl.algorithms.base.Preset), or GRPO plus the list of targets its config names
(`composed`). Where each name's config and `ALGORITHM` live:

    grpo, clip_higher              here, dcrl/algorithms/: GRPO's settings only (clip_higher:
                                   clip_high 0.28)
    clip_cov, kl_cov               here, dcrl/algorithms/: their policy loss (dcrl.core.losses)
    aepo, dcpo, icr                dcrl/targets/<name>.py, the whole method in one file: its
    lp_f, kimi, shorter_better     settings, its target, and the preset at the bottom
    entropy_adv, entropy_reg
    composed                       here, dcrl/algorithms/composed.py

>>> sorted(ALGORITHMS)[:3]
['aepo', 'clip_cov', 'clip_higher']
"""

from __future__ import annotations

import importlib

from dcrl.algorithms.base import Algorithm, AlgorithmConfig, own_name
from dcrl.step_data import StepContext, TrainBatch

# name -> module holding its config and `ALGORITHM`; a module is imported only when asked for.
ALGORITHMS: dict[str, str] = {
    "grpo": "dcrl.algorithms.grpo",
    "aepo": "dcrl.targets.aepo",
    "dcpo": "dcrl.targets.dcpo",
    "icr": "dcrl.targets.icr",
    "entropy_reg": "dcrl.targets.entropy_reg",
    "entropy_adv": "dcrl.targets.entropy_adv",
    "clip_cov": "dcrl.algorithms.clip_cov",
    "kl_cov": "dcrl.algorithms.kl_cov",
    "clip_higher": "dcrl.algorithms.clip_higher",
    "lp_f": "dcrl.targets.lp_f",
    "kimi": "dcrl.targets.kimi",
    "shorter_better": "dcrl.targets.shorter_better",
    # GRPO plus a list of targets (dcrl.targets): aepo, dcpo, icr, best_of_n, ..., yours
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
    """Instantiate the algorithm that `config` configures.

    Raises:
        ValueError: `config.name` is not the name its class configures (`DCPOConfig(name=
            "grpo")`), or the config is not of the class the named algorithm reads
            (`AlgorithmConfig(name="dcpo")`): either would build another method than asked.
    """
    algorithm_class = get_algorithm_class(config.name)
    expected = algorithm_class.config_class
    if not isinstance(config, expected) or own_name(type(config)) != config.name:
        given = type(config).__name__
        raise ValueError(
            f"{given}(name={config.name!r}) cannot build algorithm {config.name!r}: that "
            f"algorithm reads a {expected.__name__}, and a {given} configures "
            f"{own_name(type(config))!r}; build the config of the algorithm you mean "
            "(dcrl.algorithms.get_algorithm_class(name).config_class()) and leave its name as it is"
        )
    return algorithm_class(config)


__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "AlgorithmConfig",
    "StepContext",
    "TrainBatch",
    "get_algorithm_class",
    "make_algorithm",
]
