import math

import pytest
import torch

from dcrl.core.advantages import grpo_advantages
from dcrl.core.masking import masked_mean
from dcrl.core.regularizers import (
    aepo_mix_batch,
    aepo_num_reinforce,
    aepo_select_positives,
    correct_indicator,
    dcpo_alpha,
    dcpo_rho,
    dcpo_token_advantages,
    entropy_advantage,
    entropy_reg_term,
    icr_bonus,
    icr_select_shortest,
)

# --------------------------------------------------------------------------------------- AEPO


def test_correct_indicator_threshold():
    assert correct_indicator(torch.tensor([1.0, 0.05, 0.06, 0.0])).tolist() == [
        True,
        False,
        True,
        False,
    ]


def test_aepo_positives_exclude_all_correct_groups_by_default():
    # groups: mixed [1,0,0], all-correct [1,1,1], all-wrong [0,0,0], mixed [1,1,0]
    scores = torch.tensor([1.0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 0])
    group_index = torch.arange(4).repeat_interleave(3)
    positives = aepo_select_positives(scores, group_index)
    assert positives.nonzero().flatten().tolist() == [0, 9, 10]
    every_correct = aepo_select_positives(scores, group_index, include_all_correct_groups=True)
    assert every_correct.nonzero().flatten().tolist() == [0, 3, 4, 5, 9, 10]


def test_aepo_positives_threshold_applies_to_the_advantage():
    # group [1, 1, 1, 1, 0.9]: the 1.0s have a small positive advantage (0.447 with unbiased std)
    scores = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.9])
    group_index = torch.zeros(5, dtype=torch.long)
    assert aepo_select_positives(scores, group_index, threshold=0.05).sum() == 4
    assert aepo_select_positives(scores, group_index, threshold=0.5).sum() == 0


def test_aepo_no_correct_response_selects_nothing():
    scores = torch.zeros(10)
    group_index = torch.arange(2).repeat_interleave(5)
    assert not aepo_select_positives(scores, group_index).any()
    assert not aepo_select_positives(scores, group_index, include_all_correct_groups=True).any()
    assert aepo_num_reinforce(0, entropy_above_target=False) == 0


def test_aepo_num_reinforce_caps_and_halves():
    assert aepo_num_reinforce(100, entropy_above_target=False) == 60
    assert aepo_num_reinforce(100, entropy_above_target=True) == 30
    assert aepo_num_reinforce(45, entropy_above_target=False) == 45
    assert aepo_num_reinforce(7, entropy_above_target=True) == 3  # floor
    assert aepo_num_reinforce(61, entropy_above_target=True, max_samples=61) == 30
    with pytest.raises(ValueError):
        aepo_num_reinforce(-1, entropy_above_target=False)


def make_batches():
    on_policy_mask = torch.tensor(
        [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 0, 0]]
    )
    on_policy = {
        "input_ids": torch.arange(24).reshape(6, 4),
        "response_mask": on_policy_mask,
        "scores": torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0]),
        "advantages": torch.tensor([0.5, -0.5, 0.7, -0.7, 0.2, -0.2]),
    }
    tempered = {
        "input_ids": 100 + torch.arange(20).reshape(5, 4),
        "response_mask": torch.tensor(
            [[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
        ),
        "scores": torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0]),
        "advantages": torch.full((5,), 9.0),  # ignored
    }
    return on_policy, tempered


def test_aepo_mix_front_replaces_first_rows_with_plus_one():
    on_policy, tempered = make_batches()
    original = {key: value.clone() for key, value in on_policy.items()}
    mixed = aepo_mix_batch(on_policy, tempered, torch.tensor([3, 1]))

    assert set(mixed) == {"input_ids", "response_mask", "scores", "advantages", "is_reinforce"}
    for key in ("input_ids", "response_mask", "scores"):
        assert mixed[key].shape == on_policy[key].shape  # batch size unchanged
        assert torch.equal(mixed[key][0], tempered[key][3])
        assert torch.equal(mixed[key][1], tempered[key][1])
        assert torch.equal(mixed[key][2:], on_policy[key][2:])
    assert mixed["is_reinforce"].tolist() == [True, True, False, False, False, False]
    # +1 on every valid token of the REINFORCE rows, 0 on their padding
    assert mixed["advantages"][0].tolist() == [1.0, 1.0, 1.0, 0.0]
    assert mixed["advantages"][1].tolist() == [1.0, 1.0, 0.0, 0.0]
    expected_rest = on_policy["advantages"][2:, None] * on_policy["response_mask"][2:].float()
    assert torch.equal(mixed["advantages"][2:], expected_rest)
    for key, value in original.items():  # inputs untouched
        assert torch.equal(on_policy[key], value)


