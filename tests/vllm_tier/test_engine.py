"""The vLLM engine inside dcrl's trainer, on vLLM's CPU build: it samples from the policy being
trained (weights synced after every update, after a resume, with LoRA merged), every method runs
through it, its samples match the hf backend's in distribution, and the rollout-trainer
mismatch is measured and, on request, corrected.

One engine for the module (`engine`); trainers get it through a patched
`dcrl.rollout.build_rollout_backend`, so they build it as `rollout.backend=vllm` does and the
engine holds whatever the previous test left in it (a trainer that fails to sync is caught).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

import dcrl.rollout
from dcrl.models import load_policy
from dcrl.rollout import get_rollout_backend
from dcrl.train.trainer import Trainer
from tests.vllm_tier.helpers import (
    TOKEN_TOLERANCE,
    encoded_sequences,
    engine_backend,
    engine_logprobs,
    explore_config,
    largest_difference,
    policy_logprobs,
    total,
)


@pytest.fixture(scope="module")
def engine():
    model, tokenizer = load_policy("tiny-explore")
    backend = engine_backend(model, tokenizer)
    yield backend
    del backend


@pytest.fixture
def built_with(engine, monkeypatch):
    """Trainers built while this fixture is active get the module's engine as their backend."""
    monkeypatch.setattr(dcrl.rollout, "build_rollout_backend", lambda *args: engine)
    return engine


def test_the_engine_samples_from_the_policy_after_every_update(tmp_path, built_with):
    trainer = Trainer(explore_config(tmp_path / "run", "explore-grpo", "train.steps=3"))
    pairs = encoded_sequences(trainer.tokenizer)
    initial = policy_logprobs(trainer, pairs)
    # The engine starts from the checkpoint, i.e. the step-0 policy.
    assert largest_difference(engine_logprobs(built_with, pairs), initial) <= TOKEN_TOLERANCE
    for _ in range(3):
        before = policy_logprobs(trainer, pairs)  # the policy the next rollout must use
        metrics = trainer.train_step()  # sync, sample, update (2 optimizer steps)
        assert metrics["train/optimizer_steps"] == 2
        # The engine sampled from `before`; the update since has not reached it yet.
        assert largest_difference(engine_logprobs(built_with, pairs), before) <= TOKEN_TOLERANCE
        # Its own log-probs of the tokens it sampled agree with the trainer's (the mismatch).
        assert metrics["rollout/logprob_abs_diff_mean"] <= TOKEN_TOLERANCE
    trained = policy_logprobs(trainer, pairs)
    # Training moved the policy by whole nats: the engine did not keep the step-0 weights.
    assert abs(total(trained) - total(initial)) > 1.0
    assert largest_difference(engine_logprobs(built_with, pairs), initial) > 100 * TOKEN_TOLERANCE


def test_a_resumed_run_syncs_the_checkpoint_weights(tmp_path, built_with):
    run_dir = tmp_path / "run"
    first = Trainer(explore_config(run_dir, "explore-grpo", "train.steps=2", "train.save_every=1"))
    first.fit()  # the engine got the weights of step 1's end; step 2's update is only on disk
    pairs = encoded_sequences(first.tokenizer)
    del first
    resumed = Trainer.from_run_dir(run_dir)
    resumed.config.train.steps = 3
    restored = policy_logprobs(resumed, pairs)
    assert largest_difference(engine_logprobs(built_with, pairs), restored) > 10 * TOKEN_TOLERANCE
    resumed.train_step()
    assert largest_difference(engine_logprobs(built_with, pairs), restored) <= TOKEN_TOLERANCE


def test_lora_adapters_reach_the_engine_merged(tmp_path, built_with):
    config = explore_config(
        tmp_path / "run",
        "explore-grpo",
        "train.steps=2",
        "train.lr=3e-2",
        "model.lora={rank: 8, alpha: 16, dropout: 0.0, target_modules: [q_proj, v_proj, up_proj]}",
    )
    trainer = Trainer(config)
    pairs = encoded_sequences(trainer.tokenizer)
    initial = policy_logprobs(trainer, pairs)
    trainer.train_step()
    after_one = policy_logprobs(trainer, pairs)
    trainer.train_step()  # syncs `after_one` (merged) before sampling
    assert abs(total(after_one) - total(initial)) > 0.5
    assert largest_difference(engine_logprobs(built_with, pairs), after_one) <= TOKEN_TOLERANCE
    # The trainer's model still holds separate adapters (merged only for the copy).
    assert any("lora_" in name for name, _ in trainer.model.named_parameters())


METHODS = ["explore-grpo", "explore-aepo", "explore-dcpo", "explore-icr", "explore-dcpo-icr"]


