"""Every registered algorithm trains the tiny model end to end, and the step recipes of AEPO, DCPO
and ICR produce the batches docs/papers.md §2.4, §3.4 and §4.5 prescribe.

The recipe checks record what `algorithm.prepare` received and returned during real trainer steps
(`tests.helpers.record_prepare`) and recompute it independently: a plain-Python GRPO advantage, a
plain full-softmax scoring of the old policy, a loop over groups.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from dcrl.algorithms import ALGORITHMS, TrainBatch, make_algorithm
from dcrl.core.regularizers import dcpo_alpha, dcpo_rho
from dcrl.train.config import load_run_config
from dcrl.train.trainer import Trainer
from tests.helpers import (
    COMMON_METRICS,
    has_low_digit,
    is_finite,
    read_metrics,
    record_prepare,
    tiny_config,
)

# What each algorithm logs besides COMMON_METRICS (all finite every step).
PPO_CLIP_METRICS = (
    "loss/clipfrac_low",
    "loss/clipfrac_high",
    "loss/clipfrac_dual",
    "loss/approx_kl",
    "loss/ratio_mean",
)
CONTROL_METRICS = ("control/temperature", "control/previous_entropy", "entropy/target")
ALGORITHM_METRICS: dict[str, tuple[str, ...]] = {
    "grpo": (*PPO_CLIP_METRICS, "reward/shaped_mean"),
    "aepo": (
        *PPO_CLIP_METRICS,
        *CONTROL_METRICS,
        "control/num_reinforce",
        "aepo/num_positives",
        "aepo/tempered_accuracy",
        "aepo/tempered_length",
    ),
    "dcpo": (
        *PPO_CLIP_METRICS,
        *CONTROL_METRICS,
        "control/alpha",
        "dcpo/rho_mean",
        "dcpo/rho_max",
        "dcpo/correct_frac",
    ),
    "icr": (
        *PPO_CLIP_METRICS,
        "reward/shaped_mean",
        "icr/num_selected",
        "icr/bonus",
        "icr/selected_length",
    ),
    "entropy_reg": (*PPO_CLIP_METRICS, "reward/shaped_mean", "loss/entropy_bonus"),
    "entropy_adv": (*PPO_CLIP_METRICS, "entropy_adv/bonus_mean"),
    "clip_cov": (*PPO_CLIP_METRICS, "reward/shaped_mean", "loss/clip_cov_frac"),
    "kl_cov": ("loss/approx_kl", "loss/ratio_mean", "reward/shaped_mean", "loss/kl_cov_frac"),
    "clip_higher": (*PPO_CLIP_METRICS, "reward/shaped_mean"),
    "lp_f": (*PPO_CLIP_METRICS, "reward/shaped_mean"),
    "kimi": (*PPO_CLIP_METRICS, "reward/shaped_mean"),
    "shorter_better": (*PPO_CLIP_METRICS, "reward/shaped_mean"),
    "composed": (*PPO_CLIP_METRICS, "reward/shaped_mean"),
}
TIMING_PREFIXES = ("time/", "perf/")


def grpo_reference(scores: torch.Tensor, group_index: torch.Tensor) -> torch.Tensor:
    """GRPO advantages by a plain loop: (s − mean_g) / (unbiased std_g + 1e-6), 0 for constant
    groups (docs/papers.md §1.2). (N,) -> (N,)."""
    advantages = torch.zeros(len(scores), dtype=torch.float64)
    for group in group_index.unique().tolist():
        rows = [i for i in range(len(scores)) if int(group_index[i]) == group]
        values = [float(scores[i]) for i in rows]
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        for i, v in zip(rows, values, strict=True):
            advantages[i] = 0.0 if max(values) == min(values) else (v - mean) / (std + 1e-6)
    return advantages.float()


def expected_temperature(previous_entropy: float, target_entropy: float) -> float:
    """The bang-bang rule of AEPO and DCPO (docs/papers.md §2.4, §3.4)."""
    return 1.2 if previous_entropy <= target_entropy else 0.8


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_every_algorithm_changes_every_parameter_and_logs_finite_metrics(tmp_path, algorithm):
    trainer = Trainer(tiny_config(tmp_path / "run", algorithm))
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    history = trainer.fit()

    unchanged = [
        name for name, p in trainer.model.named_parameters() if torch.equal(before[name], p)
    ]
    assert unchanged == [], f"{algorithm} left parameters untouched: {unchanged}"
    assert len(history) == 2
    expected = set(COMMON_METRICS) | set(ALGORITHM_METRICS[algorithm])
    for metrics in history:
        assert set(metrics) == expected
        bad = {k: v for k, v in metrics.items() if not is_finite(v)}
        assert bad == {}, f"{algorithm}: non-finite metrics {bad}"
        assert 0 < metrics["reward/accuracy"] < 1  # the test reward gives groups variance
        assert metrics["train/optimizer_steps"] == 1.0
    # The JSONL sink wrote the same records (timings aside), one per step.
    records = read_metrics(tmp_path / "run")
    assert [r["step"] for r in records] == [1, 2]
    for record, metrics in zip(records, history, strict=True):
        assert set(record) == {"step", *metrics}
        for name, value in metrics.items():
            if not name.startswith(TIMING_PREFIXES):
                assert record[name] == value, name


@pytest.mark.slow
def test_aepo_swaps_in_tempered_positives_with_advantage_one(tmp_path):
    config = tiny_config(
        tmp_path / "run",
        "aepo",
        "train.prompts_per_step=8",
        "train.mini_batch_prompts=8",
        "train.micro_batch_size=16",
        "algorithm.tempered_fraction=0.5",
        "algorithm.max_reinforce=3",
        "train.reuse_on_policy_logprobs=false",  # keep the old log-probs to check against
    )
    trainer = Trainer(config)
    steps = record_prepare(trainer)
    history = trainer.fit()

    target = config.algorithm.target_entropy
    previous_entropies = [config.algorithm.initial_entropy, history[0]["entropy/sampled_nll"]]
    assert previous_entropies[0] <= target < previous_entropies[1]  # both controller branches
    for step, metrics, previous in zip(steps, history, previous_entropies, strict=True):
        temperature = expected_temperature(previous, target)
        assert metrics["control/temperature"] == temperature
        assert metrics["control/previous_entropy"] == pytest.approx(previous)

        # One on-policy rollout at T = 1, then the tempered one at the controller's T on the
        # first half of the prompts, every row marked with the temperature it was sampled at.
        (on_policy_t, on_policy), (tempered_t, tempered) = step.generate_calls
        assert on_policy_t == 1.0 and tempered_t == temperature
        assert torch.all(tempered.temperature == temperature)
        assert tempered.prompt_texts == on_policy.prompt_texts[: len(tempered)]

        # Positives: GRPO advantage within the tempered groups above 0.05 (docs/papers.md §2.2).
        tempered_scores = torch.tensor(
            [has_low_digit(text, "") for text in tempered.response_texts]
        )
        positives = (grpo_reference(tempered_scores, tempered.group_index) > 0.05).nonzero()
        positives = positives.flatten().tolist()
        assert metrics["aepo/num_positives"] == len(positives)
        num_reinforce = min(3, len(positives))
        if previous > target:
            num_reinforce //= 2
        assert num_reinforce > 0
        assert metrics["control/num_reinforce"] == num_reinforce

        batch = step.train_batch
        is_reinforce = batch.extras["is_reinforce"]
        assert is_reinforce.tolist() == [i < num_reinforce for i in range(len(batch))]
        # Advantage exactly +1 on every valid token of the REINFORCE rows, 0 on their padding.
        reinforce_mask = batch.response_mask[is_reinforce].float()
        assert torch.equal(batch.advantages[is_reinforce], reinforce_mask)
        # Those rows are the first positives, in batch order.
        for row, source in zip(range(num_reinforce), positives, strict=False):
            length = int(tempered.response_lengths[source])
            assert int(batch.response_mask[row].sum()) == length
            assert torch.equal(
                batch.input_ids[row, -batch.response_mask.shape[1] :][:length],
                tempered.response_ids[source, :length],
            )
        # One mini-batch, one epoch: the update scores the batch with the old policy's weights,
        # so the logged entropies are means of −old_logprobs; the policy's own leaves out the
        # REINFORCE rows (float32 sums of ~10^3 terms of size ~1: well inside 1e-4).
        nll = -batch.old_logprobs * batch.response_mask
        own = ~is_reinforce
        assert metrics["entropy/sampled_nll"] == pytest.approx(
            float(nll.sum() / batch.response_mask.sum()), abs=1e-4
        )
        assert metrics["entropy/on_policy_nll"] == pytest.approx(
            float(nll[own].sum() / batch.response_mask[own].sum()), abs=1e-4
        )
        # The other rows keep their on-policy GRPO advantage.
        grpo = grpo_reference(step.scores, on_policy.group_index)
        width = on_policy.response_mask.shape[1]
        for row in range(num_reinforce, len(batch)):
            valid = on_policy.response_mask[row].float()
            torch.testing.assert_close(
                batch.advantages[row, :width], grpo[row] * valid, atol=1e-5, rtol=0
            )


def score_with_full_softmax(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_width: int,
    temperature: float,
) -> torch.Tensor:
    """log softmax(logits / T) of the response tokens, in one plain pass (no chunking, no
    trimming): the independent reference of the trainer's scoring. -> (N, response_width)."""
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
        ).logits  # (N, S, V)
    logits = logits[:, -response_width - 1 : -1].float()  # (N, Lr, V)
    response_ids = input_ids[:, -response_width:]  # (N, Lr)
    logprobs = torch.log_softmax(logits / temperature, dim=-1)
    return logprobs.gather(-1, response_ids[..., None]).squeeze(-1)  # (N, Lr)


