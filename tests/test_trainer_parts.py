"""The pieces the trainer delegates to the modules that own them, each against a hand computation
or a plain reference: the rollout's metrics (dcrl.core.stats.rollout_metrics), the mismatch
correction (dcrl.core.mismatch.correct_rollout), the task's grades of a rollout
(dcrl.rewards.grade_rollout) and the chunked no-grad log-prob pass
(dcrl.train.forward.logprob_pass)."""

from __future__ import annotations

import math
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import torch

from dcrl.core.logprobs import ENTROPY_SUMS_SIZE
from dcrl.core.mismatch import correct_rollout
from dcrl.core.stats import length_accuracy_correlation, rollout_metrics
from dcrl.models import build_tiny_model
from dcrl.rewards import grade_rollout
from dcrl.train import forward


def test_rollout_metrics_by_hand():
    scores = torch.tensor([1.0, 0.0, 1.0, 0.7])
    lengths = torch.tensor([3, 5, 2, 4])
    truncated = torch.tensor([False, True, False, False])
    groups = torch.tensor([0, 0, 1, 1])
    metrics = rollout_metrics(scores, lengths, truncated, groups)
    assert metrics["reward/accuracy"] == pytest.approx(2.7 / 4)
    assert metrics["reward/pass_at_n"] == 1.0  # both groups have a correct response
    assert metrics["length/mean"] == 3.5
    assert metrics["length/max"] == 5.0
    # linear interpolation between the sorted lengths 2, 3, 4, 5 at 0.9 · 3 = 2.7: 4 + 0.7
    assert metrics["length/p90"] == pytest.approx(4.7)
    assert metrics["length/truncated_frac"] == 0.25
    assert metrics["length/correct_mean"] == pytest.approx(3.0)  # (3 + 2 + 4) / 3; 0.7 counts
    corr = length_accuracy_correlation(lengths.float(), (scores > 0.5).float(), groups)
    assert metrics["corr/length_acc_group"] == float(corr["group"])
    assert metrics["corr/length_acc_batch"] == float(corr["batch"])
    assert (
        rollout_metrics(scores, lengths, truncated, torch.tensor([0, 0, 0, 0]))["reward/pass_at_n"]
        == 1.0
    )
    none_correct = rollout_metrics(torch.zeros(4), lengths, truncated, groups)
    assert none_correct["reward/pass_at_n"] == 0.0
    assert math.isnan(none_correct["length/correct_mean"])


def test_correct_rollout_weights_advantages_by_the_capped_ratio():
    engine = torch.tensor([[-1.0, -2.0, float("nan")], [-0.5, -3.0, -1.0]])
    trainer = torch.tensor([[-0.5, -2.5, -1.0], [-0.5, -1.0, -7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    advantages = torch.tensor([[1.0, 2.0], [-1.0, 4.0]])  # narrower than the responses

    same, metrics = correct_rollout(engine, trainer, mask, advantages, None)
    assert same is advantages and "rollout/is_weight_mean" not in metrics
    assert metrics["rollout/tokens_compared"] == 4.0  # NaN and padding left out

    weighted, metrics = correct_rollout(engine, trainer, mask, advantages, 2.0)
    # ratios exp(trainer − engine): e^0.5, e^-0.5, (NaN → 1); 1, e^2 → capped at 2, (pad → 1)
    ratios = torch.tensor([[math.exp(0.5), math.exp(-0.5)], [1.0, 2.0]])
    assert torch.allclose(weighted, advantages * ratios)
    compared = [math.exp(0.5), math.exp(-0.5), 1.0, 1.0, 2.0]  # the masked tokens' weights
    assert metrics["rollout/is_weight_mean"] == pytest.approx(sum(compared) / 5)


def test_grade_rollout_scores_each_response_against_its_problem():
    problems = [SimpleNamespace(answer="4", meta={"k": 1}), SimpleNamespace(answer="9", meta={})]
    batch = SimpleNamespace(
        response_texts=["4", "5", "9", "4"], group_index=torch.tensor([0, 0, 1, 1])
    )
    seen = []

    def reward(completion, answer, **meta):
        seen.append(meta)
        return float(completion == answer)

    scores = grade_rollout(reward, batch, problems)
    assert scores.dtype == torch.float32
    assert scores.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert seen == [{"k": 1}, {"k": 1}, {}, {}]


def test_logprob_pass_in_chunks_equals_one_row_at_a_time():
    """The chunked pass (rows sorted by length, padding trimmed per chunk) gives each row what a
    forward of that row alone gives (float64: equal to rounding), and each chunk's forward runs
    inside `fits(rows, tokens)`."""
    torch.manual_seed(0)
    model, _ = build_tiny_model(seed=0)
    model = model.double()
    n, prompt, width = 5, 4, 6
    lengths = [6, 2, 4, 1, 3]
    input_ids = torch.randint(3, 40, (n, prompt + width))
    attention = torch.ones(n, prompt + width, dtype=torch.long)
    response_mask = torch.zeros(n, width)
    for row, length in enumerate(lengths):
        response_mask[row, :length] = 1
        attention[row, prompt + length :] = 0  # right padding after the response
    calls = []

    @contextmanager
    def fits(rows, tokens):
        calls.append((rows, tokens))
        yield

    logprobs, entropy = forward.logprob_pass(
        model,
        input_ids,
        attention,
        response_mask,
        rows_at_once=2,
        temperature=0.7,
        with_entropy=True,
        fused=True,
        fits=fits,
    )
    assert logprobs.dtype == torch.float64 and logprobs.shape == (n, width)
    assert [rows for rows, _ in calls] == [2, 2, 1]
    # the longest chunk (rows of 6 and 4 tokens) keeps every column; the last (1 token) 1
    assert calls[0][1] == prompt + width and calls[-1][1] == prompt + 1
    for row, length in enumerate(lengths):
        alone, alone_entropy = forward.response_logprobs(
            model,
            input_ids[row : row + 1, : prompt + length],
            attention[row : row + 1, : prompt + length],
            input_ids[row : row + 1, prompt : prompt + length],
            temperature=0.7,
            with_entropy=True,
        )
        assert torch.allclose(logprobs[row, :length], alone[0], rtol=0, atol=1e-12)
        assert torch.allclose(entropy[row, :length], alone_entropy[0], rtol=0, atol=1e-12)
        assert not logprobs[row, length:].any() and not entropy[row, length:].any()


def test_update_tally_weights_metrics_by_tokens_and_counts_skipped_steps():
    from dcrl.train.tally import UpdateTally

    tally = UpdateTally()
    size = ENTROPY_SUMS_SIZE
    tally.add_micro_batch({"clipfrac": 0.5}, 10.0, torch.ones(size, dtype=torch.float64))
    tally.add_micro_batch({"clipfrac": 0.2}, 30.0, torch.full((size,), 2.0, dtype=torch.float64))
    tally.add_step(1.5, 0.4, skipped=False)
    tally.add_step(float("nan"), float("inf"), skipped=True)
    tally.add_step(0.5, 0.2, skipped=False)
    metrics = tally.metrics()
    assert metrics["loss/clipfrac"] == pytest.approx((0.5 * 10 + 0.2 * 30) / 40)
    assert math.isnan(metrics["loss/policy"])  # a skipped step's loss is reported, not hidden
    assert metrics["train/optimizer_steps"] == 2.0 and metrics["train/skipped_updates"] == 1.0
    assert tally.entropy_sums.tolist() == [3.0] * size
    assert list(metrics)[-2:] == ["train/optimizer_steps", "train/skipped_updates"]
