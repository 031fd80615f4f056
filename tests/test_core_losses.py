import math

import pytest
import torch

from dcrl.core import losses
from dcrl.core.losses import (
    AGGREGATION_MODES,
    MAX_RATIO_EXPONENT,
    aggregate_loss,
    clip_cov_loss,
    get_policy_loss,
    kl_cov_loss,
    kl_penalty,
    ppo_clip_loss,
    ppo_clip_token_loss,
    register_policy_loss,
)

# ----------------------------------------------------------------------------------------------
# Plain-Python references
# ----------------------------------------------------------------------------------------------


def aggregate_reference(loss_mat, mask, mode, norm_constant=None):
    rows, length = len(loss_mat), len(loss_mat[0])
    if mode == "token-mean":
        total = count = 0.0
        for i in range(rows):
            for t in range(length):
                if mask[i][t]:
                    total += float(loss_mat[i][t])
                    count += 1
        return total / count if count else 0.0
    sequence_losses = []
    for i in range(rows):
        values = [float(loss_mat[i][t]) for t in range(length) if mask[i][t]]
        if not values:
            continue
        if mode == "seq-mean-token-mean":
            sequence_losses.append(sum(values) / len(values))
        elif mode == "seq-mean-token-sum":
            sequence_losses.append(sum(values))
        else:
            sequence_losses.append(sum(values) / (norm_constant or length))
    return sum(sequence_losses) / len(sequence_losses) if sequence_losses else 0.0


def ppo_token_reference(logp, old, advantage, clip_low, clip_high, dual_clip):
    ratio = math.exp(logp - old)
    clipped = min(max(ratio, 1 - clip_low), 1 + clip_high)
    loss = max(-advantage * ratio, -advantage * clipped)
    if dual_clip is not None and advantage < 0:
        loss = min(loss, -dual_clip * advantage)
    return loss


def random_policy_batch(rows=6, length=8, spread=0.4):
    logprobs = -torch.rand(rows, length) * 3
    old_logprobs = logprobs + torch.randn(rows, length) * spread
    advantages = torch.randn(rows)
    mask = (torch.rand(rows, length) > 0.25).float()
    mask[0] = 0.0  # one empty response
    return logprobs, old_logprobs, advantages, mask


# ----------------------------------------------------------------------------------------------
# Aggregation
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", AGGREGATION_MODES)
def test_aggregation_matches_loop_reference(mode):
    loss_mat = torch.randn(5, 7)
    mask = (torch.rand(5, 7) > 0.4).float()
    mask[2] = 0.0
    expected = aggregate_reference(loss_mat.tolist(), mask.tolist(), mode)
    assert aggregate_loss(loss_mat, mask, mode).item() == pytest.approx(expected, rel=1e-6)
    expected_norm = aggregate_reference(loss_mat.tolist(), mask.tolist(), mode, norm_constant=20)
    got_norm = aggregate_loss(loss_mat, mask, mode, norm_constant=20.0)
    assert got_norm.item() == pytest.approx(expected_norm, rel=1e-6)


