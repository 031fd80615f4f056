"""DCRLGRPOTrainer (dcrl.integrations.trl): dcrl's AEPO, DCPO and ICR inside TRL's GRPOTrainer,
on CPU with the built-in tiny-arith model and synthetic arithmetic prompts.

1. A few TRL steps per algorithm change every weight and log dcrl's metrics; the controller's
   state survives a TRL checkpoint and resume.
2. On one fixed batch, the TRL path gives the advantages and the loss (and gradient) of dcrl's own
   code: `Algorithm.prepare` and `Algorithm.loss` scored with dcrl's forward.
3. Two data-parallel processes (torchrun, accelerate MULTI_CPU over gloo) end with identical
   weights and controllers that decided the same temperatures from the all-reduced entropy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip(
    "trl", reason="TRL is not installed: pip install 'dcrl[trl]' (scripts/install.sh does)"
)

from datasets import Dataset  # noqa: E402
from trl import GRPOConfig  # noqa: E402

from dcrl.algorithms import StepContext, make_algorithm  # noqa: E402
from dcrl.algorithms.composed import ComposedConfig  # noqa: E402
from dcrl.errors import UserError  # noqa: E402
from dcrl.integrations.trl import STATE_FILE, DCRLGRPOTrainer, _algorithm_config  # noqa: E402
from dcrl.models.loading import load_policy  # noqa: E402
from dcrl.targets.aepo import AEPOConfig  # noqa: E402
from dcrl.targets.dcpo import DCPOConfig  # noqa: E402
from dcrl.tasks import get_task  # noqa: E402
from dcrl.train.forward import response_logprobs  # noqa: E402
from tests.test_design_examples import registered  # noqa: E402, F401  (the fixture)

REPO = Path(__file__).resolve().parent.parent
TASK = get_task("arith")
PROBLEMS = TASK.problems("train", 16)
GROUP_SIZE = 4
FLOAT32_EPS = torch.finfo(torch.float32).eps

# The metrics each algorithm must add to TRL's logs, under dcrl's names.
ENTROPY_METRICS = (
    "entropy/sampled_nll",
    "entropy/on_policy_nll",
    "entropy/full",
    "entropy/on_policy_full",
)
CONTROL_METRICS = ("control/temperature", "entropy/target", "control/previous_entropy")
ALGORITHM_METRICS = {
    "aepo": (*CONTROL_METRICS, "control/num_reinforce", "aepo/num_positives"),
    "dcpo": (*CONTROL_METRICS, "control/alpha", "dcpo/rho_mean"),
    "icr": ("icr/bonus", "icr/num_selected", "icr/selected_length"),
}


# DCPO + ICR composed (the recipe tiny-dcpo-icr's pairing): the mix and the bonus in one step.
DCPO_ICR = ComposedConfig(
    name="composed", targets=[{"name": "dcpo"}, {"name": "icr", "bonus_total": 8.0}]
)
CONFIGS: dict[str, Any] = {"aepo": "aepo", "dcpo": "dcpo", "icr": "icr", "dcpo+icr": DCPO_ICR}


def arithmetic_reward(completions: list[str], answer: list[str], **kwargs: Any) -> list[float]:
    """1.0 for a correct final answer. tiny-arith solves about 60% of these problems when
    sampling, so most groups have both correct and wrong completions."""
    return [TASK.verify(completion, a) for completion, a in zip(completions, answer, strict=True)]


def make_trainer(
    algorithm: Any, output_dir: Path, *, max_steps: int = 2, **overrides: Any
) -> DCRLGRPOTrainer:
    """A DCRLGRPOTrainer on tiny-arith: 2 prompts × 4 completions of ≤ 32 tokens per step.

    lr 1e-3 moves the model visibly; TRL's weight decay is 0, so a weight changes only when it
    received a gradient.
    """
    model, tokenizer = load_policy("tiny-arith")
    settings: dict[str, Any] = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=2 * GROUP_SIZE,
        num_generations=GROUP_SIZE,
        max_completion_length=32,
        max_steps=max_steps,
        learning_rate=1e-3,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        seed=0,
        gradient_checkpointing=False,
        bf16=False,  # TRL defaults to bf16 autocast, on CPU too; the tests compare float32 numbers
        disable_tqdm=True,
    )
    settings.update(overrides)
    dataset = Dataset.from_list([{"prompt": p.prompt, "answer": p.answer} for p in PROBLEMS])
    return DCRLGRPOTrainer(
        model=model,
        reward_funcs=arithmetic_reward,
        args=GRPOConfig(**settings),
        train_dataset=dataset,
        processing_class=tokenizer,
        algorithm=algorithm,
    )


# ----------------------------------------------------------------------- 1. training steps


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["aepo", "dcpo", "icr"])
def test_training_steps_change_weights_and_log_dcrl_metrics(algorithm, tmp_path):
    trainer = make_trainer(algorithm, tmp_path)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()

    unchanged = [n for n, p in trainer.model.named_parameters() if torch.equal(p, before[n])]
    assert unchanged == []
    steps = [record for record in trainer.state.log_history if "entropy/sampled_nll" in record]
    assert len(steps) == 2
    for record in steps:
        for name in (*ENTROPY_METRICS, *ALGORITHM_METRICS[algorithm]):
            assert isinstance(record[name], float), (name, record.get(name))
    if algorithm in ("aepo", "dcpo"):
        # Step 2 decided from the entropy measured in step 1's update.
        assert steps[1]["control/previous_entropy"] == steps[0]["entropy/sampled_nll"]
        assert trainer.algorithm.target.controller.num_updates == 2
    if algorithm == "aepo":
        assert any(record["control/num_reinforce"] > 0 for record in steps)


@pytest.mark.slow
def test_aepo_measure_replaced_feeds_the_controller_every_own_answer_in_trl(tmp_path):
    """AEPO's measure_replaced in TRL: the step's apply measures the on-policy rows it replaces
    through the adapter's log-prob pass, the combined signal is logged, and step 2 decided from
    step 1's combined signal (not from the rows left)."""
    config = AEPOConfig(name="aepo", entropy_signal="on_policy_full", measure_replaced=True)
    trainer = make_trainer(config, tmp_path)
    trainer.train()
    steps = [record for record in trainer.state.log_history if "entropy/all_own_full" in record]
    assert len(steps) == 2
    assert any(record["control/num_reinforce"] > 0 for record in steps)
    for record in steps:
        assert isinstance(record["entropy/all_own_nll"], float)
    assert steps[1]["control/previous_entropy"] == steps[0]["entropy/all_own_full"]


