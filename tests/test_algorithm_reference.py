"""Every algorithm `dcrl algorithms` lists, value for value as it was before the one extension
point of issue 18 (every method a preset of GRPO plus targets).

The reference, tests/data/algorithm_reference.json, is the frozen behaviour, not a snapshot to
refresh: a failing case is a numeric change to explain, never a file to re-record. For each case
(an algorithm name and settings that make its term act):

1. On the fixed batch of tests/step_fixture.py, with a fixed scoring policy and fixed extra
   samples: `prepare`'s train batch (rows, old log-probs, advantages, extras) and metrics, off-
   and on-policy; the loss, its metrics and its gradients (log-probs and entropy) on that batch;
   `after_update` and a second `prepare` (the controllers moved); `state_dict` (the checkpoint
   layout) after each. Recorded from the code before that refactor.
2. A 3-step run of the tiny model: every step's metrics (timings aside), how far each parameter
   tensor moved (its norm and 8 fixed random projections of final − initial, float64) and the
   algorithm's final `state_dict`. Recorded (`--record-runs`) from the code that CI had checked
   bit for bit against the pre-refactor digests, on an AVX2 machine. A metric added since
   (`ADDED_METRICS`) is checked against the recorded metrics that define it.

Values, not bits. Which float32 kernels PyTorch runs (AVX-512, AVX2 or the portable ones,
`ATEN_CPU_CAPABILITY`) sets the order of every sum, so the last bits of a result belong to the
machine. Integers, booleans, shapes, dtypes, names and every discrete metric (rewards, lengths,
counts) must be equal; a float is compared within a tolerance derived from float32 rounding
(u = 2⁻²⁴ ≈ 6·10⁻⁸; a sum of K terms is off by at most ≈ K·u of the sum of its magnitudes):

- fixed batch: the largest reduction is a loss or mean over ≤ 16 rows × 12 tokens ≈ 200 terms,
  so K·u ≈ 1.2·10⁻⁵: rtol = atol = 2·10⁻⁵ (the inputs are O(1): log-probs, advantages).
  Measured between the AVX2 and the portable kernels: ≤ 7.4·10⁻⁷ relative.
- 3-step run: `run_tolerance` — per optimizer update the longest chain of sums is a mini-batch's
  tokens plus, per layer, the hidden and MLP widths (≈ 2,300 terms for the tiny model), and the
  updates add up; that bound times the number of updates is the tolerance on ‖Δθ − Δθ_ref‖/‖Δθ_ref‖
  and on each float metric (relative to max(|value|, log V), V the vocabulary, the scale of a
  log-prob). Measured between the AVX2 and the portable kernels: ≤ 2.7·10⁻⁴ (dcpo), typically
  3·10⁻⁵; with 1 or 2 threads, identical. `test_a_changed_algorithm_fails_the_run_check` shows
  that a flipped sign, a 10% factor or a dropped term fails it by a wide margin.

KL-Cov's 3-step run stops after 2 steps: from its third step on, its top-k by covariance picks
among tokens whose covariance is ~10⁻⁸ (rounding noise, in groups whose advantages cancel), so
which token is penalised is decided by the last bit of the machine. Its fixed-batch case checks
the selection exactly.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import dcrl.algorithms.base as algorithm_base
from dcrl.algorithms import ALGORITHMS, StepContext, make_algorithm
from dcrl.rollout.base import RolloutBatch
from dcrl.train.config import load_run_config
from dcrl.train.trainer import Trainer
from tests import step_fixture
from tests.helpers import tiny_config, tiny_overrides

REFERENCE = Path(__file__).parent / "data" / "algorithm_reference.json"

# case -> (algorithm, settings of the fixed-batch check and the run, settings of the run only)
AEPO_RUN = (
    "train.prompts_per_step=8",
    "train.mini_batch_prompts=8",
    "train.micro_batch_size=16",
    "train.reuse_on_policy_logprobs=false",
)
CASES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "grpo": ("grpo", (), ()),
    "grpo-dr-grpo-off-policy": (
        "grpo",
        ("algorithm.advantage_std=none", "algorithm.loss_agg_mode=seq-mean-token-sum-norm"),
        ("train.mini_batch_prompts=2",),
    ),
    "clip_higher": ("clip_higher", (), ("train.mini_batch_prompts=2",)),  # off-policy: clips
    "clip_cov": ("clip_cov", (), ()),
    "clip_cov-wide-window": (
        "clip_cov",
        (
            "algorithm.clip_cov_ratio=0.2",
            "algorithm.clip_cov_lb=-100",
            "algorithm.clip_cov_ub=100",
        ),
        ("train.mini_batch_prompts=2", "train.micro_batch_size=3"),
    ),
    "kl_cov": (
        "kl_cov",
        ("algorithm.kl_cov_ratio=0.1", "algorithm.kl_coef=2.0"),
        ("train.mini_batch_prompts=2", "train.micro_batch_size=3"),
    ),
    "entropy_reg": ("entropy_reg", ("algorithm.coef=0.5",), ("train.mini_batch_prompts=2",)),
    "entropy_reg-true-entropy": (
        "entropy_reg",
        ("algorithm.coef=0.5", "algorithm.form=true_entropy"),
        (),
    ),
    "entropy_adv": ("entropy_adv", ("algorithm.alpha=0.6",), ()),
    "lp_f": ("lp_f", ("algorithm.max_length=8", "algorithm.buffer=4", "algorithm.penalty=0.7"), ()),
    "kimi": ("kimi", ("algorithm.weight=0.5",), ()),
    "shorter_better": ("shorter_better", ("algorithm.beta=0.05",), ()),
    "aepo": ("aepo", ("algorithm.tempered_fraction=0.5", "algorithm.max_reinforce=3"), AEPO_RUN),
    "aepo-pi-spread": (
        "aepo",
        (
            "algorithm.controller=pi",
            "algorithm.weight_max=3.0",
            "algorithm.temperature_high=2.0",
            "algorithm.placement=spread",
            "algorithm.include_all_correct_groups=true",
            "algorithm.max_reinforce=4",
        ),
        AEPO_RUN,
    ),
    "dcpo": ("dcpo", ("algorithm.max_rho=3.0",), ()),
    "dcpo-no-rho-full-signal": (
        "dcpo",
        ("algorithm.use_rho=false", "algorithm.entropy_signal=full"),
        ("train.reuse_on_policy_logprobs=false",),
    ),
    "icr": (
        "icr",
        ("algorithm.lp_f_max_length=8", "algorithm.lp_f_buffer=4", "algorithm.bonus_total=4"),
        (),
    ),
    "icr-multiply-no-lp-f": (
        "icr",
        ("algorithm.lp_f=false", "algorithm.mode=multiply", "algorithm.selection=any"),
        ("train.mini_batch_prompts=2",),
    ),
    "composed": ("composed", (), ()),
    "composed-dcpo-icr": (
        "composed",
        (
            "algorithm.targets=[{name: icr, bonus_total: 4, lp_f_max_length: 8, lp_f_buffer: 4},"
            " {name: dcpo, target_entropy: 2.0}]",
        ),
        (),
    ),
    "composed-best-of-n-aepo-icr": (
        "composed",
        (
            "algorithm.targets=[{name: best_of_n, weight: 0.5}, {name: aepo, max_reinforce: 3, "
            "tempered_fraction: 0.5}, {name: icr, bonus_total: 4, lp_f: false}]",
        ),
        AEPO_RUN,
    ),
}
TIMINGS = ("time/", "perf/")
RUN_STEPS = {"kl_cov": 2}  # see the module docstring; every other case runs 3 steps

# float32's unit roundoff: the relative error of one rounding.
UNIT_ROUNDOFF = 2.0**-24
# The fixed batch: its largest sum has ≈ 200 terms (16 rows × 12 tokens); K·u ≈ 1.2e-5.
FIXED_BATCH_TOLERANCE = 2e-5
# Metrics that count whole things (correct answers, tokens): sums of integers, exact in any order.
EXACT_METRICS = ("reward/accuracy", "reward/pass_at_n", "length/")
# Metrics added after the runs were recorded, each with the recorded metrics that define it: the
# full entropy of the on-policy rows is the full entropy when every row is on-policy (the two
# NLL signals agree), and between 0 and the largest full entropy seen otherwise (AEPO).
ADDED_METRICS = {"entropy/on_policy_full": ("entropy/full", "entropy/on_policy_nll")}


def added_metric_mismatches(got: dict, want: dict, tolerance: float, scale: float, path: str):
    """Check a metric the reference predates against the recorded metrics that define it."""
    mismatches = []
    for key, (full, own_nll) in ADDED_METRICS.items():
        if key in want or key not in got:
            continue
        if want.get(own_nll) == want.get("entropy/sampled_nll"):  # no foreign rows
            mismatches += value_mismatches(got[key], want[full], tolerance, scale, f"{path}/{key}")
        elif not 0.0 <= got[key] < 10 * max(want[full], 1.0):
            mismatches.append(f"{path}/{key}: {got[key]} is not a plausible entropy")
    return mismatches


PROJECTIONS = 8  # random projections of each parameter tensor's movement


# ------------------------------------------------------------------------------------------
# Encoding: exact (a float32 or float64 value survives the JSON round trip unchanged).
# ------------------------------------------------------------------------------------------


def encode(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        values = value.detach().cpu()
        return {
            "dtype": str(values.dtype).removeprefix("torch."),
            "shape": list(values.shape),
            "values": values.flatten().tolist(),
        }
    if isinstance(value, dict):
        return {key: encode(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [encode(item) for item in value]
    return value


def canonical(value: Any) -> str:
    """One string per value, keys sorted; equal strings ⇔ bit-identical (NaN included)."""
    return json.dumps(encode(value), sort_keys=True)


def is_encoded_tensor(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"dtype", "shape", "values"}


def float_close(actual: float, expected: float, tolerance: float, scale: float) -> bool:
    """|actual − expected| ≤ tolerance · max(|expected|, scale); NaN equals NaN, ±inf itself."""
    if math.isnan(expected) or math.isnan(actual):
        return math.isnan(expected) and math.isnan(actual)
    if math.isinf(expected) or math.isinf(actual):
        return actual == expected
    return abs(actual - expected) <= tolerance * max(abs(expected), scale)


def value_mismatches(
    actual: Any, expected: Any, tolerance: float, scale: float = 1.0, path: str = ""
) -> list[str]:
    """Where two encoded values differ: floats beyond `tolerance` (relative to max(|value|,
    `scale`)), anything else (ints, bools, strings, keys, lengths, dtypes, shapes) at all."""
    if is_encoded_tensor(expected):
        if not is_encoded_tensor(actual):
            return [f"{path}: expected a tensor, got {type(actual).__name__}"]
        if (actual["dtype"], actual["shape"]) != (expected["dtype"], expected["shape"]):
            return [
                f"{path}: {actual['dtype']}{actual['shape']} != {expected['dtype']}{expected['shape']}"
            ]
        if not expected["dtype"].startswith(("float", "bfloat")):
            return [] if actual["values"] == expected["values"] else [f"{path}: values differ"]
        bad = [
            i
            for i, (a, e) in enumerate(zip(actual["values"], expected["values"], strict=True))
            if not float_close(a, e, tolerance, scale)
        ]
        if bad:
            i = bad[0]
            return [
                f"{path}: {len(bad)} of {len(expected['values'])} elements differ, e.g. [{i}] "
                f"{actual['values'][i]!r} != {expected['values'][i]!r}"
            ]
        return []
    if isinstance(expected, dict):
        if not isinstance(actual, dict) or set(actual) != set(expected):
            return [
                f"{path}: keys {sorted(actual) if isinstance(actual, dict) else actual!r} != {sorted(expected)}"
            ]
        return [
            m
            for key in sorted(expected)
            for m in value_mismatches(actual[key], expected[key], tolerance, scale, f"{path}/{key}")
        ]
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{path}: {actual!r} != {expected!r}"]
        return [
            m
            for i, (a, e) in enumerate(zip(actual, expected, strict=True))
            for m in value_mismatches(a, e, tolerance, scale, f"{path}[{i}]")
        ]
    if (
        isinstance(expected, float)
        and isinstance(actual, int | float)
        and not isinstance(actual, bool)
    ):
        return (
            []
            if float_close(float(actual), expected, tolerance, scale)
            else [f"{path}: {actual!r} != {expected!r}"]
        )
    return (
        []
        if actual == expected and type(actual) is type(expected)
        else [f"{path}: {actual!r} != {expected!r}"]
    )


def parameter_movement(initial: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, Any]:
    """Per parameter tensor, Δ = final − initial in float64: its norm and PROJECTIONS projections
    on fixed standard-normal vectors. E[(g·x)²] = ‖x‖² for such a g, so the mean squared
    difference of two runs' projections estimates ‖Δ − Δ_ref‖² of that tensor."""
    movement = {}
    for index, (name, final) in enumerate(sorted(model.state_dict().items())):
        delta = (final.detach().cpu().double() - initial[name].double()).flatten()
        generator = torch.Generator().manual_seed(1000 + index)
        directions = torch.randn(
            PROJECTIONS, delta.numel(), generator=generator, dtype=torch.float64
        )
        movement[name] = {"norm": float(delta.norm()), "projections": (directions @ delta).tolist()}
    return movement