def test_aepo_mix_spread_and_token_level_advantages():
    on_policy, tempered = make_batches()
    token_advantages = on_policy["advantages"][:, None] * on_policy["response_mask"].float()
    on_policy["advantages"] = token_advantages
    mixed = aepo_mix_batch(on_policy, tempered, torch.tensor([0, 3]), placement="spread")
    assert mixed["is_reinforce"].nonzero().flatten().tolist() == [0, 3]  # floor(j * 6 / 2)
    assert torch.equal(mixed["input_ids"][3], tempered["input_ids"][3])
    assert mixed["advantages"][3].tolist() == [1.0, 1.0, 1.0, 0.0]
    assert torch.equal(mixed["advantages"][1], token_advantages[1])
    assert mixed["advantages"].shape == (6, 4)


def test_aepo_mix_without_positives_keeps_the_batch():
    on_policy, tempered = make_batches()
    mixed = aepo_mix_batch(on_policy, tempered, torch.zeros(0, dtype=torch.long))
    assert not mixed["is_reinforce"].any()
    assert torch.equal(mixed["input_ids"], on_policy["input_ids"])


def test_aepo_mix_errors():
    on_policy, tempered = make_batches()
    with pytest.raises(ValueError, match="only 6"):
        aepo_mix_batch(on_policy, tempered, torch.arange(7) % 5)
    bad = dict(tempered, input_ids=tempered["input_ids"][:, :3])
    with pytest.raises(ValueError, match="same length L"):
        aepo_mix_batch(on_policy, bad, torch.tensor([0]))
    missing = {key: value for key, value in tempered.items() if key != "scores"}
    with pytest.raises(KeyError, match="scores"):
        aepo_mix_batch(on_policy, missing, torch.tensor([0]))
    no_advantages = {key: value for key, value in on_policy.items() if key != "advantages"}
    with pytest.raises(KeyError, match="advantages"):
        aepo_mix_batch(no_advantages, tempered, torch.tensor([0]))


# --------------------------------------------------------------------------------------- DCPO


def test_dcpo_rho_is_exactly_one_at_temperature_one():
    logprobs = torch.randn(3, 5) - 2.0
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    rho = dcpo_rho(logprobs.clone(), logprobs, mask)
    assert torch.equal(rho, mask.float())


def test_dcpo_rho_values_padding_and_no_grad():
    at_temperature = torch.tensor([[-1.0, -2.0, float("-inf")]], requires_grad=True)
    at_one = torch.tensor([[-1.5, -1.0, float("-inf")]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0]])
    rho = dcpo_rho(at_temperature, at_one, mask)
    assert rho.tolist()[0] == pytest.approx([math.exp(0.5), math.exp(-1.0), 0.0])
    assert not rho.requires_grad
    clipped = dcpo_rho(at_temperature, at_one, mask, max_rho=1.2)
    assert clipped.tolist()[0] == pytest.approx([1.2, math.exp(-1.0), 0.0])


def test_dcpo_rho_reweights_toward_the_tempered_distribution():
    # ρ = π^T/π, so E_{v~π}[ρ(v)] = 1 and for T > 1 it is > 1 exactly on the less likely tokens.
    logits = torch.randn(1, 50) * 2
    temperature = 1.2
    logprobs = torch.log_softmax(logits, dim=-1)  # (1, V): every vocab token as a "position"
    logprobs_at_temperature = torch.log_softmax(logits / temperature, dim=-1)
    rho = dcpo_rho(logprobs_at_temperature, logprobs, torch.ones(1, 50))
    assert (logprobs.exp() * rho).sum().item() == pytest.approx(1.0, abs=1e-5)
    order = logprobs.argsort(dim=-1)  # least likely first
    assert rho[0, order[0, 0]] > 1 > rho[0, order[0, -1]]