@pytest.mark.slow
def test_controller_state_is_saved_in_trl_checkpoints_and_restored_on_resume(tmp_path):
    trainer = make_trainer("dcpo", tmp_path, save_strategy="steps", save_steps=2)
    trainer.train()
    saved = json.loads((tmp_path / "checkpoint-2" / STATE_FILE).read_text())
    assert saved == trainer.algorithm.state_dict()

    resumed = make_trainer("dcpo", tmp_path, max_steps=3)
    restored: list[dict[str, Any]] = []
    controller = resumed.algorithm.target.controller
    decide = controller.decide

    def recording_decide():
        restored.append(controller.state_dict()["state"])
        return decide()

    controller.decide = recording_decide
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    assert restored == [saved["controller"]["state"]]  # step 3 decided from the saved state
    assert resumed.algorithm.target.controller.num_updates == 3


@pytest.mark.parametrize(
    ("algorithm", "overrides", "named"),
    [
        (
            "clip_cov",
            {},
            "algorithm clip_cov is not available in TRL: its policy loss is 'clip_cov'",
        ),
        # clip_higher's range is TRL's epsilons: refused until they say the same.
        (
            "clip_higher",
            {},
            r"epsilon / epsilon_high .* GRPOConfig\(epsilon=0.2, epsilon_high=0.28\)",
        ),
        ("dcpo", {"scale_rewards": "batch"}, "scale_rewards"),
        ("aepo", {"beta": 0.04}, "beta"),
        # By what the targets do: AEPO's row replacement inside a composition is refused too.
        (
            ComposedConfig(name="composed", targets=["icr", "aepo"]),
            {"beta": 0.04},
            r"beta with algorithm composed: its row-replacing target \(aepo\)",
        ),
        # A loss term is computed by dcrl's loss, not TRL's: refused, not dropped.
        (
            ComposedConfig(targets=["icr", "entropy_reg"]),
            {},
            r"algorithm composed is not available in TRL: its target entropy_reg adds a loss term",
        ),
    ],
)
def test_unsupported_settings_are_refused_with_the_fix(algorithm, overrides, named, tmp_path):
    with pytest.raises(UserError, match=named):
        make_trainer(algorithm, tmp_path, **overrides)


