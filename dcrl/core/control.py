"""Entropy controllers: pick each step's regularizer temperature T from the previous step's entropy.

AEPO and DCPO steer the policy entropy toward a target 𝓗 by taking a REINFORCE term on correct
samples under π^T: hotter (T > 1) raises the entropy, colder (T < 1) lowers it. A controller
turns the entropy measured in the previous step into this step's T — the papers' one-step lag.
Use it as

    decision = controller.decide()        # before the step: T from the previous step's entropy
    ...step with decision.temperature...
    controller.update(measured_entropy)   # after the step: the entropy measured in it

Controllers:
    BangBangController: T = T_high if H_prev ≤ 𝓗 else T_low (1.2 / 0.8). Code-faithful to the
        released AEPO (arXiv 2510.08141; docs/papers.md §2.2) and DCPO (arXiv 2601.12730;
        docs/papers.md §3.2). Step 1 acts on `initial_entropy` = 0 ("below target"); the ICR repo
        used 0.5.
    PIController: a dcrl extension, not in the papers — a clipped proportional-integral rule with
        anti-windup and optional smoothing of the measured entropy.
    AdaptiveTemperatureController: T = clip(1 ± (𝓗 − H_prev), 0.8, 1.2), the continuous rule of
        the authors' later AEPO variants (docs/papers.md §2.5); an ablation, not the released AEPO.
    FixedTemperatureController: the same T every step, whatever the entropy: an ablation that
        takes the temperature's feedback away (DCPO's α still follows |𝓗 − H_prev|).

Every controller's state_dict() holds plain JSON-able values; a controller rebuilt with
`make_controller(state["name"], **state["config"])` and given `load_state_dict(state)` decides
exactly as the original would.
"""

from __future__ import annotations

import abc
import inspect
import math
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class ControlDecision:
    """What one training step should do, decided from the previous step's entropy.

    Attributes:
        temperature: T of the regularizer's target distribution π^T for this step.
        entropy_above_target: previous_entropy > target_entropy (AEPO also halves its number of
            REINFORCE samples when this is true).
        entropy_gap: target_entropy − previous_entropy (> 0: entropy is too low).
        previous_entropy: the entropy the decision acts on — the last measured value (smoothed
            for a PIController with `entropy_smoothing` > 0), or `initial_entropy` before any.
        target_entropy: the target 𝓗.
        weight: the regularizer's strength chosen by the controller, in units of the
            algorithm's own full weight (AEPO: the fraction of `max_reinforce` REINFORCE rows;
            DCPO: the fraction of the α cap), or None to leave it to the algorithm's rule (the
            papers' controllers). Only a PIController with `weight_max` set chooses it.
    """

    temperature: float
    entropy_above_target: bool
    entropy_gap: float
    previous_entropy: float
    target_entropy: float
    weight: float | None = None


