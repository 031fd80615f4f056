"""What every target shares: its config and the class a target (built in or a user's)
subclasses, and the entropy control AEPO and DCPO share (`EntropyControlFields`, their
controller's settings; `ControlledTarget`, a target that owns a controller). The contract is in
the package docstring; the step's data types (`StepDraft`, `StepContext`, `TrainBatch`) live one
layer below, in dcrl.step_data, and the controllers themselves in dcrl.core.control.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from dcrl.config import field
from dcrl.core.control import ControlDecision, EntropyController, make_controller
from dcrl.step_data import StepContext, StepDraft, TrainBatch

if TYPE_CHECKING:  # a type only: the algorithms sit above the target contract
    from dcrl.algorithms.base import AlgorithmConfig

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

    def after_update(self, metrics: dict[str, float]) -> dict[str, float] | None:
        """Called once per step with the update's metrics (a controller reads its entropy);
        may return metrics of its own to log beside them (None: nothing to add)."""
        return None

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


# Controller arguments that EntropyControlFields sets from a field of its own (make_controller).
SET_BY_FIELDS = {
    "target_entropy": "target_entropy",
    "initial_entropy": "initial_entropy",
    "temperature_high": "temperature_high",
    "temperature_low": "temperature_low",
    "temperature_max": "temperature_high",
    "temperature_min": "temperature_low",
    "weight_max": "weight_max",
}


@dataclass
class EntropyControlFields:
    """The entropy controller's settings, declared once for AEPO and DCPO: mixed into their
    settings, hence into their target's and their preset's config (which supplies the `validate`
    this one extends)."""

    target_entropy: float = field(
        0.5,
        ge=0,
        le=100,
        help="Target entropy 𝓗 in nats/token (0.5 in the released AEPO and DCPO scripts; the "
        "papers try 0.25–1.0, DCPO's best was 0.25).",
    )
    controller: Literal["bang_bang", "pi", "adaptive", "fixed"] = field(
        "bang_bang",
        help="bang_bang: the papers' rule, T_high if H_prev ≤ 𝓗 else T_low; pi: dcrl's smoother "
        "proportional-integral temperature (an extension); adaptive: the authors' later "
        "continuous T = clip(1 + (𝓗 − H)) (docs/papers.md §2.5); fixed: T = temperature_high "
        "every step (or controller_options.temperature), an ablation without feedback; with "
        "controller_options.weight the regularizer's weight is fixed too (an open loop).",
    )
    temperature_high: float = field(
        1.2, gt=1, le=10, help="T when entropy is low (upper bound for pi/adaptive)."
    )
    temperature_low: float = field(
        0.8, gt=0, lt=1, help="T when entropy is high (lower bound for pi/adaptive)."
    )
    initial_entropy: float | None = field(
        0.0,
        ge=0,
        le=100,
        help="H_prev before the first step (0 in the AEPO/DCPO code, 0.5 in ICR's); null = the "
        "target, so that the first step neither heats nor cools.",
    )
    controller_options: dict[str, Any] = field(
        {},
        help="Extra controller settings: pi takes proportional_gain, integral_gain, "
        "entropy_smoothing, gain_reference (the gains scale with target/gain_reference), "
        "derivative_gain (brakes on the entropy's change over the last step), weight_min (a "
        "floor under the weight it sets), target_ramp (steps over which the aim moves from the "
        "first measured entropy to the target), hold_gain (a factor on the proportional gain once "
        "the target is reached), hold_integral (a factor on the integral at that crossing, once), "
        "cooling_weight_max (the weight's cap while cooling; default weight_max); "
        "adaptive takes gain.",
    )
    weight_max: float | None = field(
        None,
        gt=0,
        le=1000,
        help="pi only (dcrl extension): let the controller also set the regularizer's weight, up "
        "to this multiple of the algorithm's full weight (AEPO: max_reinforce rows; DCPO: the α "
        "cap), growing past 1 once T is saturated. null (default, the papers): T only.",
    )
    entropy_signal: Literal["sampled_nll", "on_policy_nll", "full", "on_policy_full"] = field(
        "sampled_nll",
        help="What the controller measures: sampled_nll, the sampled-token NLL of the whole "
        "update batch (the papers' `actor/entropy_loss`, docs/papers.md §1.2; with AEPO it includes "
        "the tempered REINFORCE rows, so the control input moves its own measurement); "
        "on_policy_nll, the same without those rows (dcrl: the policy's own entropy; equal to "
        "sampled_nll for DCPO); full, the full-vocabulary entropy of the whole batch (the same "
        "quantity without the draw of each token: about half the step-to-step noise); "
        "on_policy_full, that without the tempered rows.",
    )

    def validate(self) -> None:
        super().validate()  # type: ignore[misc]  # the config this is mixed into
        if self.weight_max is not None and self.controller != "pi":
            raise ValueError(
                f"weight_max={self.weight_max} needs controller: pi (the papers' "
                f"{self.controller} rule sets T only); set controller=pi or weight_max=null"
            )
        self._check_controller_options()
        try:
            self.make_controller()
        except (TypeError, ValueError) as error:  # the message starts with the setting's name
            setting = str(error).split(" ", 1)[0].split("=", 1)[0]
            if setting in self.controller_options:  # key it where the user set it
                raise ValueError(f"controller_options.{error}") from None
            raise ValueError(str(error)) from None

    def _check_controller_options(self) -> None:
        """Raise a ValueError naming `controller_options.<key>` for a key the controller does
        not take, or one that has a setting of its own here (target_entropy, temperature_high,
        ...), so it cannot be given twice."""
        import inspect

        from dcrl.core.control import CONTROLLERS

        if self.controller not in CONTROLLERS:
            return  # the Literal type already refused it
        takes = list(inspect.signature(CONTROLLERS[self.controller]).parameters)
        own = [name for name in takes if name not in SET_BY_FIELDS]
        for key in self.controller_options:
            if key in SET_BY_FIELDS:
                raise ValueError(
                    f"controller_options.{key}: set it as {SET_BY_FIELDS[key]} (a setting of its "
                    "own, next to controller_options), not inside controller_options"
                )
            if key not in takes:
                offered = f"it takes {', '.join(own)}" if own else "it takes no extra settings"
                raise ValueError(
                    f"controller_options.{key}: the {self.controller} controller has no setting "
                    f"{key!r} ({offered}): remove the key or correct its name"
                )

    def make_controller(self) -> EntropyController:
        if self.controller == "bang_bang":
            bounds = {
                "temperature_high": self.temperature_high,
                "temperature_low": self.temperature_low,
            }
        else:
            bounds = {
                "temperature_max": self.temperature_high,
                "temperature_min": self.temperature_low,
            }
            if self.weight_max is not None:
                bounds["weight_max"] = self.weight_max
        return make_controller(
            self.controller,
            target_entropy=self.target_entropy,
            initial_entropy=(
                self.target_entropy if self.initial_entropy is None else self.initial_entropy
            ),
            **bounds,
            **self.controller_options,
        )


class ControlledTarget(Target):
    """A target whose temperature (and optionally strength) an entropy controller sets: its
    config mixes in `EntropyControlFields`; it decides before the step, the update's entropy
    (`entropy/<entropy_signal>`) moves the controller after it, and its checkpoint state is the
    controller's."""

    controls_entropy = True
    metric_labels = {"control/temperature": "temperature T", "control/weight": "controller weight"}

    def __init__(self, config: TargetConfig, base: AlgorithmConfig) -> None:
        super().__init__(config, base)
        assert isinstance(config, EntropyControlFields)
        self.signal = config.entropy_signal
        self.controller: EntropyController = config.make_controller()

    def decide(self) -> tuple[ControlDecision, dict[str, float]]:
        """This step's decision (no side effects) and its control/* metrics."""
        decision = self.controller.decide()
        metrics = {
            "control/temperature": decision.temperature,
            "entropy/target": decision.target_entropy,
            "control/previous_entropy": decision.previous_entropy,
        }
        if decision.weight is not None:
            metrics["control/weight"] = decision.weight
        return decision, metrics

    def after_update(self, metrics: dict[str, float]) -> dict[str, float] | None:
        self.controller.update(metrics[f"entropy/{self.signal}"])
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"controller": self.controller.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.controller.load_state_dict(state["controller"])
