"""Algorithms by name: GRPO (the base estimator, dcrl.algorithms.base) plus targets
(dcrl.targets), and a table of named presets. Each name's module holds its config dataclass
(GRPO's PPO settings, its own `name`, and the settings of its target or policy loss, defaults
from the paper, help text citing it) and a `Preset` naming its target:

    grpo, clip_higher              no target (clip_higher: clip_high 0.28)
    clip_cov, kl_cov               no target; their policy loss (dcrl.core.losses)
    aepo, dcpo, icr                the target of the same name
    lp_f, kimi, shorter_better     a reward-shaping target
    entropy_adv                    an advantage-editing target
    entropy_reg                    a loss-term target
    composed                       the targets listed in its config

>>> sorted(ALGORITHMS)[:3]
['aepo', 'clip_cov', 'clip_higher']
"""

from __future__ import annotations

import importlib

from dcrl.algorithms.base import Algorithm
from dcrl.step_data import AlgorithmConfig, StepContext, TrainBatch, own_name

# name -> module holding its config and `ALGORITHM`; a module is imported only when asked for.
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
