"""What every target shares: its config and the class a target (built in or a user's)
subclasses. The contract is in the package docstring; the step's data types (`StepDraft`,
`StepContext`, `TrainBatch`) live one layer below, in dcrl.step_data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from dcrl.config import field
from dcrl.core.control import ControlDecision, EntropyController
from dcrl.step_data import AlgorithmConfig, StepContext, StepDraft, TrainBatch
from dcrl.targets.entropy_control import EntropyControl, EntropyControlFields

# The order the composition applies the targets in, by what they change (package docstring).
Stage = Literal["bonus", "mix", "replace"]
STAGES: tuple[Stage, ...] = ("bonus", "mix", "replace")


@dataclass
class TargetConfig:
    """A target's settings; subclasses add theirs (each with its default and help text)."""

    name: str = field(
        help="The target: a name in the registry dcrl.targets.TARGETS (an unknown name's error "
        "lists them all), or 'package.module:Class' of your own."
    )

    def validate(self) -> None:
        """Raise ValueError('<field> ...: <problem>; <fix>') on a bad setting."""


class Target:
    """A target distribution: REINFORCE toward it, written into the step's draft.

    Subclasses set `name` and `config_class` and override the hooks they use (package
    docstring): `shape_rewards` (with `shapes_rewards = True`), `apply` (by its `stage`),
    `loss_term` (with `needs_entropy_grad` when it differentiates the entropy), `after_update`,
    `state_dict` / `load_state_dict`.
    """

    name: ClassVar[str] = "target"
    config_class: ClassVar[type[TargetConfig]] = TargetConfig
    stage: ClassVar[Stage] = "bonus"
    shapes_rewards: ClassVar[bool] = False  # True: `shape_rewards` may change the reward
    controls_entropy: ClassVar[bool] = False  # True: owns an entropy controller
    # The extras column, (N,) bool, that marks rows this target swapped in from another
    # distribution (AEPO's tempered rows): not the policy's own samples, so the entropy the
    # controllers read leaves them out. None: the target keeps the policy's rows.
    foreign_rows: ClassVar[str | None] = None
    # Titles of the metrics it logs, for the report's panels ({metric: title}); a class's add to
    # its bases'. A logged metric without one is titled by its name.
    metric_labels: ClassVar[dict[str, str]] = {}

    def __init__(self, config: TargetConfig, base: AlgorithmConfig) -> None:
        self.config = config
        self.base = base  # the base estimator's settings (advantage_std, loss_agg_mode, ...)

    def shape_rewards(self, batch: Any, rewards: torch.Tensor) -> torch.Tensor:
        """The reward the base estimator normalizes, (N,) -> (N,); unchanged by default."""
        return rewards

    def apply(self, draft: StepDraft, ctx: StepContext) -> dict[str, float]:
        """Write this target's REINFORCE term into `draft`; return its metrics. By default the
        draft is left as it is (a target that only shapes the reward or adds a loss term)."""
        return {}

    @property
    def needs_entropy_grad(self) -> bool:
        """Whether `loss_term` differentiates the entropy (the trainer then keeps its graph)."""
        return False

    def loss_term(
        self,
        mb: TrainBatch,
        logprobs: torch.Tensor,
        entropy: torch.Tensor | None,
        counts: dict[str, float],
    ) -> tuple[torch.Tensor | None, dict[str, float]]:
        """A term added to the policy loss of a micro-batch (an entropy bonus), normalized by the
        mini-batch's `counts`; (None, {}) by default. Arguments as `Algorithm.loss`'s."""
        return None, {}

    def after_update(self, metrics: dict[str, float]) -> None:
        """Called once per step with the update's metrics (a controller reads its entropy)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def adds_loss_term(target: Target) -> bool:
    """Whether the target overrides `loss_term` (adds to the policy loss)."""
    return type(target).loss_term is not Target.loss_term


def edits_draft(target: Target) -> bool:
    """Whether the target overrides `apply` (edits advantages or rows), rather than only shaping
    the reward or adding a loss term."""
    return type(target).apply is not Target.apply


class ControlledTarget(Target):
    """A target whose temperature (and optionally strength) an entropy controller sets; its
    config mixes in `EntropyControlFields`, and its state is the controller's."""

    controls_entropy = True
    metric_labels = {"control/temperature": "temperature T", "control/weight": "controller weight"}

    def __init__(self, config: TargetConfig, base: AlgorithmConfig) -> None:
        super().__init__(config, base)
        assert isinstance(config, EntropyControlFields)
        self.control = EntropyControl(config)

    @property
    def controller(self) -> EntropyController:
        return self.control.controller

    def decide(self) -> tuple[ControlDecision, dict[str, float]]:
        """This step's decision (no side effects) and its control/* metrics."""
        return self.control.decide()

    def after_update(self, metrics: dict[str, float]) -> None:
        self.control.after_update(metrics)

    def state_dict(self) -> dict[str, Any]:
        return self.control.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.control.load_state_dict(state)