def test_dcpo_alpha_and_rho_match_the_core_functions_on_an_independent_scoring(tmp_path):
    config = tiny_config(tmp_path / "run", "dcpo")
    trainer = Trainer(config)
    old_policy = copy.deepcopy(trainer.model).eval()
    steps = record_prepare(trainer)
    history = trainer.fit()

    target = config.algorithm.target_entropy
    previous_entropies = [config.algorithm.initial_entropy, history[0]["entropy/sampled_nll"]]
    for step, metrics, previous in zip(steps, history, previous_entropies, strict=True):
        temperature = expected_temperature(previous, target)
        assert metrics["control/temperature"] == temperature

        old_policy.load_state_dict(step.old_policy_state)
        input_ids, attention_mask = step.batch.sequences()
        mask = step.batch.response_mask
        width = mask.shape[1]
        logprobs = score_with_full_softmax(old_policy, input_ids, attention_mask, width, 1.0)
        logprobs_at_t = score_with_full_softmax(
            old_policy, input_ids, attention_mask, width, temperature
        )
        batch = step.train_batch
        torch.testing.assert_close(batch.old_logprobs, logprobs * mask, atol=1e-5, rtol=1e-5)

        correct = step.scores > 0.05
        assert 0 < float(correct.float().mean()) < 1
        alpha = dcpo_alpha(target, previous, correct, cap=0.1)
        assert metrics["control/alpha"] == pytest.approx(alpha, rel=1e-6)
        assert 0 < alpha < 1
        rho = dcpo_rho(logprobs_at_t, logprobs, mask)
        assert not torch.allclose(rho[mask.bool()], torch.ones(1))  # T ≠ 1 re-weights tokens
        grpo = grpo_reference(step.scores, step.batch.group_index)
        expected = ((1 - alpha) * grpo[:, None] + alpha * correct[:, None].float() * rho) * mask
        torch.testing.assert_close(batch.advantages, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_icr_bonus_lands_on_the_shortest_correct_response_of_each_group(tmp_path):
    # Longer responses so that lengths vary and "shortest" is decided by length, not by ties.
    config = tiny_config(tmp_path / "run", "icr", "rollout.max_new_tokens=48")
    trainer = Trainer(config)
    steps = record_prepare(trainer)
    history = trainer.fit()

    shortest_was_not_first_correct = False
    for step, metrics in zip(steps, history, strict=True):
        lengths = step.batch.response_lengths
        assert int(lengths.max()) < 4096  # LP-F is 0 here: the reward is the score
        group_index = step.batch.group_index
        selected = []
        for group in group_index.unique().tolist():
            correct = [
                i for i in range(len(lengths)) if group_index[i] == group and step.scores[i] > 0
            ]
            if correct:
                shortest = min(correct, key=lambda i: (int(lengths[i]), i))
                selected.append(shortest)
                shortest_was_not_first_correct |= shortest != correct[0]
        assert len(selected) > 0
        bonus = 128.0 / len(selected)
        assert metrics["icr/num_selected"] == len(selected)
        assert metrics["icr/bonus"] == pytest.approx(bonus)

        batch = step.train_batch
        assert batch.extras["icr_selected"].nonzero().flatten().tolist() == selected
        expected = grpo_reference(step.scores, group_index)
        expected[selected] += bonus
        torch.testing.assert_close(
            batch.advantages, expected[:, None] * batch.response_mask, atol=1e-4, rtol=0
        )
    assert shortest_was_not_first_correct  # the seeds exercise the length criterion


def test_clip_cov_clips_with_the_configured_ppo_options():
    """The shared PPO options reach every registered loss: Clip-Cov with no token detached is
    PPO-clip with the same clip range, dual clip and log-ratio clamp."""
    mask = torch.ones(4, 6)
    mask[0, 4:] = 0
    old_logprobs = torch.randn(4, 6) - 2.0
    logprobs = old_logprobs + torch.randn(4, 6)  # ratios far outside 1 ± ε
    advantages = torch.tensor([1.0, -1.0, -2.0, 0.5])[:, None] * mask
    batch = TrainBatch(
        input_ids=torch.zeros(4, 8, dtype=torch.long),
        attention_mask=torch.ones(4, 8, dtype=torch.long),
        response_mask=mask,
        old_logprobs=old_logprobs,
        advantages=advantages,
    )
    counts = {"num_tokens": float(mask.sum()), "num_sequences": 4.0}
    shared = (
        "algorithm.clip_low=0.1",
        "algorithm.clip_high=0.3",
        "algorithm.dual_clip=1.5",
        "algorithm.log_ratio_clamp=0.5",
    )

    def loss_of(*overrides: str) -> torch.Tensor:
        algorithm = make_algorithm(load_run_config(None, list(overrides)).algorithm)
        return algorithm.loss(batch, logprobs, None, counts)[0]

    no_detached_tokens = ("algorithm.clip_cov_lb=1e8", "algorithm.clip_cov_ub=1e9")
    clip_cov = loss_of("algorithm.name=clip_cov", *no_detached_tokens, *shared)
    assert torch.equal(clip_cov, loss_of("algorithm.name=grpo", *shared))
    assert not torch.allclose(clip_cov, loss_of("algorithm.name=grpo"))  # the options matter


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["aepo", "dcpo"])
def test_weight_authority_reaches_the_regularizer(tmp_path, algorithm):
    """dcrl's pi with weight_max: the controller's weight sets AEPO's tempered prompts and
    REINFORCE rows, and DCPO's α (in place of the papers' |𝓗 − H|-based rule)."""
    config = tiny_config(
        tmp_path / "run",
        algorithm,
        "train.prompts_per_step=8",
        "train.mini_batch_prompts=8",
        "train.micro_batch_size=16",
        "algorithm.controller=pi",
        "algorithm.weight_max=3.0",
        "algorithm.temperature_high=2.0",
        "algorithm.target_entropy=50.0",  # far above: the controller pushes at full weight
        "algorithm.initial_entropy=0.0",
        *(["algorithm.max_reinforce=4"] if algorithm == "aepo" else []),
    )
    trainer = Trainer(config)
    steps = record_prepare(trainer)
    history = trainer.fit()
    for step, metrics in zip(steps, history, strict=True):
        weight = metrics["control/weight"]
        assert weight == pytest.approx(3.0)  # saturated: min(|e| / e_sat, weight_max)
        assert metrics["control/temperature"] == 2.0
        if algorithm == "aepo":
            (_, on_policy), (_, tempered) = step.generate_calls
            group_size = len(on_policy) // 8
            # 8 prompts × 0.25 × weight 3 = 6 prompts re-sampled (2 without the weight).
            assert len(tempered) == 6 * group_size
            positives = int(metrics["aepo/num_positives"])
            assert metrics["control/num_reinforce"] == min(round(3.0 * 4), positives)
        else:
            correct = step.scores > 0.05
            expected = dcpo_alpha(50.0, 0.0, correct, cap=0.1, weight=weight)
            assert metrics["control/alpha"] == pytest.approx(expected, rel=1e-6)
            fraction = float(correct.float().mean())
            a = weight * 0.1 / fraction
            assert metrics["control/alpha"] == pytest.approx(a / (1 + a), rel=1e-6)