@pytest.mark.parametrize("recipe", METHODS)
def test_every_method_trains_through_the_engine(tmp_path, engine, recipe):
    extra = ("train.steps=2",)
    if recipe == "explore-aepo":  # one optimizer step per rollout: AEPO's tempered rows
        extra += ("train.mini_batch_prompts=8",)
    trainer = Trainer(explore_config(tmp_path / "run", recipe, *extra), backend=engine)
    temperatures = []
    generate = engine.generate

    def spy(prompts, n, temperature, *args, **kwargs):
        temperatures.append(temperature)
        return generate(prompts, n, temperature, *args, **kwargs)

    trainer.backend = type(
        "Spy", (), {"generate": staticmethod(spy), "sync_weights": engine.sync_weights}
    )()
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    history = trainer.fit()
    assert len(history) == 2
    for metrics in history:
        assert math.isfinite(metrics["loss/policy"])
        assert metrics["rollout/logprob_abs_diff_mean"] <= TOKEN_TOLERANCE
        assert metrics["rollout/tokens_compared"] > 0
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])]
    assert changed
    if recipe == "explore-aepo":
        assert any(t != 1.0 for t in temperatures), temperatures  # tempered groups, by the engine
    else:
        assert set(temperatures) == {1.0}


def test_first_step_samples_match_the_hf_backend_in_distribution(tmp_path, engine):
    """256 samples each (32 prompts × 8) from the same step-0 policy: accuracy, length and the
    policy's per-token NLL of the samples agree within 4 standard errors."""
    trainer = Trainer(explore_config(tmp_path / "run", "explore-grpo", backend="hf"))
    problems = trainer.problems[:32]
    prompts = [trainer.format_prompt(p) for p in problems]
    hf = get_rollout_backend("hf", trainer.model, trainer.tokenizer, batch_size=64, decoding="loop")
    engine.sync_weights(trainer.model)
    summaries = {}
    for name, backend in (("hf", hf), ("vllm", engine)):
        batch = backend.generate(prompts, 8, 1.0, 1.0, 48, seed=11)
        scores = trainer.task_scores(batch, problems)
        logprobs, _ = trainer.logprob_pass(*batch.sequences(), batch.response_mask)
        lengths = batch.response_lengths.double()
        nll = -(logprobs.double() * batch.response_mask).sum(-1) / lengths
        summaries[name] = {"accuracy": scores.double(), "length": lengths, "nll": nll}
    for key in ("accuracy", "length", "nll"):
        a, b = summaries["hf"][key], summaries["vllm"][key]
        standard_error = math.sqrt(a.var() / len(a) + b.var() / len(b))
        assert abs(float(a.mean() - b.mean())) <= 4 * standard_error + 1e-9, (
            key,
            a.mean(),
            b.mean(),
        )


class PerturbedEngine:
    """The module's engine, given a copy of the policy whose output layer is scaled by 0.6 (a
    flatter distribution) instead of the policy itself: it samples from another distribution
    than the one the trainer scores with."""

    def __init__(self, engine):
        self.engine = engine

    def generate(self, *args, **kwargs):
        return self.engine.generate(*args, **kwargs)

    def sync_weights(self, model):
        other = copy.deepcopy(model)
        with torch.no_grad():
            other.get_output_embeddings().weight.mul_(0.6)
        self.engine.sync_weights(other)


def test_the_mismatch_is_measured_and_corrected(tmp_path, engine):
    """An engine sampling from another distribution shows in rollout/logprob_*; with
    train.rollout_is_cap each token's advantage is weighted by min(π_old/π_engine, cap)."""
    config = explore_config(
        tmp_path / "run", "explore-grpo", "train.steps=1", "train.rollout_is_cap=2"
    )
    trainer = Trainer(config, backend=PerturbedEngine(engine))
    seen = {}
    original = trainer.correct_mismatch

    def record(batch, train_batch):
        seen["batch"], seen["plain"] = batch, train_batch.advantages.clone()
        seen["trainer"], _ = trainer.logprob_pass(*batch.sequences(), batch.response_mask)
        metrics = original(batch, train_batch)
        seen["weighted"] = train_batch.advantages.clone()
        return metrics

    trainer.correct_mismatch = record
    metrics = trainer.train_step()
    assert metrics["rollout/logprob_abs_diff_mean"] > 20 * TOKEN_TOLERANCE
    batch, plain, weighted = seen["batch"], seen["plain"], seen["weighted"]
    width = plain.shape[1]
    # By hand: min(exp(ℓ_trainer − ℓ_engine), 2) on the response tokens the engine reported.
    engine_lp = batch.sampling_logprobs[:, :width].double()
    trainer_lp = seen["trainer"][:, :width].double()
    reported = batch.response_mask[:, :width].bool() & torch.isfinite(engine_lp)
    weights = torch.where(reported, (trainer_lp - engine_lp).exp().clamp(max=2.0), 1.0)
    torch.testing.assert_close(weighted.double(), plain.double() * weights, rtol=1e-6, atol=1e-7)
    moved = reported & (plain != 0)
    assert moved.any() and not torch.allclose(weighted[moved], plain[moved])
    assert (weights[reported] == 2.0).any() and (weights[reported] < 1.0).any()
    assert float(weights[reported].mean()) == pytest.approx(
        metrics["rollout/is_weight_mean"], rel=1e-5
    )