def test_dcpo_alpha_hand_computed_cap_and_no_correct():
    correct = torch.tensor([True, False, True, False])
    a = 0.05 / 0.5
    assert dcpo_alpha(0.5, 0.45, correct) == pytest.approx(a / (1 + a))
    a_capped = 0.1 / 0.5  # |0.5 - 0| = 0.5 is capped at 0.1
    assert dcpo_alpha(0.5, 0.0, correct) == pytest.approx(a_capped / (1 + a_capped))
    assert dcpo_alpha(0.5, 0.0, correct, cap=0.3) == pytest.approx(0.6 / 1.6)
    assert dcpo_alpha(0.5, 0.0, torch.zeros(4)) == 0.0  # p = 0: no NaN
    assert dcpo_alpha(0.5, 0.0, torch.ones(4)) == pytest.approx(0.1 / 1.1)  # all correct
    assert dcpo_alpha(0.5, 0.5, correct) == 0.0


def test_dcpo_token_advantages_hand_and_reference():
    grpo = torch.tensor([1.0, -1.0])
    correct = torch.tensor([True, False])
    rho = torch.tensor([[2.0, 0.5, 0.0], [3.0, 3.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    mixed = dcpo_token_advantages(grpo, correct, rho, 0.2, mask)
    assert mixed.tolist()[0] == pytest.approx([0.8 + 0.4, 0.8 + 0.1, 0.0])
    assert mixed.tolist()[1] == pytest.approx([-0.8, -0.8, 0.0])

    generator = torch.Generator().manual_seed(4)
    grpo = torch.randn(6, generator=generator)
    correct = torch.rand(6, generator=generator) > 0.5
    rho = torch.rand(6, 7, generator=generator) * 2
    mask = torch.rand(6, 7, generator=generator) > 0.3
    alpha = 0.13
    mixed = dcpo_token_advantages(grpo, correct, rho, alpha, mask)
    for i in range(6):
        for t in range(7):
            expected = (1 - alpha) * grpo[i] + alpha * float(correct[i]) * rho[i, t]
            assert mixed[i, t].item() == pytest.approx(expected.item() if mask[i, t] else 0.0)


def test_dcpo_without_correct_responses_is_plain_grpo_and_finite():
    scores = torch.zeros(6)
    group_index = torch.arange(2).repeat_interleave(3)
    correct = correct_indicator(scores)
    alpha = dcpo_alpha(0.5, 0.0, correct)
    grpo = grpo_advantages(scores, group_index)
    mask = torch.ones(6, 4)
    rho = dcpo_rho(torch.full((6, 4), -1.0), torch.full((6, 4), -2.0), mask)
    mixed = dcpo_token_advantages(grpo, correct, rho, alpha, mask)
    assert torch.isfinite(mixed).all()
    assert torch.equal(mixed, torch.zeros(6, 4))


# ---------------------------------------------------------------------------------------- ICR


def loop_select_shortest(rewards, lengths, group_index, selection, threshold=0.0):
    selected = []
    for gid in sorted(set(group_index.tolist())):
        rows = [i for i in range(len(rewards)) if group_index[i] == gid]
        if selection == "correct":
            rows = [i for i in rows if rewards[i] > threshold]
        if rows:
            selected.append(min(rows, key=lambda i: (lengths[i].item(), i)))
    return sorted(selected)


def test_icr_select_shortest_hand_and_ties():
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0])
    lengths = torch.tensor([30, 20, 5, 20, 7, 9, 50, 50])
    group_index = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    # group 0: correct lengths 30, 20, 20 -> tie, lowest index 1; group 1: none; group 2: tie -> 6
    assert icr_select_shortest(rewards, lengths, group_index).tolist() == [1, 6]
    # "any": group 0 -> index 2 (length 5, wrong), group 1 -> 4, group 2 -> 6
    assert icr_select_shortest(rewards, lengths, group_index, selection="any").tolist() == [2, 4, 6]


def test_icr_select_shortest_positive_threshold_excludes_capped_responses():
    rewards = torch.tensor([1.0, 0.0, 0.5])  # LP-F: correct at the cap scores 0
    lengths = torch.tensor([9000, 10, 5000])
    assert icr_select_shortest(rewards, lengths, torch.zeros(3, dtype=torch.long)).tolist() == [2]


@pytest.mark.parametrize("selection", ["correct", "any"])
def test_icr_select_shortest_matches_loop_reference(selection):
    generator = torch.Generator().manual_seed(5)
    for _ in range(5):
        sizes = torch.randint(1, 7, (15,), generator=generator)
        group_index = (torch.randperm(40, generator=generator)[:15] * 3).repeat_interleave(sizes)
        group_index = group_index[torch.randperm(group_index.numel(), generator=generator)]
        rewards = torch.randint(0, 2, group_index.shape, generator=generator).float()
        lengths = torch.randint(1, 6, group_index.shape, generator=generator)  # many ties
        expected = loop_select_shortest(rewards, lengths, group_index, selection)
        actual = icr_select_shortest(rewards, lengths, group_index, selection=selection)
        assert actual.tolist() == expected


def test_icr_bonus_lands_on_shortest_correct_with_total_mass_c():
    scores = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    lengths = torch.tensor([40, 25, 10, 30, 60, 5, 7, 8, 9])
    group_index = torch.arange(3).repeat_interleave(3)
    advantages = grpo_advantages(scores, group_index)
    new, info = icr_bonus(advantages, scores, lengths, group_index)
    assert info["selected_index"].tolist() == [1, 4]
    assert info["num_selected"] == 2
    assert info["bonus_per_response"] == 64.0
    assert info["selected_length_mean"] == pytest.approx(42.5)
    delta = new - advantages
    assert delta.tolist() == pytest.approx([0, 64, 0, 0, 64, 0, 0, 0, 0])
    assert delta.sum().item() == pytest.approx(128.0)


def test_icr_bonus_token_level_with_mask_and_mass():
    generator = torch.Generator().manual_seed(6)
    group_index = torch.arange(4).repeat_interleave(4)
    rewards = torch.randint(0, 2, (16,), generator=generator).float()
    rewards[:4] = torch.tensor([0.0, 1.0, 0.0, 0.0])  # at least one correct
    lengths = torch.randint(1, 9, (16,), generator=generator)
    mask = torch.arange(8)[None, :] < lengths[:, None]  # (16, 8)
    token_advantages = grpo_advantages(rewards, group_index)[:, None] * mask
    new, info = icr_bonus(
        token_advantages, rewards, lengths, group_index, bonus_total=10.0, mask=mask
    )
    k = info["num_selected"]
    delta = new - token_advantages
    assert torch.equal(delta[~mask], torch.zeros(int((~mask).sum())))
    per_response_bonus = delta.sum(-1) / lengths  # every valid token got C/k
    assert per_response_bonus.sum().item() == pytest.approx(10.0, rel=1e-5)
    assert per_response_bonus[info["selected_index"]].tolist() == pytest.approx([10.0 / k] * k)


def test_icr_bonus_no_correct_response_is_unchanged():
    advantages = torch.zeros(6)
    new, info = icr_bonus(
        advantages, torch.zeros(6), torch.arange(1, 7), torch.arange(2).repeat_interleave(3)
    )
    assert info["num_selected"] == 0 and info["selected_index"].numel() == 0
    assert torch.equal(new, advantages)
    assert info["selected_length_mean"] == 0.0 and info["bonus_per_response"] == 0.0


def test_icr_bonus_ablation_modes():
    advantages = torch.tensor([0.5, -0.5, 1.0, -1.0])
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0])
    lengths = torch.tensor([10, 5, 20, 3])
    group_index = torch.tensor([0, 0, 1, 1])
    replaced, _ = icr_bonus(
        advantages, rewards, lengths, group_index, bonus_total=4.0, mode="replace"
    )
    assert replaced.tolist() == [2.0, -0.5, 2.0, -1.0]
    multiplied, _ = icr_bonus(
        advantages, rewards, lengths, group_index, bonus_total=4.0, mode="multiply"
    )
    assert multiplied.tolist() == [1.5, -0.5, 3.0, -1.0]
    # ICR_neg: shortest regardless of correctness (indices 1 and 3), bonus · sign(own advantage)
    neg, info = icr_bonus(
        advantages,
        rewards,
        lengths,
        group_index,
        bonus_total=64.0,
        selection="any",
        sign="own_advantage",
    )
    assert info["selected_index"].tolist() == [1, 3]
    assert neg.tolist() == [0.5, -32.5, 1.0, -33.0]
    # ICR_all: C/N on every response
    everyone, info = icr_bonus(advantages, rewards, lengths, group_index, scope="all")
    assert info["num_selected"] == 4
    assert (everyone - advantages).tolist() == [32.0] * 4


