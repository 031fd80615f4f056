"""verl's own GRPO advantage, PPO loss, entropy and log-probs agree with dcrl.core's.

Tolerances come from float32 arithmetic (eps = 2**-23 ≈ 1.2e-7): the two sides compute the same
formula in a different order, so they differ by a few roundings of the values involved.
"""

import pytest
import torch
from omegaconf import OmegaConf
from verl.trainer.ppo import core_algos
from verl.utils import torch_functional as verl_F

import dcrl.integrations.verl.register  # noqa: F401
from dcrl.core.advantages import grpo_advantages
from dcrl.core.logprobs import token_entropy, token_logprobs
from dcrl.core.losses import aggregate_loss, ppo_clip_loss
from tests.verl.helpers import make_batch

EPS32 = torch.finfo(torch.float32).eps

AGG_MODES = ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]


def _actor_config(global_batch_info=None):
    return OmegaConf.create(
        {
            "clip_ratio": 0.2,
            "clip_ratio_low": 0.2,
            "clip_ratio_high": 0.28,
            "clip_ratio_c": 3.0,
            "global_batch_info": global_batch_info or {},
        }
    )


@pytest.mark.parametrize("norm_by_std", [True, False])
def test_grpo_advantage(norm_by_std):
    batch = make_batch(num_prompts=6, group_size=5, seed=11)
    rewards, mask = batch.batch["token_level_rewards"], batch.batch["response_mask"]
    uids = batch.non_tensor_batch["uid"]
    verl_advantages, _ = core_algos.compute_grpo_outcome_advantage(
        rewards, mask, uids, norm_adv_by_std_in_grpo=norm_by_std
    )
    ours = grpo_advantages(
        rewards.sum(-1),
        torch.as_tensor([int(u.split("-")[1]) for u in uids]),
        std="unbiased" if norm_by_std else "none",
    )
    # |Â| <= sqrt(n − 1) = 2 for 0/1 scores: a few float32 roundings of a value of size ~2. verl
    # gives all-equal groups (s − mean)/(0 + 1e-6), dcrl exactly 0; for 0/1 scores both are 0.
    torch.testing.assert_close(
        verl_advantages, ours[:, None] * mask.float(), rtol=0, atol=8 * EPS32 * 2
    )


@pytest.mark.parametrize("mode", AGG_MODES)
def test_loss_aggregation(mode):
    batch = make_batch(seed=12)
    loss_mat, mask = torch.randn(batch.batch["response_mask"].shape), batch.batch["response_mask"]
    verl_loss = core_algos.agg_loss(loss_mat, mask, mode)
    ours = aggregate_loss(loss_mat, mask, mode)
    # Sums of ~100 values of size ~1: error bound ~ (number of terms) × eps relative to the sum.
    # verl's seq-mean-token-mean divides by (count + 1e-8), a relative change of <= 1e-8.
    torch.testing.assert_close(verl_loss, ours, rtol=128 * EPS32, atol=128 * EPS32)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-sum"])
def test_ppo_clip_loss_and_registered_dcrl_loss(mode):
    generator = torch.Generator().manual_seed(13)
    batch = make_batch(seed=13)
    mask = batch.batch["response_mask"]
    old = batch.batch["old_log_probs"]
    new = old + 0.4 * torch.randn(old.shape, generator=generator)  # ratios well past the clips
    advantages = torch.randn(mask.shape[0], generator=generator)[:, None] * mask.float()
    info = {
        "dp_size": 2,
        "batch_num_tokens": int(mask.sum()) * 2,
        "global_batch_size": mask.shape[0] * 2,
        "loss_scale_factor": None,
    }
    config = _actor_config(info)

    verl_loss, verl_metrics = core_algos.compute_policy_loss_vanilla(
        old, new, advantages, mask, mode, config
    )
    registered = core_algos.get_policy_loss_fn("dcrl_ppo_clip")
    dcrl_loss, dcrl_metrics = registered(old, new, advantages, mask, mode, config)
    count = (
        {"num_tokens": int(mask.sum())}
        if mode == "token-mean"
        else {"num_sequences": mask.shape[0]}
    )
    direct, _ = ppo_clip_loss(
        new,
        old,
        advantages,
        mask,
        clip_low=0.2,
        clip_high=0.28,
        dual_clip=3.0,
        log_ratio_clamp=20.0,
        agg_mode=mode,
        **count,
    )
    # verl clips the ratio (1 ± ε), dcrl its log (exp(log1p(±ε))): equal to a few float32
    # roundings per token; summed over ~100 tokens of size ~|A|·r ≈ 1.
    torch.testing.assert_close(dcrl_loss, verl_loss, rtol=256 * EPS32, atol=256 * EPS32)
    torch.testing.assert_close(direct, dcrl_loss, rtol=4 * EPS32, atol=4 * EPS32)
    assert verl_metrics["actor/pg_clipfrac"] > 0  # the clip is exercised
    assert dcrl_metrics["actor/pg_clipfrac"] == pytest.approx(verl_metrics["actor/pg_clipfrac"])
    assert dcrl_metrics["actor/pg_clipfrac_lower"] == pytest.approx(
        verl_metrics["actor/pg_clipfrac_lower"]
    )


@pytest.mark.parametrize("temperature", [1.0, 0.8, 1.2])
def test_entropy_and_logprobs_at_a_temperature(temperature):
    generator = torch.Generator().manual_seed(14)
    logits = 3.0 * torch.randn(4, 9, 257, generator=generator)  # (N, L, V)
    tokens = torch.randint(0, 257, (4, 9), generator=generator)
    # verl divides the logits by the temperature before both (dp_actor / transformer_impl).
    scaled = logits / temperature
    verl_entropy = verl_F.entropy_from_logits(scaled)
    verl_logprobs = verl_F.logprobs_from_logits(scaled, tokens)
    # Entropy <= log V ≈ 5.5 and log-probs ~ −10: log-sum-exp over 257 terms rounds to within a
    # few ulps of values of that size; dcrl's chunked pass sums in another order.
    torch.testing.assert_close(
        token_entropy(logits, temperature), verl_entropy, rtol=0, atol=64 * EPS32 * 6
    )
    torch.testing.assert_close(
        token_logprobs(logits, tokens, temperature), verl_logprobs, rtol=0, atol=64 * EPS32 * 16
    )