def test_aggregation_hand_values():
    loss_mat = torch.tensor([[1.0, 2.0, 3.0, 9.0], [4.0, 5.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    assert aggregate_loss(loss_mat, mask, "token-mean").item() == pytest.approx(15 / 5)
    assert aggregate_loss(loss_mat, mask, "seq-mean-token-mean").item() == pytest.approx(3.25)
    assert aggregate_loss(loss_mat, mask, "seq-mean-token-sum").item() == pytest.approx(7.5)
    assert aggregate_loss(loss_mat, mask, "seq-mean-token-sum-norm").item() == pytest.approx(
        7.5 / 4
    )


@pytest.mark.parametrize("mode", AGGREGATION_MODES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_micro_batches_with_global_counts_sum_to_the_full_batch_loss(mode, seed):
    generator = torch.Generator().manual_seed(seed)
    rows = 10
    loss_mat = torch.randn(rows, 6, generator=generator)
    mask = (torch.rand(rows, 6, generator=generator) > 0.3).float()
    mask[3] = 0.0
    full = aggregate_loss(loss_mat, mask, mode)

    num_micro_batches = int(torch.randint(2, 5, (1,), generator=generator))
    order = torch.randperm(rows, generator=generator)
    num_tokens = mask.sum()
    num_sequences = (mask.sum(-1) > 0).sum()
    total = sum(
        aggregate_loss(
            loss_mat[rows_of_micro_batch],
            mask[rows_of_micro_batch],
            mode,
            num_tokens=num_tokens,
            num_sequences=num_sequences,
        )
        for rows_of_micro_batch in order.chunk(num_micro_batches)
    )
    torch.testing.assert_close(total, full)


@pytest.mark.parametrize("mode", AGGREGATION_MODES)
def test_empty_mask_aggregates_to_zero_not_nan(mode):
    loss_mat = torch.randn(3, 4, requires_grad=True)
    loss = aggregate_loss(loss_mat, torch.zeros(3, 4), mode)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(loss_mat.grad, torch.zeros(3, 4))


def test_unknown_aggregation_mode_lists_the_modes():
    with pytest.raises(ValueError, match="seq-mean-token-sum-norm"):
        aggregate_loss(torch.zeros(2, 2), torch.ones(2, 2), "sequence-mean")


def test_code_faithful_micro_batch_token_mean_differs_from_global_token_mean():
    loss_mat = torch.tensor([[1.0, 1.0, 1.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    global_mean = aggregate_loss(loss_mat, mask, "token-mean")
    code_faithful = sum(aggregate_loss(loss_mat[i : i + 1], mask[i : i + 1]) / 2 for i in range(2))
    assert global_mean.item() == pytest.approx(7 / 4)
    assert code_faithful.item() == pytest.approx((1.0 + 4.0) / 2)


# ----------------------------------------------------------------------------------------------
# PPO clip
# ----------------------------------------------------------------------------------------------


def test_ppo_hand_case_unclipped_low_high_and_dual_clip():
    ratios = torch.tensor([[1.1, 0.5, 1.5, 4.0, 2.0]])
    advantages = torch.tensor([[1.0, -1.0, 2.0, -1.0, 1.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])  # the last (clipped) token is padding
    old_logprobs = torch.full((1, 5), -1.0)
    logprobs = (old_logprobs + ratios.log()).requires_grad_(True)

    loss_mat, metrics = ppo_clip_token_loss(logprobs, old_logprobs, advantages, mask)
    # unclipped −1·1.1; low clip −(−1)·0.8; high clip −2·1.2; dual clip −3·(−1)
    expected = torch.tensor([-1.1, 0.8, -2.4, 3.0])
    torch.testing.assert_close(loss_mat[0, :4], expected)
    assert metrics["clipfrac_low"] == pytest.approx(0.25)
    assert metrics["clipfrac_high"] == pytest.approx(0.25)
    assert metrics["clipfrac_dual"] == pytest.approx(0.25)
    assert metrics["ratio_mean"] == pytest.approx((1.1 + 0.5 + 1.5 + 4.0) / 4)
    k3 = [r - 1 - math.log(r) for r in (1.1, 0.5, 1.5, 4.0)]
    assert metrics["approx_kl"] == pytest.approx(sum(k3) / 4, rel=1e-5)

    loss, _ = ppo_clip_loss(logprobs, old_logprobs, advantages, mask)
    assert loss.item() == pytest.approx(expected.sum().item() / 4)
    loss.backward()
    # only the unclipped token has a gradient: d(−A·r)/dlogp = −A·r
    torch.testing.assert_close(logprobs.grad, torch.tensor([[-1.1 / 4, 0.0, 0.0, 0.0, 0.0]]))


@pytest.mark.parametrize("dual_clip", [3.0, None])
def test_ppo_token_loss_matches_loop_reference(dual_clip):
    logprobs, old_logprobs, advantages, mask = random_policy_batch(spread=0.8)
    loss_mat, _ = ppo_clip_token_loss(
        logprobs, old_logprobs, advantages, mask, clip_low=0.2, clip_high=0.28, dual_clip=dual_clip
    )
    for i in range(logprobs.shape[0]):
        for t in range(logprobs.shape[1]):
            expected = ppo_token_reference(
                logprobs[i, t].item(),
                old_logprobs[i, t].item(),
                advantages[i].item(),
                0.2,
                0.28,
                dual_clip,
            )
            assert loss_mat[i, t].item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_clip_fractions_count_exactly_the_tokens_without_gradient():
    logprobs, old_logprobs, advantages, mask = random_policy_batch(rows=20, length=10, spread=1.0)
    logprobs.requires_grad_(True)
    loss_mat, metrics = ppo_clip_token_loss(logprobs, old_logprobs, advantages, mask)
    loss_mat.sum().backward()
    no_gradient = (logprobs.grad == 0) & mask.bool()
    clipped = metrics["clipfrac_low"] + metrics["clipfrac_high"] + metrics["clipfrac_dual"]
    assert clipped > 0.1
    assert clipped == pytest.approx(no_gradient.sum().item() / mask.sum().item())


def test_clip_higher_changes_only_the_upper_bound():
    logprobs, old_logprobs, advantages, mask = random_policy_batch(rows=20, spread=1.0)
    symmetric, metrics_symmetric = ppo_clip_token_loss(
        logprobs, old_logprobs, advantages, mask, clip_high=0.2
    )
    higher, metrics_higher = ppo_clip_token_loss(
        logprobs, old_logprobs, advantages, mask, clip_high=0.28
    )
    ratio = (logprobs - old_logprobs).exp()
    above_upper_bound = (advantages.unsqueeze(-1) > 0) & (ratio > 1.2)
    changed = higher != symmetric
    assert changed.any()
    assert torch.equal(changed, above_upper_bound & (ratio != 1.2))
    assert metrics_higher["clipfrac_low"] == metrics_symmetric["clipfrac_low"]
    assert metrics_higher["clipfrac_dual"] == metrics_symmetric["clipfrac_dual"]
    assert metrics_higher["clipfrac_high"] < metrics_symmetric["clipfrac_high"]


def test_log_ratio_clamp_bounds_the_ratio():
    logprobs = torch.tensor([[0.0, 0.0]])
    old_logprobs = torch.tensor([[-50.0, -1.0]])
    advantages = torch.tensor([[-1.0, -1.0]])
    mask = torch.ones(1, 2)
    loss_mat, metrics = ppo_clip_token_loss(
        logprobs, old_logprobs, advantages, mask, dual_clip=None, log_ratio_clamp=20.0
    )
    assert loss_mat[0, 0].item() == pytest.approx(math.exp(20.0), rel=1e-5)
    assert loss_mat[0, 1].item() == pytest.approx(math.e, rel=1e-5)
    assert metrics["ratio_mean"] == pytest.approx((math.exp(20.0) + math.e) / 2, rel=1e-5)
    # Without a clamp only the exponent is capped (at MAX_RATIO_EXPONENT = 20): same values here.
    unclamped, _ = ppo_clip_token_loss(logprobs, old_logprobs, advantages, mask, dual_clip=None)
    assert torch.equal(unclamped, loss_mat)


@pytest.mark.parametrize("loss_name", ["ppo_clip", "clip_cov", "kl_cov"])
@pytest.mark.parametrize("advantage", [0.0, 1.0, -1.0])
@pytest.mark.parametrize("dual_clip", [3.0, None])
def test_extreme_log_ratios_give_a_finite_loss_and_gradient(loss_name, advantage, dual_clip):
    """log π/π_old = 100 (float32 exp overflows past 88.7) and −100, beside ordinary tokens."""
    logprobs = torch.tensor([[0.0, -100.0, -1.0, -2.0]], requires_grad=True)
    old_logprobs = torch.tensor([[-100.0, 0.0, -1.1, -1.9]])
    advantages = torch.tensor([advantage])
    mask = torch.ones(1, 4)
    options = {} if loss_name == "kl_cov" else {"dual_clip": dual_clip}
    loss, _ = get_policy_loss(loss_name)(logprobs, old_logprobs, advantages, mask, **options)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logprobs.grad).all()


def test_the_ratio_cap_changes_nothing_in_the_normal_range():
    """Against the textbook formula (no cap) on log-ratios within ±20, values and gradients."""
    logprobs, old_logprobs, advantages, mask = random_policy_batch(rows=16, spread=5.0)
    assert (logprobs - old_logprobs).abs().max() < MAX_RATIO_EXPONENT
    logprobs.requires_grad_(True)
    loss_mat, _ = ppo_clip_token_loss(logprobs, old_logprobs, advantages, mask)
    ratio = (logprobs - old_logprobs).exp()
    token_advantages = advantages.unsqueeze(-1)
    plain = torch.maximum(-token_advantages * ratio, -token_advantages * ratio.clamp(0.8, 1.2))
    plain = torch.where(token_advantages < 0, torch.minimum(plain, -3.0 * token_advantages), plain)
    torch.testing.assert_close(loss_mat, plain, rtol=1e-6, atol=0)
    (grad,) = torch.autograd.grad(loss_mat.sum(), logprobs)
    (plain_grad,) = torch.autograd.grad(plain.sum(), logprobs)
    torch.testing.assert_close(grad, plain_grad, rtol=1e-6, atol=0)


def test_per_sequence_and_constant_per_token_advantages_agree():
    logprobs, old_logprobs, advantages, mask = random_policy_batch()
    logprobs.requires_grad_(True)
    per_sequence, metrics_sequence = ppo_clip_loss(logprobs, old_logprobs, advantages, mask)
    (grad_sequence,) = torch.autograd.grad(per_sequence, logprobs)
    per_token_advantages = advantages.unsqueeze(-1).repeat(1, logprobs.shape[1])
    per_token, metrics_token = ppo_clip_loss(logprobs, old_logprobs, per_token_advantages, mask)
    (grad_token,) = torch.autograd.grad(per_token, logprobs)
    torch.testing.assert_close(per_sequence, per_token)
    torch.testing.assert_close(grad_sequence, grad_token)
    assert metrics_sequence == metrics_token


def test_ppo_empty_mask_gives_zero_loss_and_finite_grad():
    logprobs, old_logprobs, advantages, _ = random_policy_batch()
    logprobs.requires_grad_(True)
    loss, metrics = ppo_clip_loss(logprobs, old_logprobs, advantages, torch.zeros(6, 8))
    loss.backward()
    assert loss.item() == 0.0
    assert all(value == 0.0 for value in metrics.values())
    assert torch.equal(logprobs.grad, torch.zeros_like(logprobs))


def test_ppo_rejects_bad_inputs():
    logprobs, old_logprobs, advantages, mask = random_policy_batch()
    with pytest.raises(ValueError, match="advantages must be"):
        ppo_clip_loss(logprobs, old_logprobs, advantages[:-1], mask)
    with pytest.raises(ValueError, match="clip_low"):
        ppo_clip_loss(logprobs, old_logprobs, advantages, mask, clip_low=1.0)
    with pytest.raises(ValueError, match="dual_clip"):
        ppo_clip_loss(logprobs, old_logprobs, advantages, mask, dual_clip=1.0)
    with pytest.raises(ValueError, match="old_logprobs"):
        ppo_clip_loss(logprobs, old_logprobs[:, :-1], advantages, mask)


# ----------------------------------------------------------------------------------------------
# KL estimators
# ----------------------------------------------------------------------------------------------


def test_kl_estimators_hand_values():
    logprobs = torch.tensor([math.log(0.5)])
    ref_logprobs = torch.tensor([math.log(0.25)])
    assert kl_penalty(logprobs, ref_logprobs, "k1").item() == pytest.approx(math.log(2))
    assert kl_penalty(logprobs, ref_logprobs, "k2").item() == pytest.approx(0.5 * math.log(2) ** 2)
    # r = π_ref/π = 0.5: (r − 1) − log r
    assert kl_penalty(logprobs, ref_logprobs, "k3").item() == pytest.approx(-0.5 + math.log(2))


def test_k3_is_non_negative_and_zero_only_when_equal():
    logprobs = torch.randn(100) * 3
    ref_logprobs = torch.randn(100) * 3
    assert (kl_penalty(logprobs, ref_logprobs, "k3") >= 0).all()
    assert torch.equal(kl_penalty(logprobs, logprobs, "k3"), torch.zeros(100))


def test_kl_estimators_are_unbiased_or_not_as_documented():
    # KL(p ‖ q) for two categoricals, estimated from samples of p.
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.3, 0.5])
    exact = (p * (p / q).log()).sum().item()
    samples = torch.multinomial(p, 400_000, replacement=True)
    logp, logq = p.log()[samples], q.log()[samples]
    assert kl_penalty(logp, logq, "k1").mean().item() == pytest.approx(exact, abs=4e-3)
    assert kl_penalty(logp, logq, "k3").mean().item() == pytest.approx(exact, abs=4e-3)


def test_unknown_kl_estimator_raises():
    with pytest.raises(ValueError, match="k3"):
        kl_penalty(torch.zeros(2), torch.zeros(2), "k4")


# ----------------------------------------------------------------------------------------------
# Clip-Cov and KL-Cov
# ----------------------------------------------------------------------------------------------


def covariance_reference(advantages, logprobs, mask):
    """(A − Ā)(logp − mean logp) with means over valid tokens, as nested lists."""
    rows, length = logprobs.shape
    valid = [(i, t) for i in range(rows) for t in range(length) if mask[i, t]]
    mean_advantage = sum(advantages[i].item() for i, _ in valid) / len(valid)
    mean_logprob = sum(logprobs[i, t].item() for i, t in valid) / len(valid)
    return {
        (i, t): (advantages[i].item() - mean_advantage) * (logprobs[i, t].item() - mean_logprob)
        for i, t in valid
    }


def test_clip_cov_detaches_exactly_the_chosen_tokens():
    torch.manual_seed(3)
    logprobs = (-torch.rand(4, 10) * 6).requires_grad_(True)
    old_logprobs = logprobs.detach().clone()  # on-policy: no PPO bound is active
    advantages = torch.tensor([1.5, -1.5, 1.0, -1.0])
    mask = torch.ones(4, 10)
    covariance = covariance_reference(advantages, logprobs.detach(), mask)
    candidates = {position for position, value in covariance.items() if 1.0 <= value <= 5.0}
    assert len(candidates) >= 4  # the fixed seed gives several candidates

    options = {"clip_cov_ratio": 0.05}  # k = ⌊0.05 · 40⌋ = 2
    loss, metrics = clip_cov_loss(
        logprobs,
        old_logprobs,
        advantages,
        mask,
        generator=torch.Generator().manual_seed(7),
        **options,
    )
    loss.backward()
    detached = {
        (i, t) for i, t in zip(*torch.nonzero(logprobs.grad == 0, as_tuple=True), strict=True)
    }
    detached = {(int(i), int(t)) for i, t in detached}
    assert len(detached) == 2
    assert detached <= candidates
    assert metrics["clip_cov_frac"] == pytest.approx(2 / 40)
    ppo_loss, _ = ppo_clip_loss(logprobs, old_logprobs, advantages, mask)
    assert loss.item() == pytest.approx(ppo_loss.item())  # detaching keeps the value

    # The same generator seed picks the same tokens; the choice is random across seeds.
    picks = []
    for seed in (7, 7, 8, 9, 10):
        logprobs.grad = None
        loss, _ = clip_cov_loss(
            logprobs,
            old_logprobs,
            advantages,
            mask,
            generator=torch.Generator().manual_seed(seed),
            **options,
        )
        loss.backward()
        picks.append(frozenset(map(tuple, torch.nonzero(logprobs.grad == 0).tolist())))
    assert picks[0] == picks[1] == frozenset(detached)
    assert len(set(picks)) > 1


def test_clip_cov_skips_tokens_already_clipped_and_handles_no_candidates():
    logprobs = torch.tensor([[0.0, -4.0, -4.0, -4.0]], requires_grad=True)
    old_logprobs = logprobs.detach().clone()
    old_logprobs[0, 0] = -1.0  # token 0 is upper-clipped (r = e)
    # covariances: (4 − 1)(0 + 3) = 9 for token 0, (0 − 1)(−4 + 3) = 1 for the others
    advantages = torch.tensor([[4.0, 0.0, 0.0, 0.0]])
    mask = torch.ones(1, 4)
    loss, metrics = clip_cov_loss(
        logprobs, old_logprobs, advantages, mask, clip_cov_lb=5.0, clip_cov_ub=100.0
    )
    assert metrics["clip_cov_frac"] == 0.0
    assert metrics["clipfrac_high"] == pytest.approx(0.25)


def test_kl_cov_equals_plain_policy_gradient_when_ratio_is_one():
    logprobs, _, advantages, mask = random_policy_batch()
    logprobs.requires_grad_(True)
    loss, metrics = kl_cov_loss(logprobs, logprobs.detach(), advantages, mask, kl_cov_ratio=0.2)
    loss.backward()
    plain = aggregate_loss(-advantages.unsqueeze(-1).expand_as(logprobs), mask)
    assert loss.item() == pytest.approx(plain.item(), rel=1e-6)
    expected_grad = -advantages.unsqueeze(-1) * mask / mask.sum()
    torch.testing.assert_close(logprobs.grad, expected_grad.expand_as(logprobs))
    assert metrics["approx_kl"] == 0.0 and metrics["ratio_mean"] == pytest.approx(1.0)


def test_kl_cov_adds_the_penalty_on_the_top_covariance_tokens():
    logprobs, old_logprobs, advantages, mask = random_policy_batch(rows=8, length=10)
    num_valid = int(mask.sum())
    ratio, coef = 0.1, 0.7
    loss, metrics = kl_cov_loss(
        logprobs, old_logprobs, advantages, mask, kl_cov_ratio=ratio, kl_coef=coef
    )
    covariance = covariance_reference(advantages, logprobs, mask)
    top = sorted(covariance, key=covariance.get, reverse=True)[: int(ratio * num_valid)]
    penalty = sum(abs(logprobs[i, t].item() - old_logprobs[i, t].item()) for i, t in top)
    plain = sum(
        -advantages[i].item() * math.exp(logprobs[i, t].item() - old_logprobs[i, t].item())
        for i, t in covariance
    )
    assert loss.item() == pytest.approx((plain + coef * penalty) / num_valid, rel=1e-5)
    assert metrics["kl_cov_frac"] == pytest.approx(len(top) / num_valid)


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ppo_clip", "clip_cov", "kl_cov"])
def test_registered_losses_share_one_signature(name):
    logprobs, old_logprobs, advantages, mask = random_policy_batch()
    logprobs.requires_grad_(True)
    shared_options = dict(
        clip_low=0.2,
        clip_high=0.28,
        dual_clip=3.0,
        log_ratio_clamp=20.0,
        agg_mode="seq-mean-token-mean",
        num_tokens=mask.sum(),
        num_sequences=(mask.sum(-1) > 0).sum(),
    )
    loss, metrics = get_policy_loss(name)(
        logprobs, old_logprobs, advantages, mask, **shared_options
    )
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(logprobs.grad).all()
    assert logprobs.grad.abs().sum() > 0
    assert all(isinstance(value, float) for value in metrics.values())


def test_unknown_policy_loss_lists_registered_names():
    with pytest.raises(ValueError, match="ppo_clip"):
        get_policy_loss("ppo_clipped")


def test_registering_a_custom_loss_and_refusing_a_duplicate_name(monkeypatch):
    monkeypatch.setattr(losses, "_POLICY_LOSSES", dict(losses._POLICY_LOSSES))

    @register_policy_loss("reinforce")
    def reinforce_loss(logprobs, old_logprobs, advantages, mask, **options):
        return aggregate_loss(-advantages.unsqueeze(-1) * logprobs, mask), {}

    assert get_policy_loss("reinforce") is reinforce_loss
    with pytest.raises(ValueError, match="already registered"):
        register_policy_loss("ppo_clip")(reinforce_loss)