def _check_finite(value: float, name: str, *, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return float(value)


def _check_temperature_bounds(low: float, high: float, low_name: str, high_name: str) -> None:
    _check_finite(low, low_name)
    _check_finite(high, high_name)
    if not 0.0 < low < 1.0 < high:
        raise ValueError(
            f"need 0 < {low_name} < 1 < {high_name}, got {low_name}={low}, {high_name}={high}; "
            "a temperature above 1 must raise the entropy and one below 1 lower it "
            "(the papers use 0.8 and 1.2)"
        )


class EntropyController(abc.ABC):
    """Common interface: decide() before a step, update(entropy) after it, and a state_dict.

    Subclasses set `name` (their key in CONTROLLERS), implement `_temperature` and `config`, and
    extend `_dynamic_state` / `_load_dynamic_state` when they keep more state than the last entropy.
    """

    name: ClassVar[str]

    def __init__(self, target_entropy: float, initial_entropy: float) -> None:
        self.target_entropy = _check_finite(target_entropy, "target_entropy", minimum=0.0)
        self.initial_entropy = _check_finite(initial_entropy, "initial_entropy", minimum=0.0)
        self.previous_entropy = self.initial_entropy
        self.num_updates = 0

    @abc.abstractmethod
    def _temperature(self) -> float:
        """This step's T, from the controller's current state (no side effects)."""

    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this controller (JSON-able)."""

    def _weight(self) -> float | None:
        """This step's regularizer weight, or None to leave it to the algorithm (default)."""
        return None

    def _target_now(self) -> float:
        """The target this step's decision aims at: `target_entropy` (a PIController with
        `target_ramp` moves it there gradually)."""
        return self.target_entropy

    def decide(self) -> ControlDecision:
        """What this step should do, from the previous step's entropy. Has no side effects."""
        return ControlDecision(
            temperature=self._temperature(),
            entropy_above_target=self.previous_entropy > self._target_now(),
            entropy_gap=self._target_now() - self.previous_entropy,
            previous_entropy=self.previous_entropy,
            target_entropy=self.target_entropy,
            weight=self._weight(),
        )

    def update(self, measured_entropy: float) -> None:
        """Record the entropy measured in the step that just ran (nats per token)."""
        if hasattr(measured_entropy, "item"):  # a 0-d tensor or numpy scalar
            measured_entropy = measured_entropy.item()
        self.previous_entropy = _check_finite(measured_entropy, "measured_entropy")
        self.num_updates += 1

    def _dynamic_state(self) -> dict[str, Any]:
        return {"previous_entropy": self.previous_entropy, "num_updates": self.num_updates}

    def _load_dynamic_state(self, state: dict[str, Any]) -> None:
        self.previous_entropy = float(state["previous_entropy"])
        self.num_updates = int(state["num_updates"])

    def state_dict(self) -> dict[str, Any]:
        """{"name", "config", "state"}: plain Python values, safe to write as JSON."""
        return {"name": self.name, "config": self.config(), "state": self._dynamic_state()}

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> None:
        """Restore the state saved by `state_dict()`.

        Args:
            state_dict: the dict returned by `state_dict()` (possibly after a JSON round trip).
            strict: require the saved settings (target, temperatures, gains, ...) to equal this
                controller's. With strict=False only the running state (last entropy, integral,
                ...) is loaded and this controller keeps its own settings — e.g. to resume a run
                with a new target entropy.
        """
        if state_dict.get("name") != self.name:
            raise ValueError(
                f"this state_dict belongs to controller {state_dict.get('name')!r}, not "
                f"{self.name!r}; build the controller with "
                "make_controller(state_dict['name'], **state_dict['config']) first"
            )
        if strict:
            saved_config = state_dict["config"]
            mismatched = {
                key: (saved_config.get(key), value)
                for key, value in self.config().items()
                if saved_config.get(key) != value
            }
            if mismatched:
                details = ", ".join(f"{k}: saved {s}, here {h}" for k, (s, h) in mismatched.items())
                raise ValueError(
                    f"the saved {self.name} controller settings differ from this one ({details}); "
                    "rebuild it with make_controller(state_dict['name'], **state_dict['config']), "
                    "or pass strict=False to keep this controller's settings"
                )
        self._load_dynamic_state(state_dict["state"])


class BangBangController(EntropyController):
    """T = temperature_high if H_prev ≤ target else temperature_low (code-faithful AEPO / DCPO).

    Released AEPO (arXiv 2510.08141; docs/papers.md §2.2, §2.4) and DCPO (arXiv 2601.12730;
    docs/papers.md §3.2, §3.4) both use this rule on the previous step's entropy, with ties (H_prev
    == target) counting as "below" and the initial H_prev = 0 so that step 1 heats. The ICR repo
    starts from 0.5 (`initial_entropy=0.5`). Full strength is applied whatever the gap, so with the
    one-step lag the entropy keeps crossing the target: it oscillates around it (docs/papers.md
    §2.7).
    """

    name = "bang_bang"

    def __init__(
        self,
        target_entropy: float,
        temperature_high: float = 1.2,
        temperature_low: float = 0.8,
        initial_entropy: float = 0.0,
    ) -> None:
        super().__init__(target_entropy, initial_entropy)
        _check_temperature_bounds(
            temperature_low, temperature_high, "temperature_low", "temperature_high"
        )
        self.temperature_high = float(temperature_high)
        self.temperature_low = float(temperature_low)

    def _temperature(self) -> float:
        if self.previous_entropy <= self.target_entropy:
            return self.temperature_high
        return self.temperature_low

    def config(self) -> dict[str, Any]:
        return {
            "target_entropy": self.target_entropy,
            "temperature_high": self.temperature_high,
            "temperature_low": self.temperature_low,
            "initial_entropy": self.initial_entropy,
        }


class PIController(EntropyController):
    """Continuous T = clip(1 + k_p·gap + k_i·Σgap, T_min, T_max), gap = target − H (dcrl extension).

    Not in the papers. The bang-bang rule applies its full ±0.2 whatever the gap, and acts one step
    late, so each step overshoots by about the full effect of one step and the entropy keeps
    crossing the target. Here the proportional action shrinks as the gap closes, so the entropy
    settles instead of cycling; the integral term supplies the steady T ≠ 1 needed to cancel a
    persistent drift (e.g. GRPO's entropy collapse) without a standing error. The proportional
    term alone would leave gap = drift / (g·k_p) for a plant that moves g nats per unit of (T − 1).

    Anti-windup (conditional integration): a new gap is added to the integral unless the output
    is already saturated in the direction that gap pushes it, so the integral never grows while
    clipped and T leaves the bound as soon as the entropy comes back.

    Optional smoothing: with `entropy_smoothing` β > 0 the controller acts on an exponential
    moving average H̄ ← β·H̄ + (1 − β)·H_measured (the first measurement initialises H̄), which
    filters sampling noise in the entropy estimate at the price of extra lag. Off by default.

    Defaults: bounds 0.8 / 1.2 as in the papers; k_p = 2 saturates T at a gap of 0.1 nats (the DCPO
    α cap, docs/papers.md §3.2, also saturates at 0.1); k_i = 0.2 cancels a steady drift. On the toy
    plant of tests/test_core_control.py (H ← H + g·(T − 1) − drift) the loop settles without
    overshoot for g up to about 0.5 nats per unit of (T − 1) per step and goes unstable near
    g·k_p = 2; lower k_p if the entropy of your run reacts that strongly to T.

    Tuning with weight authority: a step's regularizer moves the entropy's *rate*, not its level
    (the plant integrates), so a proportional term does most of the work and a large integral
    only winds up during the approach and overshoots after it. With g the entropy change per
    step per unit of effort (heating with T_max = 2, the weight equals the effort), the
    one-step-late loop H_{t+1} = H_t + g·k_p·(𝓗 − H_{t−1}) is critically damped at g·k_p ≈ 0.25
    and unstable beyond 1. On tiny-overthink DCPO moves about g ≈ 0.001 nats per step per unit
    of weight, hence the recipes' k_p = 400 with a small k_i = 10 for GRPO's steady drift.

    Authority over the regularizer's weight (`weight_max`, off by default): the papers' rules
    act on T only, so once T sits at its bound the regularizer cannot push harder and a strong
    drift (GRPO's collapse) wins. With `weight_max` = w_max the controller also sets the weight:
    with e = k_p·gap + k_i·Σgap the effort and e_sat the effort that saturates T in its direction
    (T_max − 1 or 1 − T_min), weight = min(|e| / e_sat, w_max). Below saturation the weight
    rises with T (no push, no weight); beyond it the weight keeps growing up to w_max. The
    anti-windup then freezes the integral only once both T and the weight are at their bounds.

    Derivative action (`derivative_gain` k_d, off by default): e gains −k_d·ΔH̄, ΔH̄ the change of the
    (smoothed) measured entropy over the last step. A step's push keeps moving the entropy for
    several steps after it (AdamW's momentum carries the update on), so a loop that reacts only to
    the gap is still pushing when the entropy reaches the target and overshoots; the derivative
    term eases off while the entropy is already moving toward the target and brakes a swing
    before the gap shows it (k_d / k_p is how many steps ahead the gap is extrapolated).

    A floor under the weight (`weight_min`, 0 by default): below saturation T − 1 and the weight
    both grow with e, so the push (their product, for a regularizer that vanishes at T = 1)
    grows as e²: small gaps get almost no push and large ones a hard kick, and the loop moves in
    jolts. With weight_min = 1 the push is linear in e until T saturates (the regularizer at
    T = 1 adds nothing: DCPO's centred c·(ρ − 1) is 0 there, AEPO's centred REINFORCE rows cancel
    in expectation).

    A ramped target (`target_ramp` N, 0 = off): the loop aims at the first measured entropy
    moved linearly to the target over N steps, then at the target. A far target asks for the
    largest push at the start; the push keeps acting after the loop eases off (the same carry as
    above), so a straight approach overshoots and the hold starts with a swing back. Along a ramp
    the gap stays small and the entropy arrives at the pace the ramp sets.

    Gain scheduling (`gain_reference`, off by default): with `gain_reference` = H_ref both gains
    act as k·𝓗/H_ref, so they are the given values at the target H_ref and scale with the target.
    A sampled entropy's noise is about constant in nats while a tracking tolerance is relative to
    the target, and holding a high target against a drift takes more sustained push than holding
    a low one; on tiny-explore one set of gains tuned at 1.4× the start oscillates on noise at
    0.6×, and one tuned at 0.6× heats too slowly for 1.4× (bench/README.md, "Control over a
    range").

    A gentler hold (`hold_gain` f, 1 = off): once the loop has reached its target (the ramp, if
    any, finished and the smoothed entropy at or past the target, seen from where it started) the
    proportional (and derivative) gain is multiplied by f for the rest of the run; the integral
    term is left as it is, so the steady push it has built and its answer to a standing error are
    kept. A policy whose entropy sits at a fork can barely move while the push builds and then
    move at once when the fork opens: the plant's response per unit of push is far larger after
    the approach than during it, so a proportional gain high enough to leave the flat start swings
    T between its bounds on measurement noise once the target is reached. On tiny-explore it did
    not help on the seeds that judged it: the integral built during a long approach then pushes
    past the target with less proportional action to answer it (bench/README.md, "Control over a
    range", cause 5), so the bench's range settings leave it off.

    A cap on the cooling weight (`cooling_weight_max`, default `weight_max`): the weight is
    counted from the bound T heads for, and T = 1 is five times nearer 0.8 than 2, so a cooling
    effort reaches a given weight at a fifth of the gap a heating one needs; GRPO cools by itself
    as well. Where a cooling row pushes hard (AEPO's REINFORCE rows at T < 1: sharp correct
    answers, plentiful once the policy is accurate) the loop then cools far harder than it heats,
    crashes the entropy below a high target and heats back: a relay. A lower cap bounds the
    cooling push alone; heating keeps `weight_max`. On tiny-explore a cap of 3 did not steady
    AEPO at 1.4× its start (its heating jumps as well: bench/README.md, "Control over a range",
    cause 9), so the bench's range settings leave it off.

    `hold_integral` f (1 = off) acts on that cause instead: at the step the target is first
    reached the integral is multiplied by f, once (0 = emptied), so the push built while the
    entropy sat flat does not keep driving it past the target; the integral then builds anew
    from the errors of the hold. On tiny-explore it held no more targets above the start on the
    seeds that chose between settings (bench/README.md, "Control over a range", cause 6), so
    the bench's range settings leave it off too.
    """

    name = "pi"

    def __init__(
        self,
        target_entropy: float,
        proportional_gain: float = 2.0,
        integral_gain: float = 0.2,
        temperature_min: float = 0.8,
        temperature_max: float = 1.2,
        entropy_smoothing: float = 0.0,
        initial_entropy: float = 0.0,
        weight_max: float | None = None,
        gain_reference: float | None = None,
        derivative_gain: float = 0.0,
        weight_min: float = 0.0,
        target_ramp: int = 0,
        hold_gain: float = 1.0,
        hold_integral: float = 1.0,
        cooling_weight_max: float | None = None,
    ) -> None:
        super().__init__(target_entropy, initial_entropy)
        self.hold_gain = _check_finite(hold_gain, "hold_gain")
        if not 0.0 < self.hold_gain <= 1.0:
            raise ValueError(
                f"hold_gain must be in (0, 1] (the factor on the proportional gain once the "
                f"target is reached; 1 = the same gain throughout), got {hold_gain}"
            )
        self.hold_integral = _check_finite(hold_integral, "hold_integral")
        if not 0.0 <= self.hold_integral <= 1.0:
            raise ValueError(
                f"hold_integral must be in [0, 1] (the factor on the integral at the step the "
                f"target is first reached; 0 = reset it, 1 = keep it), got {hold_integral}"
            )
        self.holding = False  # whether the target has been reached (hold_gain, hold_integral)
        if isinstance(target_ramp, bool) or not isinstance(target_ramp, int) or target_ramp < 0:
            raise ValueError(
                f"target_ramp must be a whole number of steps >= 0 (0 = aim at the target from "
                f"the first step), got {target_ramp!r}"
            )
        self.target_ramp = target_ramp
        self.ramp_start: float | None = None  # the first measured entropy (the ramp's start)
        self.derivative_gain = _check_finite(derivative_gain, "derivative_gain", minimum=0.0)
        self.weight_min = _check_finite(weight_min, "weight_min", minimum=0.0)
        if gain_reference is not None:
            gain_reference = _check_finite(gain_reference, "gain_reference")
            if gain_reference <= 0.0:
                raise ValueError(
                    f"gain_reference must be > 0 (the target entropy at which the gains are "
                    f"the given values; null: no scheduling), got {gain_reference}"
                )
        self.gain_reference = gain_reference
        if weight_max is not None:
            weight_max = _check_finite(weight_max, "weight_max")
            if weight_max < 1.0:
                raise ValueError(
                    f"weight_max must be >= 1 (1 = the algorithm's full weight at saturated T; "
                    f"null leaves the weight to the algorithm), got {weight_max}"
                )
        self.weight_max = weight_max
        if cooling_weight_max is not None:
            cooling_weight_max = _check_finite(cooling_weight_max, "cooling_weight_max")
            if weight_max is None or not 1.0 <= cooling_weight_max <= weight_max:
                raise ValueError(
                    f"cooling_weight_max must be between 1 and weight_max (the cap on the weight "
                    f"while the controller cools; null = weight_max), got {cooling_weight_max} "
                    f"with weight_max={weight_max}"
                )
        self.cooling_weight_max = cooling_weight_max
        if self.weight_min and (weight_max is None or self.weight_min > weight_max):
            raise ValueError(
                f"weight_min={weight_min} needs weight_max set and >= weight_min (the weight "
                f"is chosen in [weight_min, weight_max]), got weight_max={weight_max}"
            )
        self.proportional_gain = _check_finite(proportional_gain, "proportional_gain", minimum=0.0)
        self.integral_gain = _check_finite(integral_gain, "integral_gain", minimum=0.0)
        if self.proportional_gain == 0.0 and self.integral_gain == 0.0:
            raise ValueError(
                "proportional_gain and integral_gain are both 0, so T would stay 1 forever; "
                "set at least one of them > 0 (defaults 2.0 and 0.2)"
            )
        _check_temperature_bounds(
            temperature_min, temperature_max, "temperature_min", "temperature_max"
        )
        self.temperature_min = float(temperature_min)
        self.temperature_max = float(temperature_max)
        self.entropy_smoothing = _check_finite(entropy_smoothing, "entropy_smoothing")
        if not 0.0 <= self.entropy_smoothing < 1.0:
            raise ValueError(
                f"entropy_smoothing must be in [0, 1) (0 = no smoothing), got {entropy_smoothing}"
            )
        self.integral = 0.0  # Σ gap over the measurements so far, frozen while saturated
        self.change = 0.0  # the (smoothed) entropy's change over the last step; 0 until two

    def _effort(self, gap: float, integral: float) -> float:
        """e = k_p·gap + k_i·Σgap − k_d·ΔH̄: the unclipped T − 1 (gains × 𝓗/H_ref with
        gain_reference)."""
        reacting = self.proportional_gain * gap - self.derivative_gain * self.change
        if self.holding:
            reacting *= self.hold_gain
        effort = reacting + self.integral_gain * integral
        if self.gain_reference is not None:
            effort *= self.target_entropy / self.gain_reference
        return effort

    def _saturation(self, effort: float) -> float:
        """How far |e| has gone in units of the distance from T = 1 to the bound it heads for:
        1 when T just reaches its bound, 2 at twice that effort."""
        bound = self.temperature_max - 1.0 if effort >= 0.0 else 1.0 - self.temperature_min
        return abs(effort) / bound

    def _target_now(self) -> float:
        """With `target_ramp` = N: the first measured entropy moved linearly to the target over
        N measurements, then the target; otherwise the target."""
        if not self.target_ramp or self.ramp_start is None:
            return self.target_entropy
        fraction = min(1.0, self.num_updates / self.target_ramp)
        return self.ramp_start + (self.target_entropy - self.ramp_start) * fraction

    def _reached_target(self) -> bool:
        """Whether the ramp (if any) has finished and the smoothed entropy is at or past the
        target on the far side from the first measurement (a start at the target counts as
        reached)."""
        if self.num_updates < self.target_ramp or self.ramp_start is None:
            return False
        if self.ramp_start <= self.target_entropy:
            return self.previous_entropy >= self.target_entropy
        return self.previous_entropy <= self.target_entropy

    def _holds_differently(self) -> bool:
        """Whether reaching the target changes anything (`hold_gain` or `hold_integral` < 1)."""
        return self.hold_gain < 1.0 or self.hold_integral < 1.0

    def _temperature(self) -> float:
        gap = self._target_now() - self.previous_entropy
        temperature = 1.0 + self._effort(gap, self.integral)
        return min(max(temperature, self.temperature_min), self.temperature_max)

    def _weight(self) -> float | None:
        if self.weight_max is None:
            return None
        gap = self._target_now() - self.previous_entropy
        effort = self._effort(gap, self.integral)
        weight = self._saturation(effort)
        return min(max(weight, self.weight_min), self._weight_cap(effort))

    def _weight_cap(self, effort: float) -> float:
        """The weight's cap for an effort: `cooling_weight_max` while cooling (if set), else
        `weight_max` (1 without weight authority: T's bound is the whole push)."""
        if self.weight_max is None:
            return 1.0
        if effort < 0.0 and self.cooling_weight_max is not None:
            return self.cooling_weight_max
        return self.weight_max

    def update(self, measured_entropy: float) -> None:
        """Record the measured entropy (smoothed if enabled) and integrate the new gap."""
        smoothed_before = self.previous_entropy
        is_first_measurement = self.num_updates == 0
        super().update(measured_entropy)  # previous_entropy = the raw measurement
        if is_first_measurement:
            self.ramp_start = self.previous_entropy
        else:
            beta = self.entropy_smoothing
            self.previous_entropy = beta * smoothed_before + (1.0 - beta) * self.previous_entropy
            self.change = self.previous_entropy - smoothed_before
        if self._holds_differently() and not self.holding:
            self.holding = self._reached_target()
            if self.holding:  # the crossing: the push built on the way is scaled once
                self.integral *= self.hold_integral
        gap = self._target_now() - self.previous_entropy
        candidate = self._effort(gap, self.integral + gap)
        saturated = self._saturation(candidate) > self._weight_cap(candidate)
        pushes_further = (candidate > 0.0 and gap > 0.0) or (candidate < 0.0 and gap < 0.0)
        if not (saturated and pushes_further):
            self.integral += gap

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "target_entropy": self.target_entropy,
            "proportional_gain": self.proportional_gain,
            "integral_gain": self.integral_gain,
            "temperature_min": self.temperature_min,
            "temperature_max": self.temperature_max,
            "entropy_smoothing": self.entropy_smoothing,
            "initial_entropy": self.initial_entropy,
            "weight_max": self.weight_max,
        }
        if self.gain_reference is not None:  # absent when off: the state of earlier versions
            config["gain_reference"] = self.gain_reference
        if self.derivative_gain:  # likewise
            config["derivative_gain"] = self.derivative_gain
        if self.weight_min:  # likewise
            config["weight_min"] = self.weight_min
        if self.target_ramp:  # likewise
            config["target_ramp"] = self.target_ramp
        if self.hold_gain != 1.0:  # likewise
            config["hold_gain"] = self.hold_gain
        if self.hold_integral != 1.0:  # likewise
            config["hold_integral"] = self.hold_integral
        if self.cooling_weight_max is not None:  # likewise
            config["cooling_weight_max"] = self.cooling_weight_max
        return config

    def _dynamic_state(self) -> dict[str, Any]:
        state = {**super()._dynamic_state(), "integral": self.integral}
        if self.derivative_gain:  # kept only when used: the layout of earlier versions otherwise
            state["change"] = self.change
        if self.target_ramp or self._holds_differently():
            state["ramp_start"] = self.ramp_start
        if self._holds_differently():
            state["holding"] = self.holding
        return state

    def _load_dynamic_state(self, state: dict[str, Any]) -> None:
        super()._load_dynamic_state(state)
        self.integral = float(state["integral"])
        self.change = float(state.get("change", 0.0))  # absent in the state of earlier versions
        start = state.get("ramp_start")
        self.ramp_start = None if start is None else float(start)
        self.holding = bool(state.get("holding", False))