def movement_error(actual: dict[str, Any], expected: dict[str, Any]) -> float:
    """‖Δ − Δ_ref‖ / ‖Δ_ref‖ over all parameters, estimated from the projections."""
    assert set(actual) == set(expected), "the parameter names differ"
    squared_difference = sum(
        sum(
            (a - e) ** 2
            for a, e in zip(actual[n]["projections"], expected[n]["projections"], strict=True)
        )
        / PROJECTIONS
        for n in expected
    )
    reference = math.sqrt(sum(expected[n]["norm"] ** 2 for n in expected))
    return math.sqrt(squared_difference) / reference


def run_tolerance(config: Any, model_config: Any, tokens_per_row: int) -> float:
    """The run check's relative tolerance: float32 rounding along the longest chain of sums of
    one optimizer update, times the number of updates (see the module docstring).

    One update sums, at most: the tokens of a mini-batch (a weight's gradient), and for each
    layer, forward and backward, three hidden-width sums (attention in and out, MLP in) and one
    MLP-width sum (MLP out); plus the head (hidden) and the softmax (vocabulary)."""
    tc = config.train
    tokens = tc.mini_batch_prompts * config.rollout.n * tokens_per_row
    layers = model_config.num_hidden_layers
    hidden, mlp = model_config.hidden_size, model_config.intermediate_size
    chain = tokens + 2 * layers * (3 * hidden + mlp) + hidden + model_config.vocab_size
    updates = tc.steps * math.ceil(tc.prompts_per_step / tc.mini_batch_prompts)
    return updates * chain * UNIT_ROUNDOFF