def test_which_algorithms_run_in_trl_is_decided_by_what_they_do():
    """Every registered algorithm: accepted when its policy loss is PPO-clip and no target adds a
    loss term (reward shaping, advantage bonuses and row replacement run through `prepare`),
    refused naming the capability otherwise — never by a list of names."""
    from dcrl.algorithms import ALGORITHMS, get_algorithm_class, make_algorithm
    from dcrl.integrations.trl import trl_refusal

    accepted, refused = set(), set()
    for name in ALGORITHMS:
        algorithm = make_algorithm(get_algorithm_class(name).config_class())
        reason = trl_refusal(algorithm)
        if reason is None:
            accepted.add(name)
            assert _algorithm_config(name).name == name
        else:
            refused.add(name)
            with pytest.raises(UserError, match=f"algorithm {name} is not available in TRL"):
                _algorithm_config(name)
            uses_other_loss = algorithm.config.policy_loss != "ppo_clip"
            assert ("policy loss" in reason) == uses_other_loss, (name, reason)
    assert {"grpo", "aepo", "dcpo", "icr", "composed", "lp_f", "kimi", "shorter_better"} <= accepted
    assert {"clip_cov", "kl_cov", "entropy_reg"} <= refused


USER_LOSS_TARGET = """
from dcrl.targets import Target


class EntropyBonus(Target):
    name = "entropy_bonus"

    def loss_term(self, mb, logprobs, entropy, counts):
        return -entropy.sum() / counts["tokens"], {}
"""


@pytest.mark.usefixtures("registered")
def test_a_users_preset_and_targets_run_in_trl_by_what_they_do(tmp_path, monkeypatch):
    """A preset the user registered (docs/design.md's hard_correct: a bonus target) runs by its
    name and composed; so does the user's own 'module:Class' bonus target (examples/targets);
    a user target that adds a loss term is refused, naming it and the capability TRL lacks."""
    assert _algorithm_config("hard_correct").name == "hard_correct"
    hard_correct = ComposedConfig(name="composed", targets=[{"name": "hard_correct", "weight": 2}])
    assert _algorithm_config(hard_correct) is hard_correct
    monkeypatch.syspath_prepend(str(REPO / "examples" / "targets"))
    majority = ComposedConfig(name="composed", targets=["my_target:MajorityVote", "dcpo"])
    assert _algorithm_config(majority) is majority
    (tmp_path / "user_loss_target.py").write_text(USER_LOSS_TARGET)
    monkeypatch.syspath_prepend(str(tmp_path))
    with_loss = ComposedConfig(name="composed", targets=["icr", "user_loss_target:EntropyBonus"])
    with pytest.raises(
        UserError,
        match=r"algorithm composed is not available in TRL: its target entropy_bonus adds a "
        r"loss term",
    ):
        _algorithm_config(with_loss)


def test_a_config_builds_the_algorithm_it_names():
    """Each config carries its own name: no patching of `name` in the adapter."""
    assert _algorithm_config(DCPOConfig(target_entropy=0.3)).name == "dcpo"
    assert _algorithm_config("icr").name == "icr"
    with pytest.raises(UserError, match=r"name: 'grpo' is not the algorithm DCPOConfig"):
        _algorithm_config(DCPOConfig(name="grpo"))


# ---------------------------------------------------------- 2. equivalence on a fixed batch


def dcrl_score(model: torch.nn.Module):
    """StepContext.logprob_pass as dcrl's trainer computes it (dcrl.train.forward), no grad."""

    @torch.no_grad()
    def score(input_ids, attention_mask, response_mask, temperature=1.0, with_entropy=False):
        width = response_mask.shape[1]
        logprobs, entropy = response_logprobs(
            model,
            input_ids,
            attention_mask,
            input_ids[:, -width:],
            temperature=temperature,
            with_entropy=with_entropy,
        )
        mask = response_mask.float()
        return logprobs * mask, (entropy * mask if entropy is not None else None)

    return score