class AdaptiveTemperatureController(EntropyController):
    """T = clip(1 + s·gain·(target − H_prev), T_min, T_max): the papers' adaptive-T ablation.

    The authors' later AEPO variants replace the bang-bang switch by a continuous temperature
    (docs/papers.md §2.5, inferred to match the "temperature-adaptive positive samples" of arXiv
    2510.08141 v7). It is a pure proportional rule: it leaves a standing gap under a steady drift.

    `reinforce_samples` says which samples carry the REINFORCE term, which fixes the sign s:
        "positive" (s = +1, default): AEPO / DCPO positives — hotter raises the entropy.
        "negative" (s = −1): the ICR repo's initial-commit AEPO branch, which pushes down
            negatives (advantage −1) and uses T = clip(1 − (𝓗 − H), 0.8, 1.2): colder negatives
            raise the entropy. (Its code comment says "heat when entropy is low"; the formula
            cools, which is the right direction for negatives.)
    """

    name = "adaptive"

    REINFORCE_SAMPLES: ClassVar[tuple[str, ...]] = ("positive", "negative")

    def __init__(
        self,
        target_entropy: float,
        gain: float = 1.0,
        temperature_min: float = 0.8,
        temperature_max: float = 1.2,
        reinforce_samples: str = "positive",
        initial_entropy: float = 0.0,
    ) -> None:
        super().__init__(target_entropy, initial_entropy)
        self.gain = _check_finite(gain, "gain")
        if self.gain <= 0.0:
            raise ValueError(f"gain must be > 0 (the papers use 1.0), got {gain}")
        _check_temperature_bounds(
            temperature_min, temperature_max, "temperature_min", "temperature_max"
        )
        self.temperature_min = float(temperature_min)
        self.temperature_max = float(temperature_max)
        if reinforce_samples not in self.REINFORCE_SAMPLES:
            raise ValueError(
                f"reinforce_samples must be one of {self.REINFORCE_SAMPLES}, "
                f"got {reinforce_samples!r}"
            )
        self.reinforce_samples = reinforce_samples

    def _temperature(self) -> float:
        sign = 1.0 if self.reinforce_samples == "positive" else -1.0
        temperature = 1.0 + sign * self.gain * (self.target_entropy - self.previous_entropy)
        return min(max(temperature, self.temperature_min), self.temperature_max)

    def config(self) -> dict[str, Any]:
        return {
            "target_entropy": self.target_entropy,
            "gain": self.gain,
            "temperature_min": self.temperature_min,
            "temperature_max": self.temperature_max,
            "reinforce_samples": self.reinforce_samples,
            "initial_entropy": self.initial_entropy,
        }