# ------------------------------------------------------------------------------------------
# 1. The fixed batch.
# ------------------------------------------------------------------------------------------


def fixed_rollout() -> tuple[RolloutBatch, torch.Tensor]:
    batch = step_fixture.fixed_batch()
    rollout = rollout_batch(
        batch["prompt_ids"],
        batch["prompt_mask"],
        batch["response_ids"],
        batch["response_mask"],
        batch["group_index"],
    )
    return rollout, batch["scores"]


def rollout_batch(prompt_ids, prompt_mask, response_ids, response_mask, group_index):
    rows = len(prompt_ids)
    lengths = response_mask.sum(-1)
    return RolloutBatch(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        response_ids=response_ids,
        response_mask=response_mask,
        response_lengths=lengths,
        truncated=lengths >= response_mask.shape[1],
        group_index=group_index,
        temperature=torch.ones(rows),
        top_p=torch.ones(rows),
        prompt_texts=[""] * rows,
        response_texts=[""] * rows,
        pad_token_id=step_fixture.PAD,
    )


def score(input_ids, attention_mask, response_mask, temperature=1.0, with_entropy=False):
    """The fixed policy (tests/step_fixture.py) and a fixed entropy per token."""
    response_ids = input_ids[:, -response_mask.shape[1] :]
    logprobs = step_fixture.policy_logprobs(response_ids, response_mask, temperature)
    entropy = None
    if with_entropy:
        entropy = (0.2 + 0.15 * (response_ids % 4).float()) * response_mask.float()
    return logprobs, entropy