def padded_to(values: torch.Tensor, width: int) -> torch.Tensor:
    """(N, w) -> (N, width), zeros on the right (TRL cuts its completion tensors shorter)."""
    return torch.nn.functional.pad(values, (0, width - values.shape[1]))


@pytest.mark.parametrize("algorithm", ["aepo", "dcpo", "icr", "dcpo+icr"])
def test_trl_path_matches_dcrl_advantages_and_loss(algorithm, tmp_path):
    trainer = make_trainer(CONFIGS[algorithm], tmp_path)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by TRL's loop, which we bypass
    seen: dict[str, Any] = {}
    prepare, tempered_rollout = trainer.algorithm.prepare, trainer._tempered_rollout

    def recording_prepare(batch, scores, ctx):
        seen["batch"], seen["scores"] = batch, scores
        return prepare(batch, scores, ctx)

    def recording_rollout(*args):
        seen["tempered"] = tempered_rollout(*args)
        return seen["tempered"]

    trainer.algorithm.prepare, trainer._tempered_rollout = recording_prepare, recording_rollout
    reference = make_algorithm(trainer.algorithm.config)  # same config, fresh controller
    inputs = [{"prompt": p.prompt, "answer": p.answer} for p in PROBLEMS[:2]]
    inputs = [row for row in inputs for _ in range(GROUP_SIZE)]
    output = trainer._generate_and_score_completions(inputs)

    model = trainer.model
    ctx = StepContext(
        step=1, rollout=lambda *args: seen["tempered"], logprob_pass=dcrl_score(model)
    )
    expected, metrics = reference.prepare(seen["batch"], seen["scores"], ctx)
    acting = {
        "aepo": ["control/num_reinforce"],
        "dcpo": ["control/alpha"],
        "icr": ["icr/num_selected"],
        "dcpo+icr": ["control/alpha", "icr/num_selected"],
    }
    for name in acting[algorithm]:
        assert metrics[name] > 0  # the batch exercises the algorithm's own term
    mask = expected.response_mask.float()
    width = mask.shape[1]
    advantages = padded_to(output["advantages"], width)
    assert torch.equal(padded_to(output["completion_mask"], width).float(), mask)
    assert torch.equal(
        padded_to(output["completion_ids"], width) * mask.long(),
        expected.input_ids[:, -width:] * mask.long(),
    )

    if "dcpo" in algorithm:
        # ρ = exp(ℓ^T − ℓ^1) comes from log-probs of two float32 forward implementations (TRL's
        # fused LM head at T = 1 vs dcrl's logits path), so the token advantages α·c·ρ inherit
        # their difference: |Δρ| ≤ ρ·(|Δℓ^T| + |Δℓ^1|) to first order. Measure |Δℓ| and
        # propagate it, with a factor 2 for the second-order term and float32 rounding.
        ids, attention = expected.input_ids, expected.attention_mask
        temperature = metrics["control/temperature"]
        log_prob_gap = max(
            float(
                (
                    (
                        trainer._logprob_pass(ids, attention, mask, t)[0]
                        - ctx.logprob_pass(ids, attention, mask, t)[0]
                    )
                    * mask
                )
                .abs()
                .max()
            )
            for t in (1.0, temperature)
        )
        tolerance = (
            2
            * metrics["control/alpha"]
            * float(expected.advantages.abs().max())
            * (2 * log_prob_gap)
            + 4 * FLOAT32_EPS
        )
        assert log_prob_gap < 1e-4  # float32 paths; bf16 autocast would show ~1e-2 here
        torch.testing.assert_close(advantages, expected.advantages, rtol=0, atol=tolerance)
    else:
        # AEPO and ICR advantages come from the same dcrl.core functions on the same rewards,
        # lengths and rows: bit-identical.
        assert torch.equal(advantages, expected.advantages)
    for name, value in metrics.items():
        assert trainer._metrics["train"][name][-1] == pytest.approx(value, rel=1e-4), name

    # The loss at the first update (ratio 1): TRL's "dapo" aggregation (Σ over tokens / global
    # tokens) and dcrl's token-mean are the same sum in another order. Summing n float32 terms
    # errs by at most n·eps·Σ|x|/n = eps·Σ|A| after division by n tokens (plus the advantage
    # difference above for DCPO).
    trl_loss = trainer.compute_loss(model, output)
    logprobs, _ = response_logprobs(
        model, expected.input_ids, expected.attention_mask, expected.input_ids[:, -width:]
    )
    counts = {"num_tokens": float(mask.sum()), "num_sequences": float((mask.sum(-1) > 0).sum())}
    dcrl_loss, _ = reference.loss(expected, logprobs, None, counts)
    sum_bound = FLOAT32_EPS * float((expected.advantages.abs() * mask).sum())
    advantage_bound = float((advantages - expected.advantages).abs().max())
    assert (
        abs(float(trl_loss.detach()) - float(dcrl_loss.detach()))
        <= sum_bound + advantage_bound + 1e-7
    )

    # The gradients: each weight's gradient is a sum over n_tokens float32 terms, each through
    # one of two log-softmax implementations, so they agree to n_tokens·eps relative to their norm
    # (summation bound; observed ~3 eps).
    parameters = [p for p in model.parameters() if p.requires_grad]
    trl_grads = torch.autograd.grad(trl_loss, parameters)
    dcrl_grads = torch.autograd.grad(dcrl_loss, parameters)
    for trl_grad, dcrl_grad in zip(trl_grads, dcrl_grads, strict=True):
        scale = float(dcrl_grad.norm()) + FLOAT32_EPS
        gap = float((trl_grad - dcrl_grad).norm())
        assert gap <= float(mask.sum()) * FLOAT32_EPS * scale, (gap, scale)


