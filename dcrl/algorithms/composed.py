"""Composed: a base estimator (GRPO) plus a list of target distributions (dcrl.targets), e.g.
DCPO's entropy control with ICR's compression in one run, the targets named in the config; and
`Preset`, what every other algorithm name is: GRPO plus at most one fixed target, configured by
one flat config.

The stage order the targets are applied in is `Algorithm.prepare`'s (dcrl.algorithms.base). At
most one entropy-controlled target (aepo or dcpo): two controllers would fight over one entropy.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

from dcrl.algorithms.base import Algorithm, AlgorithmConfig, add_metrics
from dcrl.config import field
from dcrl.targets import Target, TargetConfig, build_target_configs, get_target_class


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


class Preset(Algorithm):
    """An algorithm name that is GRPO plus at most one target (`target_class`, None for GRPO
    itself and the policy-loss choices), configured by one flat config: the target's settings
    beside the PPO ones. Its checkpoint state is the target's own (the layout of the algorithms
    before the targets existed), plus the policy loss's random source if it has one."""

    target_class: ClassVar[type[Target] | None] = None

    def __init__(self, config: AlgorithmConfig) -> None:
        targets = []
        if self.target_class is not None:
            config_class = self.target_class.config_class
            target_fields = [f.name for f in fields(config_class) if f.init and f.name != "name"]
            settings = {name: getattr(config, name) for name in target_fields}
            target_config: TargetConfig = config_class(name=self.target_class.name, **settings)
            targets.append(self.target_class(target_config, config))
        super().__init__(config, targets)

    @property
    def target(self) -> Target:
        return self.targets[0]

    @property
    def controller(self) -> Any:
        """The target's entropy controller (aepo, dcpo); the verl and TRL adapters read it."""
        return self.target.controller  # type: ignore[attr-defined]

    def decide(self) -> Any:
        """The controller's decision for this step and its metrics (aepo, dcpo)."""
        return self.target.decide()  # type: ignore[attr-defined]

    def state_dict(self) -> dict[str, Any]:
        state = self.target.state_dict() if self.targets else {}
        return {**state, **self.loss_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.targets:
            self.target.load_state_dict(state)
        self.load_loss_state(state)


ALGORITHM = Composed

__all__ = ["ALGORITHM", "Composed", "ComposedConfig", "Preset", "add_metrics"]