def tempered_rollout(prompt_indices, n, temperature):
    """Fixed extra samples: the prompts' rows with longer, shifted responses (so the batches pad
    to a common width) and scores that give mixed groups."""
    batch = step_fixture.fixed_batch()
    rows = torch.cat([torch.arange(int(p) * n, int(p) * n + n) for p in prompt_indices])
    width = step_fixture.RESPONSE_LENGTH + 2
    lengths = (batch["response_mask"][rows].sum(-1) + 2).clamp(max=width)
    mask = (torch.arange(width)[None] < lengths[:, None]).long()
    shift = int(round(temperature * 10))
    ids = torch.nn.functional.pad(batch["response_ids"][rows], (0, 2))
    ids = ((ids + shift) % 55 + 5) * mask
    group_index = torch.arange(len(rows)) // n
    sub = rollout_batch(
        batch["prompt_ids"][rows], batch["prompt_mask"][rows], ids, mask, group_index
    )
    scores = (torch.arange(len(rows)) % 3 == 0).float()
    return sub, scores


def fixed_batch_record(algorithm_name: str, settings: tuple[str, ...]) -> dict[str, Any]:
    config = load_run_config(None, tiny_overrides(Path("unused"), algorithm_name, *settings))
    algorithm = make_algorithm(config.algorithm)
    batch, scores = fixed_rollout()
    record: dict[str, Any] = {"state_before": algorithm.state_dict()}
    for step, on_policy in ((1, False), (2, True)):
        ctx = StepContext(step=step, rollout=tempered_rollout, score=score, on_policy=on_policy)
        train_batch, metrics = algorithm.prepare(batch, scores, ctx)
        part = {
            "train_batch": {
                "input_ids": train_batch.input_ids,
                "attention_mask": train_batch.attention_mask,
                "response_mask": train_batch.response_mask,
                "old_logprobs": train_batch.old_logprobs,
                "advantages": train_batch.advantages,
                "extras": dict(train_batch.extras),
            },
            "metrics": metrics,
        }
        # The loss at log-probs a fixed perturbation away from π_old, with an entropy that
        # carries a gradient (used by the entropy bonus in its true_entropy form).
        generator = torch.Generator().manual_seed(step)
        mask = train_batch.response_mask
        base = train_batch.old_logprobs
        if base is None:
            base = score(train_batch.input_ids, train_batch.attention_mask, mask)[0]
        logprobs = (base + 0.3 * torch.randn(base.shape, generator=generator)).requires_grad_()
        entropy = (0.5 + torch.rand(mask.shape, generator=generator)).requires_grad_()
        counts = {"num_tokens": float(mask.sum()), "num_sequences": float(len(mask))}
        for half in (slice(0, len(mask) // 2), slice(len(mask) // 2, len(mask))):
            micro = train_batch.select(half)
            loss, loss_metrics = algorithm.loss(micro, logprobs[half], entropy[half], counts)
            loss.backward()
            part.setdefault("losses", []).append({"loss": loss, "metrics": loss_metrics})
        part["logprobs_grad"] = logprobs.grad
        part["entropy_grad"] = entropy.grad
        part["needs_entropy_grad"] = bool(algorithm.needs_entropy_grad)
        algorithm.after_update(
            {
                "entropy/sampled_nll": 0.9 - 0.2 * step,
                "entropy/on_policy_nll": 0.8 - 0.2 * step,
                "entropy/full": 1.1 - 0.3 * step,
            }
        )
        part["state_after"] = algorithm.state_dict()
        record[f"step{step}"] = part
    return record


# ------------------------------------------------------------------------------------------
# 2. A 3-step run.
# ------------------------------------------------------------------------------------------


def run_record(
    tmp_path: Path, algorithm_name: str, settings: tuple[str, ...], steps: int = 3
) -> dict[str, Any]:
    trainer = Trainer(
        tiny_config(tmp_path / "run", algorithm_name, f"train.steps={steps}", *settings)
    )
    initial = {name: value.detach().clone() for name, value in trainer.model.state_dict().items()}
    history = trainer.fit()
    tokens_per_row = (
        max(len(trainer.tokenizer(trainer.format_prompt(p))["input_ids"]) for p in trainer.problems)
        + trainer.config.rollout.max_new_tokens
    )
    return {
        "metrics": [{k: v for k, v in m.items() if not k.startswith(TIMINGS)} for m in history],
        "parameters": parameter_movement(initial, trainer.model),
        "state": json.loads(canonical(trainer.algorithm.state_dict())),
        "tolerance": run_tolerance(trainer.config, trainer.model.config, tokens_per_row),
        "log_vocabulary": math.log(trainer.model.config.vocab_size),
    }


def run_mismatches(actual: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """How a run differs from its reference beyond the run tolerance (see the module docstring)."""
    tolerance, scale = actual["tolerance"], actual["log_vocabulary"]
    mismatches = []
    error = movement_error(actual["parameters"], expected["parameters"])
    if not error <= tolerance:
        mismatches.append(
            f"parameters moved differently: ‖Δθ − Δθ_ref‖/‖Δθ_ref‖ = {error:.3g} > {tolerance:.3g}"
        )
    if len(actual["metrics"]) != len(expected["metrics"]):
        mismatches.append(
            f"{len(actual['metrics'])} steps logged, the reference has {len(expected['metrics'])}"
        )
    for step, (got, want) in enumerate(
        zip(actual["metrics"], expected["metrics"], strict=False), start=1
    ):
        mismatches += added_metric_mismatches(got, want, tolerance, scale, f"step {step}")
        for key in sorted((set(got) - (set(ADDED_METRICS) - set(want))) | set(want)):
            exact = key.startswith(EXACT_METRICS)
            mismatches += value_mismatches(
                got.get(key),
                want.get(key),
                0.0 if exact else tolerance,
                scale,
                f"step {step}/{key}",
            )
    mismatches += value_mismatches(actual["state"], expected["state"], tolerance, scale, "state")
    return mismatches


def record_case(tmp_path: Path, case: str) -> dict[str, Any]:
    algorithm_name, settings, run_settings = CASES[case]
    return {
        "fixed_batch": fixed_batch_record(algorithm_name, settings),
        "run": run_record(
            tmp_path, algorithm_name, (*settings, *run_settings), RUN_STEPS.get(case, 3)
        ),
    }


def load_reference() -> dict[str, Any]:
    return json.loads(REFERENCE.read_text())


def test_every_listed_algorithm_has_a_reference_case():
    covered = {algorithm for algorithm, _, _ in CASES.values()}
    assert covered == set(ALGORITHMS)
    assert set(load_reference()) == set(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_prepare_and_loss_on_the_fixed_batch_match_the_reference(case):
    algorithm_name, settings, _ = CASES[case]
    expected = load_reference()[case]["fixed_batch"]
    actual = json.loads(canonical(fixed_batch_record(algorithm_name, settings)))
    assert value_mismatches(actual, expected, FIXED_BATCH_TOLERANCE) == []


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_three_step_run_matches_the_reference(tmp_path, case):
    algorithm_name, settings, run_settings = CASES[case]
    expected = load_reference()[case]["run"]
    actual = run_record(
        tmp_path, algorithm_name, (*settings, *run_settings), RUN_STEPS.get(case, 3)
    )
    assert run_mismatches(actual, expected) == []


def flip_the_advantage_sign(monkeypatch):
    real = algorithm_base.grpo_advantages
    monkeypatch.setattr(algorithm_base, "grpo_advantages", lambda *a, **k: -real(*a, **k))
    return ()


# A real change of an algorithm, as a run sees it: (case, how to make it, what it is).
MUTATIONS = {
    "grpo: advantages of the opposite sign": ("grpo", flip_the_advantage_sign),
    "entropy_reg: its coefficient 10% larger": ("entropy_reg", lambda _: ("algorithm.coef=0.55",)),
    "entropy_reg: its entropy term dropped": ("entropy_reg", lambda _: ("algorithm.coef=0",)),
    "dcpo: ρ dropped (ρ ≡ 1)": ("dcpo", lambda _: ("algorithm.use_rho=false",)),
}


@pytest.mark.slow
@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_a_changed_algorithm_fails_the_run_check(tmp_path, monkeypatch, mutation):
    """The run tolerance is loose enough for any machine and tight enough for a real change:
    each mutation moves the parameters by more than 10× the tolerance."""
    case, mutate = MUTATIONS[mutation]
    algorithm_name, settings, run_settings = CASES[case]
    extra = mutate(monkeypatch)
    actual = run_record(tmp_path, algorithm_name, (*settings, *run_settings, *extra))
    expected = load_reference()[case]["run"]
    error = movement_error(actual["parameters"], expected["parameters"])
    assert error > 10 * actual["tolerance"], (error, actual["tolerance"])
    assert run_mismatches(actual, expected)


def test_the_comparison_tells_values_apart():
    """value_mismatches: floats within the tolerance pass, beyond it and any discrete change fail."""
    tensor = {"dtype": "float32", "shape": [2], "values": [1.0, -2.0]}
    close = {"dtype": "float32", "shape": [2], "values": [1.0 + 1e-6, -2.0]}
    far = {"dtype": "float32", "shape": [2], "values": [1.0, -2.01]}
    assert value_mismatches(close, tensor, 1e-5) == []
    assert value_mismatches(far, tensor, 1e-5)
    assert value_mismatches({**tensor, "dtype": "float64"}, tensor, 1e-5)
    assert value_mismatches({"a": 1, "b": float("nan")}, {"a": 1, "b": float("nan")}, 0.0) == []
    assert value_mismatches({"a": 2}, {"a": 1}, 1.0)  # ints are exact
    assert value_mismatches({"a": 1e-9}, {"a": 0.0}, 1e-6) == []  # relative to scale 1
    assert value_mismatches([1.0], [1.0, 2.0], 1.0)


def main() -> None:
    """`python -m tests.test_algorithm_reference --record-runs`: write the run part of the
    reference (only from code that matches the reference's fixed-batch part and whose runs were
    checked against the reference as it stood; see the module docstring). The fixed-batch part
    stays as recorded before the refactor."""
    import tempfile

    if sys.argv[1:] != ["--record-runs"]:
        raise SystemExit("usage: python -m tests.test_algorithm_reference --record-runs")
    torch.set_num_threads(1)  # as tests/conftest.py
    reference = load_reference()
    with tempfile.TemporaryDirectory() as tmp:
        for case in sorted(CASES):
            algorithm_name, settings, run_settings = CASES[case]
            torch.manual_seed(0)  # as the autouse fixture of tests/conftest.py
            run = run_record(
                Path(tmp) / case,
                algorithm_name,
                (*settings, *run_settings),
                RUN_STEPS.get(case, 3),
            )
            reference[case]["run"] = {key: run[key] for key in ("metrics", "parameters", "state")}
    REFERENCE.write_text(json.dumps(encode(reference), sort_keys=True, indent=0) + "\n")


if __name__ == "__main__":
    main()
