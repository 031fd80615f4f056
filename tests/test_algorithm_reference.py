"""Every algorithm `dcrl algorithms` lists, bit for bit (torch.equal) as it was before the one
extension point of issue 18 (every method a preset of GRPO plus targets).

The reference, tests/data/algorithm_reference.json, was recorded from the code before that
refactor (`python -m tests.test_algorithm_reference --record`); it is the frozen behaviour, not
a snapshot to refresh: a failing case is a numeric change to explain, never a file to re-record.
For each case (an algorithm name and settings that make its term act):

1. On the fixed batch of tests/step_fixture.py, with a fixed scoring policy and fixed extra
   samples: `prepare`'s train batch (rows, old log-probs, advantages, extras) and metrics, off-
   and on-policy; the loss, its metrics and its gradients (log-probs and entropy) on that batch;
   `after_update` and a second `prepare` (the controllers moved); `state_dict` (the checkpoint
   layout) after each.
2. A 3-step run of the tiny model: every step's metrics (timings aside), a digest of the final
   parameters and the algorithm's final `state_dict`.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

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


def parameter_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, parameter in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(parameter.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


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


def run_record(tmp_path: Path, algorithm_name: str, settings: tuple[str, ...]) -> dict[str, Any]:
    trainer = Trainer(tiny_config(tmp_path / "run", algorithm_name, "train.steps=3", *settings))
    history = trainer.fit()
    return {
        "metrics": [{k: v for k, v in m.items() if not k.startswith(TIMINGS)} for m in history],
        "parameters": parameter_digest(trainer.model),
        "state": trainer.algorithm.state_dict(),
    }


def record_case(tmp_path: Path, case: str) -> dict[str, Any]:
    algorithm_name, settings, run_settings = CASES[case]
    return {
        "fixed_batch": fixed_batch_record(algorithm_name, settings),
        "run": run_record(tmp_path, algorithm_name, (*settings, *run_settings)),
    }


def load_reference() -> dict[str, Any]:
    return json.loads(REFERENCE.read_text())


def test_every_listed_algorithm_has_a_reference_case():
    covered = {algorithm for algorithm, _, _ in CASES.values()}
    assert covered == set(ALGORITHMS)
    assert set(load_reference()) == set(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_prepare_and_loss_on_the_fixed_batch_are_bit_identical(case):
    algorithm_name, settings, _ = CASES[case]
    expected = load_reference()[case]["fixed_batch"]
    actual = json.loads(canonical(fixed_batch_record(algorithm_name, settings)))
    for key in sorted(expected):
        assert canonical(actual[key]) == canonical(expected[key]), key


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_three_step_run_is_bit_identical(tmp_path, case):
    algorithm_name, settings, run_settings = CASES[case]
    expected = load_reference()[case]["run"]
    actual = run_record(tmp_path, algorithm_name, (*settings, *run_settings))
    assert actual["parameters"] == expected["parameters"]
    assert canonical(actual["metrics"]) == canonical(expected["metrics"])
    assert canonical(actual["state"]) == canonical(expected["state"])


def main() -> None:
    """`python -m tests.test_algorithm_reference --record`: write the reference (only from the
    code the reference stands for; see the module docstring)."""
    import tempfile

    if sys.argv[1:] != ["--record"]:
        raise SystemExit("usage: python -m tests.test_algorithm_reference --record")
    torch.set_num_threads(1)  # as tests/conftest.py
    with tempfile.TemporaryDirectory() as tmp:
        reference = {case: record_case(Path(tmp) / case, case) for case in sorted(CASES)}
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    REFERENCE.write_text(json.dumps(encode(reference), sort_keys=True, indent=0) + "\n")


if __name__ == "__main__":
    main()