# ------------------------------------------------------------------------ 3. data-parallel


@pytest.mark.slow
def test_data_parallel_ranks_agree(tmp_path):
    """torchrun --nproc_per_node 2: both ranks end with identical weights and decided the same
    temperatures, from the entropy all-reduced over both ranks' (different) rows. The worker uses
    the PI controller off saturation, so step 2's T is a continuous function of the entropy it
    was fed: a per-rank entropy would have given the ranks different temperatures."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"),
        *(str(REPO / "tests" / "trl_ddp_worker.py"), str(tmp_path), "aepo", "dcpo", "dcpo+icr"),
    ]
    run = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    for algorithm in ("aepo", "dcpo", "dcpo+icr"):
        ranks = [json.loads((tmp_path / f"{algorithm}-rank{r}.json").read_text()) for r in (0, 1)]
        assert ranks[0]["num_processes"] == 2
        assert "MULTI_CPU" in ranks[0]["distributed_type"] and ranks[0]["backend"] == "gloo"
        assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
        assert len(ranks[0]["temperatures"]) == 2
        assert 0.8 < ranks[0]["temperatures"][1] < 1.2  # off saturation: T tracks the entropy
        assert ranks[0]["temperatures"] == ranks[1]["temperatures"]
        assert ranks[0]["controller"] == ranks[1]["controller"]
        # Each rank trained on its own completions, so a per-rank entropy would differ ...
        assert ranks[0]["local_entropy_windows"] != ranks[1]["local_entropy_windows"]
        # ... but the controller got the all-reduced one: Σ NLL / Σ tokens over both ranks.
        last = [rank["local_entropy_windows"][-1] for rank in ranks]
        pooled = (last[0][0] + last[1][0]) / (last[0][1] + last[1][1])
        assert ranks[0]["controller"]["state"]["previous_entropy"] == pytest.approx(pooled)


@pytest.mark.slow
def test_a_composed_run_of_dcpo_and_icr_trains_in_trl(tmp_path):
    """Target distributions compose inside TRL as in `dcrl train`: DCPO's controller and ICR's
    bonus both act, the controller updates every step, and every parameter moves."""
    algorithm = ComposedConfig(
        name="composed", targets=[{"name": "dcpo", "controller": "pi"}, "icr"]
    )
    trainer = make_trainer(algorithm, tmp_path)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()

    unchanged = [n for n, p in trainer.model.named_parameters() if torch.equal(p, before[n])]
    assert unchanged == []
    steps = [record for record in trainer.state.log_history if "entropy/sampled_nll" in record]
    assert len(steps) == 2
    assert all(isinstance(record.get("control/alpha"), float) for record in steps)
    assert any(record.get("icr/num_selected", 0) > 0 for record in steps)
    assert steps[1]["control/previous_entropy"] == steps[0]["entropy/sampled_nll"]
