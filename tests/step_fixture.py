"""One fixed DCPO + ICR step, shared by the tests of the step protocol in every trainer
(tests/test_step_protocol.py for dcrl's trainer, tests/verl/test_step_protocol.py for the verl
adapter; the TRL adapter is checked against `Composed.prepare` in tests/test_integration_trl.py).

A batch of 4 prompts x 4 responses, its 0/1 scores, a fixed "policy" (log-probs as a function of
the response tokens and the temperature) and the advantages the composed run must give, written
out from dcrl.core's formulas in the composition's order (dcrl.algorithms.composed): LP-F shapes
the reward, GRPO normalizes it per group, ICR adds its bonus to the group's shortest correct
response, DCPO mixes in α·c·ρ per token. Needs torch and dcrl only (both test venvs have them).
"""

from __future__ import annotations

import torch

from dcrl.core.advantages import grpo_advantages
from dcrl.core.control import ControlDecision
from dcrl.core.regularizers import (
    correct_indicator,
    dcpo_alpha,
    dcpo_rho,
    dcpo_token_advantages,
    icr_bonus,
)
from dcrl.core.shaping import overlong_penalty

NUM_PROMPTS, GROUP_SIZE, PROMPT_LENGTH, RESPONSE_LENGTH = 4, 4, 3, 6
PAD = 0
TARGET_ENTROPY, BONUS_TOTAL, LP_F_MAX, LP_F_BUFFER = 0.5, 4.0, 6, 3

# algorithm.targets of the composed run (what the recipe tiny-dcpo-icr composes).
TARGETS = [
    {"name": "dcpo", "target_entropy": TARGET_ENTROPY},
    {
        "name": "icr",
        "bonus_total": BONUS_TOTAL,
        "lp_f_max_length": LP_F_MAX,
        "lp_f_buffer": LP_F_BUFFER,
    },
]


def fixed_batch() -> dict[str, torch.Tensor]:
    """The step's tensors: prompt_ids / prompt_mask (N, Lp) left-padded, response_ids /
    response_mask (N, Lr) right-padded, group_index (N,) (groups contiguous), scores (N,)."""
    generator = torch.Generator().manual_seed(2024)
    rows = NUM_PROMPTS * GROUP_SIZE
    prompt_lengths = torch.randint(1, PROMPT_LENGTH + 1, (rows,), generator=generator)
    prompt_mask = (
        torch.arange(PROMPT_LENGTH)[None] >= PROMPT_LENGTH - prompt_lengths[:, None]
    ).long()
    prompt_ids = torch.randint(5, 60, (rows, PROMPT_LENGTH), generator=generator) * prompt_mask
    lengths = torch.randint(1, RESPONSE_LENGTH + 1, (rows,), generator=generator)
    response_mask = (torch.arange(RESPONSE_LENGTH)[None] < lengths[:, None]).long()
    response_ids = torch.randint(5, 60, (rows, RESPONSE_LENGTH), generator=generator)
    response_ids = response_ids * response_mask
    # Mixed groups (so GRPO, ICR and DCPO all act), one all-wrong group.
    scores = torch.tensor([1, 0, 1, 0, 0, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 1], dtype=torch.float32)
    return {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "response_ids": response_ids,
        "response_mask": response_mask,
        "group_index": torch.arange(NUM_PROMPTS).repeat_interleave(GROUP_SIZE),
        "scores": scores,
    }


def as_rollout_batch(
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    group_index: torch.Tensor,
    temperature: float = 1.0,
):
    """dcrl's RolloutBatch of these tensors (prompts left-padded, responses right-padded to
    RESPONSE_LENGTH), texts empty."""
    from dcrl.rollout.base import RolloutBatch

    rows = len(prompt_ids)
    lengths = response_mask.sum(-1)
    return RolloutBatch(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        response_ids=response_ids,
        response_mask=response_mask,
        response_lengths=lengths,
        truncated=lengths >= RESPONSE_LENGTH,
        group_index=group_index,
        temperature=torch.full((rows,), float(temperature)),
        top_p=torch.ones(rows),
        prompt_texts=[""] * rows,
        response_texts=[""] * rows,
        pad_token_id=PAD,
    )


def rollout_batch():
    """The fixed batch as dcrl's RolloutBatch (what dcrl's trainer hands the step protocol)."""
    batch = fixed_batch()
    return as_rollout_batch(
        batch["prompt_ids"],
        batch["prompt_mask"],
        batch["response_ids"],
        batch["response_mask"],
        batch["group_index"],
    )


def policy_logprobs(
    response_ids: torch.Tensor, response_mask: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """The fixed policy's log-probs of the response tokens at `temperature`, (N, Lr), 0 on
    padding: −(0.1 + 0.2·(token mod 5)) / T."""
    values = -(0.1 + 0.2 * (response_ids % 5).float()) / temperature
    return values * response_mask.float()


def expected_advantages(decision: ControlDecision) -> tuple[torch.Tensor, float, int]:
    """The composed step's (N, Lr) advantages from dcrl.core, given DCPO's decision; also α and
    how many responses ICR selected (both > 0 on this batch)."""
    batch = fixed_batch()
    mask, scores, groups = batch["response_mask"], batch["scores"], batch["group_index"]
    lengths = mask.sum(-1)
    rewards = scores + overlong_penalty(lengths, LP_F_MAX, LP_F_BUFFER)
    advantages = grpo_advantages(rewards, groups)
    advantages, info = icr_bonus(advantages, rewards, lengths, groups, bonus_total=BONUS_TOTAL)
    correct = correct_indicator(scores, 0.05)
    rho = dcpo_rho(
        policy_logprobs(batch["response_ids"], mask, decision.temperature),
        policy_logprobs(batch["response_ids"], mask),
        mask,
    )
    alpha = dcpo_alpha(TARGET_ENTROPY, decision.previous_entropy, correct, 0.1)
    token_advantages = dcpo_token_advantages(advantages, correct, rho, alpha, mask)
    return token_advantages * mask.float(), alpha, int(info["num_selected"])
