"""Rollouts with transformers' `generate` (CPU or GPU): batched over prompts, KV cache, stops at EOS.

Sampling is exactly softmax(logits / T) restricted to the top-p nucleus (no top-k, no repetition
penalty, nothing inherited from the checkpoint's generation_config.json), the same distribution the
vLLM backend samples and `dcrl.core.logprobs` scores. T = 0 is greedy decoding.

On the tiny model the model's forward pass is most of the generation time (a hand-written sampling
loop with a KV cache measured no faster), so this backend uses `generate` as is. On a shared 2-core
CPU use one torch thread (research/env.md §6).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from dcrl.rollout.base import (
    RolloutBackend,
    RolloutBatch,
    encode_prompts,
    validate_sampling_arguments,
)


class HFRolloutBackend(RolloutBackend):
    """Generates with the live policy object, so it always samples the current weights.

    Args:
        model: a transformers causal LM (or a peft model wrapping one), on any device.
        tokenizer: its tokenizer; needs a pad token (`dcrl.models.load_policy` sets one).
        batch_size: prompts per `generate` call (each expands to n sequences).
        stop_token_ids: tokens that end a response; default: the tokenizer's EOS plus the EOS ids
            in the model's generation config (chat models often list their end-of-turn token).
        add_special_tokens: passed to the tokenizer when encoding prompts (a BOS for Llama-style
            tokenizers); set False when the prompts already carry their special tokens.
    """

    name = "hf"

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        batch_size: int = 64,
        stop_token_ids: Sequence[int] | None = None,
        add_special_tokens: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(
                f"batch_size (prompts per generate call) must be ≥ 1, got {batch_size}"
            )
        if tokenizer.pad_token_id is None:
            raise ValueError(
                "the tokenizer has no pad token: load the model with dcrl.models.load_policy, or "
                "set tokenizer.pad_token = tokenizer.eos_token"
            )
        if stop_token_ids is None:
            stop_token_ids = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
            configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
            if configured is not None:
                stop_token_ids += [configured] if isinstance(configured, int) else list(configured)
        if not stop_token_ids:
            raise ValueError(
                "no stop token: the tokenizer has no eos_token; pass stop_token_ids=[...] so "
                "responses can end before max_new_tokens"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.stop_token_ids = sorted(set(stop_token_ids))
        self.add_special_tokens = add_special_tokens

    def generate(
        self,
        prompts: list[str],
        n: int,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
        *,
        seed: int | None = None,
    ) -> RolloutBatch:
        """See `RolloutBackend.generate`. The model is put in eval mode for the call (dropout
        off) and its train/eval mode restored after; no autograd graph is built."""
        validate_sampling_arguments(prompts, n, temperature, top_p, max_new_tokens)
        prompt_ids, prompt_mask = encode_prompts(self.tokenizer, prompts, self.add_special_tokens)
        device = self.model.device
        # Fork the RNG so a seeded call neither depends on nor disturbs the caller's stream.
        rng_devices = [device] if device.type == "cuda" else []
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), torch.random.fork_rng(rng_devices, enabled=seed is not None):
                if seed is not None:
                    torch.manual_seed(seed)
                chunks = []
                for start in range(0, len(prompts), self.batch_size):
                    rows = slice(start, start + self.batch_size)
                    # Drop the padding columns this chunk does not need (shorter prompts).
                    first_column = int(prompt_mask[rows].any(0).nonzero()[0])
                    chunks.append(
                        self._generate_chunk(
                            prompts[rows],
                            prompt_ids[rows, first_column:],
                            prompt_mask[rows, first_column:],
                            start,
                            n,
                            temperature,
                            top_p,
                            max_new_tokens,
                        )
                    )
        finally:
            self.model.train(was_training)
        return RolloutBatch.concat(chunks, merge_groups=True)

    def _generate_chunk(
        self,
        prompts: list[str],
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        first_prompt_index: int,
        n: int,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
    ) -> RolloutBatch:
        """One `generate` call for P prompts, prompt_ids and prompt_mask (P, Lp) left-padded."""
        greedy = temperature == 0
        config = GenerationConfig(
            do_sample=not greedy,
            temperature=1.0 if greedy else temperature,
            top_p=1.0 if greedy else top_p,
            top_k=None if greedy else 0,  # transformers' default 50 would cut the nucleus
            max_new_tokens=max_new_tokens,
            # Expanded with repeat_interleave, so the n samples of a prompt are contiguous rows;
            # greedy samples are all equal, decoded once and repeated below.
            num_return_sequences=1 if greedy else n,
            eos_token_id=self.stop_token_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            use_cache=True,
        )
        # Nothing from the checkpoint's generation_config.json (repetition_penalty, top_k, min_p,
        # suppressed tokens, ...) may leak into the sampling distribution: transformers fills any
        # unset field from model.generation_config, so swap in a blank one for the call.
        hf_model = (
            self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        )
        checkpoint_generation_config = hf_model.generation_config
        hf_model.generation_config = GenerationConfig()
        try:
            output = self.model.generate(
                input_ids=prompt_ids.to(self.model.device),
                attention_mask=prompt_mask.to(self.model.device),
                generation_config=config,
            ).cpu()  # (P·n, Lp + W), or (P, Lp + W) when greedy
        finally:
            hf_model.generation_config = checkpoint_generation_config
        if greedy:
            output = output.repeat_interleave(n, dim=0)  # (P·n, Lp + W)

        prompt_width = prompt_ids.shape[1]
        generated = output[:, prompt_width:]  # (P·n, W)
        width = generated.shape[1]
        is_stop = torch.isin(generated, torch.tensor(self.stop_token_ids))  # (P·n, W)
        stopped = is_stop.any(-1)  # (P·n,)
        lengths = torch.where(stopped, is_stop.int().argmax(-1) + 1, width)  # up to the first stop
        assert bool((stopped | (width == max_new_tokens)).all()), "generation ended early"
        response_mask = (torch.arange(width) < lengths[:, None]).long()  # (P·n, W)
        response_ids = generated.masked_fill(response_mask == 0, self.tokenizer.pad_token_id)
        used_width = int(lengths.max())
        response_ids, response_mask = response_ids[:, :used_width], response_mask[:, :used_width]

        rows = len(prompts) * n
        return RolloutBatch(
            prompt_ids=prompt_ids.repeat_interleave(n, dim=0),  # (P·n, Lp)
            prompt_mask=prompt_mask.repeat_interleave(n, dim=0),  # (P·n, Lp)
            response_ids=response_ids,
            response_mask=response_mask,
            response_lengths=lengths,
            truncated=~stopped,
            group_index=torch.arange(len(prompts)).repeat_interleave(n) + first_prompt_index,
            temperature=torch.full((rows,), float(temperature)),
            top_p=torch.full((rows,), float(top_p)),
            prompt_texts=[prompt for prompt in prompts for _ in range(n)],
            response_texts=self.tokenizer.batch_decode(
                [
                    ids[:length]
                    for ids, length in zip(response_ids.tolist(), lengths.tolist(), strict=True)
                ],
                skip_special_tokens=True,
            ),
            pad_token_id=self.tokenizer.pad_token_id,
        )