class FixedTemperatureController(EntropyController):
    """T = `temperature` every step (default: `temperature_max`, the papers' heating 1.2),
    whatever the entropy: the ablation "T fixed" of an entropy-controlled method. The target
    stays in the decision (DCPO's α is sized by the gap to it); only the temperature no longer
    answers to the measured entropy. With `weight` w the regularizer's weight is fixed too (the
    weight a `pi` controller with `weight_max` would set; DCPO's α then depends only on the
    share of correct answers): a constant push, the loop fully open — how far a given push
    moves the entropy, and how much it swings without any feedback."""

    name = "fixed"

    def __init__(
        self,
        target_entropy: float,
        temperature_max: float = 1.2,
        temperature_min: float = 0.8,
        temperature: float | None = None,
        initial_entropy: float = 0.0,
        weight: float | None = None,
    ) -> None:
        super().__init__(target_entropy, initial_entropy)
        if weight is not None:
            weight = _check_finite(weight, "weight", minimum=0.0)
        self.weight = weight
        _check_temperature_bounds(
            temperature_min, temperature_max, "temperature_min", "temperature_max"
        )
        self.temperature_min = float(temperature_min)
        self.temperature_max = float(temperature_max)
        if temperature is not None:
            temperature = _check_finite(temperature, "temperature")
            if temperature <= 0.0:
                raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = self.temperature_max if temperature is None else float(temperature)

    def _temperature(self) -> float:
        return self.temperature

    def _weight(self) -> float | None:
        return self.weight

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "target_entropy": self.target_entropy,
            "temperature_max": self.temperature_max,
            "temperature_min": self.temperature_min,
            "temperature": self.temperature,
            "initial_entropy": self.initial_entropy,
        }
        if self.weight is not None:  # absent when off: the state of earlier versions
            config["weight"] = self.weight
        return config


CONTROLLERS: dict[str, type[EntropyController]] = {
    BangBangController.name: BangBangController,
    PIController.name: PIController,
    AdaptiveTemperatureController.name: AdaptiveTemperatureController,
    FixedTemperatureController.name: FixedTemperatureController,
}


def make_controller(name: str, **kwargs: Any) -> EntropyController:
    """Build the controller registered as `name` ("bang_bang", "pi", "adaptive", "fixed") from kwargs.

    Example: make_controller("bang_bang", target_entropy=0.5).decide().temperature == 1.2
    """
    if name not in CONTROLLERS:
        raise ValueError(
            f"unknown entropy controller {name!r}; choose one of {sorted(CONTROLLERS)}"
        )
    controller_class = CONTROLLERS[name]
    signature = inspect.signature(controller_class)
    try:
        signature.bind(**kwargs)
    except TypeError as error:
        raise TypeError(
            f"bad arguments for entropy controller {name!r} ({error}); "
            f"it accepts {list(signature.parameters)}"
        ) from None
    return controller_class(**kwargs)
