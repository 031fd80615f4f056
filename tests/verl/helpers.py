"""Small verl batches built by hand: what `RayPPOTrainer.fit` holds at the advantage step."""

import numpy as np
import torch
from verl import DataProto


def make_batch(
    num_prompts: int = 4,
    group_size: int = 4,
    response_length: int = 7,
    prompt_length: int = 3,
    seed: int = 0,
    shuffle: bool = True,
) -> DataProto:
    """A batch of num_prompts × group_size responses, 0/1 scores on the last valid token,
    log-probs at T = 1 and at a second temperature, rows shuffled as balance_batch leaves them."""
    generator = torch.Generator().manual_seed(seed)
    rows = num_prompts * group_size
    lengths = torch.randint(1, response_length + 1, (rows,), generator=generator)  # (N,)
    positions = torch.arange(response_length)
    response_mask = (positions[None, :] < lengths[:, None]).long()  # (N, L)
    scores = torch.randint(0, 2, (rows,), generator=generator).float()  # (N,)
    rewards = torch.zeros(rows, response_length)
    rewards[torch.arange(rows), lengths - 1] = scores
    old_log_probs = -torch.rand(rows, response_length, generator=generator) * 3.0
    tempered = old_log_probs * 0.8 - 0.1 * torch.rand(rows, response_length, generator=generator)
    responses = torch.randint(5, 100, (rows, response_length), generator=generator)
    prompts = torch.randint(5, 100, (rows, prompt_length), generator=generator)
    uids = np.array([f"prompt-{i // group_size}" for i in range(rows)], dtype=object)
    order = torch.randperm(rows, generator=generator) if shuffle else torch.arange(rows)
    tensors = {
        "prompts": prompts,
        "responses": responses,
        "input_ids": torch.cat([prompts, responses], dim=-1),
        "attention_mask": torch.cat([torch.ones_like(prompts), response_mask], dim=-1),
        "response_mask": response_mask,
        "rm_scores": rewards,
        "token_level_rewards": rewards.clone(),
        "old_log_probs": old_log_probs,
        "old_log_probs_at_temperature": tempered,
    }
    return DataProto.from_dict(
        tensors={key: value[order] for key, value in tensors.items()},
        non_tensors={"uid": uids[order.numpy()], "data_source": np.array(["math"] * rows)[order]},
        meta_info={"temperature": 1.0},
    )
