"""Composed: a base estimator (GRPO) plus a list of target distributions (dcrl.targets), e.g.
DCPO's entropy control with ICR's compression in one run, the targets named in the config. Every
other algorithm name is a `Preset` (dcrl.algorithms.base): GRPO plus at most one fixed target,
configured by one flat config (a method's file in dcrl/targets/ ends with its preset).

The stage order the targets are applied in is `Algorithm.prepare`'s (dcrl.algorithms.base). At
most one entropy-controlled target (aepo or dcpo): two controllers would fight over one entropy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dcrl.algorithms.base import Algorithm, AlgorithmConfig
from dcrl.config import field
from dcrl.targets import Target, build_target_configs, get_target_class


@dataclass
class ComposedConfig(AlgorithmConfig):
    """GRPO's PPO settings (the base estimator) and the targets composed on it."""

    name: str = field("composed", help="Algorithm name (see `dcrl algorithms`).")
    targets: list[dict[str, Any] | str] = field(
        [],
        help="Target distributions, each a name or {name: ..., <its settings>}: aepo, dcpo, icr, "
        "best_of_n, lp_f, kimi, shorter_better, entropy_adv, entropy_reg, or "
        "'package.module:Class' (dcrl/targets/__init__.py has the contract). Applied bonus → mix "
        "→ replace whatever the list order (dcrl.algorithms.base).",
    )

    def validate(self) -> None:
        super().validate()
        build_target_configs(self.targets)


class Composed(Algorithm):
    """GRPO plus the config's targets; its checkpoint state is {"targets": [one per target]}."""

    name = "composed"
    config_class = ComposedConfig

    def __init__(self, config: AlgorithmConfig, targets: list[Target] | None = None) -> None:
        if targets is None:
            configs = build_target_configs(config.targets)  # type: ignore[attr-defined]
            targets = [get_target_class(c.name)(c, config) for c in configs]
        super().__init__(config, targets)


ALGORITHM = Composed

__all__ = ["ALGORITHM", "Composed", "ComposedConfig"]
