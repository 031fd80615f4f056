"""The entropy-control settings AEPO and DCPO share: a target entropy, the controller that picks
this step's temperature from the previous step's entropy, and which entropy feeds it.

`EntropyControlFields` holds the fields, their validation and help text once; the `aepo` and
`dcpo` targets and their presets (dcrl.algorithms: AEPOConfig, DCPOConfig) all mix it in.
`EntropyControl` is the controller a target owns: decide before the step, update after it, and
the state a checkpoint keeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from dcrl.config import field
from dcrl.core.control import ControlDecision, EntropyController, make_controller

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
    """The controller's settings, mixed into a target's or an algorithm's config (which supplies
    the `validate` this one extends)."""

    target_entropy: float = field(
        0.5,
        ge=0,
        le=100,
        help="Target entropy 𝓗 in nats/token (papers: 0.25–1.0; 0.5 in the released scripts).",
    )
    controller: Literal["bang_bang", "pi", "adaptive"] = field(
        "bang_bang",
        help="bang_bang: the papers' rule, T_high if H_prev ≤ 𝓗 else T_low; pi: dcrl's smoother "
        "proportional-integral temperature (an extension); adaptive: the authors' later "
        "continuous T = clip(1 + (𝓗 − H)) (docs/papers.md §2.5).",
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
        "entropy_smoothing, gain_reference (the gains scale with target/gain_reference); "
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
    entropy_signal: Literal["sampled_nll", "on_policy_nll", "full"] = field(
        "sampled_nll",
        help="What the controller measures: sampled_nll, the sampled-token NLL of the whole "
        "update batch (the papers' `actor/entropy_loss`, docs/papers.md §1.2; with AEPO it includes "
        "the tempered REINFORCE rows, so the control input moves its own measurement); "
        "on_policy_nll, the same without those rows (dcrl: the policy's own entropy; equal to "
        "sampled_nll for DCPO); full, the full-vocabulary entropy of the whole batch.",
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


class EntropyControl:
    """The entropy controller a target owns (its state is checkpointed)."""

    def __init__(self, config: EntropyControlFields) -> None:
        self.signal = config.entropy_signal
        self.controller = config.make_controller()

    def decide(self) -> tuple[ControlDecision, dict[str, float]]:
        decision = self.controller.decide()
        metrics = {
            "control/temperature": decision.temperature,
            "entropy/target": decision.target_entropy,
            "control/previous_entropy": decision.previous_entropy,
        }
        if decision.weight is not None:
            metrics["control/weight"] = decision.weight
        return decision, metrics

    def after_update(self, metrics: dict[str, float]) -> None:
        self.controller.update(metrics[f"entropy/{self.signal}"])

    def state_dict(self) -> dict[str, Any]:
        return {"controller": self.controller.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.controller.load_state_dict(state["controller"])