def test_icr_bonus_validation():
    with pytest.raises(ValueError, match="mode"):
        icr_bonus(torch.zeros(2), torch.zeros(2), torch.ones(2), torch.zeros(2).long(), mode="x")
    with pytest.raises(ValueError, match="lengths"):
        icr_bonus(torch.zeros(2), torch.zeros(2), torch.ones(3), torch.zeros(2).long())


# -------------------------------------------------------------------------- entropy baselines


def test_entropy_reg_sampled_nll_value_and_gradient():
    logprobs = torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -9.0, -9.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    term = entropy_reg_term(logprobs, mask, coef=0.1)
    # entropy estimate = -mean(-1, -2, -0.5) = 7/6; term = -0.1 * 7/6
    assert term.item() == pytest.approx(-0.1 * 7 / 6)
    term.backward()
    expected_grad = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]) * 0.1 / 3
    torch.testing.assert_close(logprobs.grad, expected_grad)


def test_entropy_reg_true_entropy_and_aggregation():
    entropy = torch.tensor([[1.0, 2.0, 5.0], [4.0, 5.0, 5.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    term = entropy_reg_term(None, mask, coef=0.5, form="true_entropy", entropy=entropy)
    assert term.item() == pytest.approx(-0.5 * 7 / 3)
    term.backward()
    assert entropy.grad[0, 0].item() == pytest.approx(-0.5 / 3)
    seq = entropy_reg_term(
        None, mask, 0.5, form="true_entropy", entropy=entropy, agg_mode="seq-mean-token-mean"
    )
    assert seq.item() == pytest.approx(-0.5 * (1.5 + 4.0) / 2)
    # micro-batch terms normalized by the mini-batch token count add up to the full term
    logprobs = -torch.rand(4, 5)
    mask = torch.rand(4, 5) > 0.3
    full = entropy_reg_term(logprobs, mask, 0.01)
    halves = sum(
        entropy_reg_term(logprobs[rows], mask[rows], 0.01, num_tokens=float(mask.sum()))
        for rows in (slice(0, 2), slice(2, 4))
    )
    assert halves.item() == pytest.approx(full.item())
    with pytest.raises(ValueError, match="true_entropy"):
        entropy_reg_term(logprobs, mask, 0.01, form="true_entropy")
    with pytest.raises(ValueError, match="sampled_nll"):
        entropy_reg_term(None, mask, 0.01, entropy=torch.rand(4, 5))
    # each form reads only its own input
    ignored_entropy = entropy_reg_term(logprobs, mask, 0.01, entropy=torch.rand(4, 5))
    assert ignored_entropy.item() == pytest.approx(full.item())


def test_entropy_reg_estimate_is_the_token_mean_nll():
    logprobs = -torch.rand(3, 4)
    mask = torch.ones(3, 4)
    assert entropy_reg_term(logprobs, mask, 1.0).item() == pytest.approx(
        masked_mean(logprobs, mask).item()
    )


def test_entropy_advantage_hand_and_bound():
    advantages = torch.tensor([1.0, -1.0])
    entropy = torch.tensor([[0.5, 3.0, 9.0], [0.5, 3.0, 9.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    shaped = entropy_advantage(advantages, entropy, mask)  # min(0.4 H, |A|/2)
    assert shaped.tolist()[0] == pytest.approx([1.2, 1.5, 0.0])
    assert shaped.tolist()[1] == pytest.approx([-0.8, -0.5, -0.5])
    assert not shaped.requires_grad

    generator = torch.Generator().manual_seed(7)
    token_advantages = torch.randn(8, 6, generator=generator)
    entropy = torch.rand(8, 6, generator=generator) * 5
    mask = torch.ones(8, 6)
    shaped = entropy_advantage(token_advantages, entropy, mask, alpha=0.4, kappa=2.0)
    bonus = shaped - token_advantages
    assert (bonus >= 0).all()
    assert (bonus <= token_advantages.abs() / 2 + 1e-6).all()
    assert (bonus <= 0.4 * entropy + 1e-6).all()
    assert (torch.sign(shaped) == torch.sign(token_advantages)).all()  # never flips
