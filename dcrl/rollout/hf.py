"""Rollouts with the live policy (CPU or GPU): batched over prompts, KV cache, stops at EOS.

Sampling is exactly softmax(logits / T) restricted to the top-p nucleus (no top-k, no repetition
penalty, nothing inherited from the checkpoint's generation_config.json), the same distribution the
vLLM backend samples and `dcrl.core.logprobs` scores. T = 0 is greedy decoding.

Two decoders give that distribution (`HFRolloutBackend(decoding=...)`):

- "loop": dcrl's own decoding loop. It skips work that `generate` does and the result
  does not need (bench/step_vs_trl.py measured each on a CPU):
  1. one prefill per prompt, its KV cache then repeated for the n samples (`generate` prefills
     the n identical copies);
  2. finished rows leave the batch and the cache (`generate` runs every row until the longest
     ends, so a batch whose lengths vary computes up to max_new_tokens for every row);
  3. the cache is written in place into a buffer that doubles when full (`DynamicCache`
     concatenates, copying the whole cache at every token);
  4. the next token is drawn by inverse CDF in float64 (one uniform per row) instead of
     `torch.multinomial` (one exponential per vocabulary entry: 50 ms a token for 32 rows of a
     49k vocabulary on one core).
  The logits processing is transformers' own warpers (TemperatureLogitsWarper, TopPLogitsWarper),
  as `generate` builds them, so the distribution is the same; a fixed seed gives the same samples
  call after call, but not the samples `generate` draws with that seed. Greedy outputs equal
  `generate`'s (tests/test_rollout.py).
- "generate" (default): transformers' `generate`, the reference, and the decoder of every seeded
  run made before the loop (a seed draws other samples in the loop); also for models the loop
  does not handle (it needs a decoder-only LM that accepts a KV cache).

On a shared CPU set `train.threads`; bench/README.md's runs use one thread per run when several
run at once.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, Literal

import torch
from transformers import (
    DynamicCache,
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

try:
    from transformers.cache_utils import DynamicLayer
except ImportError:  # transformers < 4.56 has no cache layers, which decoding="loop" needs
    DynamicLayer = object

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
        decoding: "generate" (default: transformers' `generate`, the reference) or "loop"
            (faster: see the module docstring). Both sample the same distribution, but not the
            same samples for a given seed, so the default keeps the samples of every seeded
            run made so far (bench/results, the tests' fixed seeds).
    """

    name = "hf"

    section_arguments = ("batch_size", "decoding")

    @classmethod
    def from_config(cls, config: Any, model: torch.nn.Module, tokenizer: Any) -> RolloutBackend:
        """rollout.batch_size prompts per call; rollout.decoding, with "auto" meaning "loop";
        rollout.backend_options: stop_token_ids, add_special_tokens."""
        decoding = "loop" if config.decoding == "auto" else config.decoding
        return cls(
            model,
            tokenizer,
            batch_size=config.batch_size,
            decoding=decoding,
            **config.backend_options,
        )

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        batch_size: int = 64,
        stop_token_ids: Sequence[int] | None = None,
        add_special_tokens: bool = True,
        decoding: Literal["generate", "loop"] = "generate",
    ) -> None:
        if decoding not in ("loop", "generate"):
            raise ValueError(f"decoding must be 'loop' or 'generate', got {decoding!r}")
        if decoding == "loop" and DynamicLayer is object:
            raise ValueError(
                "decoding='loop' needs transformers ≥ 4.56 (cache layers): upgrade transformers "
                "or use decoding='generate'"
            )
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
        self.decoding = decoding

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
        """P prompts, prompt_ids and prompt_mask (P, Lp) left-padded, n samples each."""
        decode = self._decode_loop if self.decoding == "loop" else self._decode_with_generate
        greedy = temperature == 0
        # Greedy samples are all equal: decoded once per prompt and repeated.
        generated = decode(
            prompt_ids.to(self.model.device),
            prompt_mask.to(self.model.device),
            1 if greedy else n,
            temperature,
            top_p,
            max_new_tokens,
        ).cpu()  # (P·n, W), or (P, W) when greedy; the n samples of a prompt are contiguous
        if greedy:
            generated = generated.repeat_interleave(n, dim=0)  # (P·n, W)
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

    @property
    def _transformers_model(self) -> PreTrainedModel:
        """The transformers model itself (inside a peft wrapper, if any)."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def _decode_with_generate(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        n: int,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
    ) -> torch.Tensor:
        """transformers' `generate`: the response tokens (P·n, W), padded after the stop token."""
        greedy = temperature == 0
        config = GenerationConfig(
            do_sample=not greedy,
            temperature=1.0 if greedy else temperature,
            top_p=1.0 if greedy else top_p,
            top_k=None if greedy else 0,  # transformers' default 50 would cut the nucleus
            max_new_tokens=max_new_tokens,
            num_return_sequences=n,  # expanded with repeat_interleave: samples are contiguous
            eos_token_id=self.stop_token_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            use_cache=True,
        )
        # Nothing from the checkpoint's generation_config.json (repetition_penalty, top_k, min_p,
        # suppressed tokens, ...) may leak into the sampling distribution: transformers fills any
        # unset field from model.generation_config, so swap in a blank one for the call.
        hf_model = self._transformers_model
        checkpoint_generation_config = hf_model.generation_config
        hf_model.generation_config = GenerationConfig()
        try:
            output = self.model.generate(
                input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=config
            )  # (P·n, Lp + W)
        finally:
            hf_model.generation_config = checkpoint_generation_config
        return output[:, prompt_ids.shape[1] :]

    def _decode_loop(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        n: int,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
    ) -> torch.Tensor:
        """dcrl's decoding loop (module docstring): the response tokens (P·n, W), padded after
        the stop token, W = the number of tokens the longest row drew."""
        device = prompt_ids.device
        rows = prompt_ids.shape[0] * n
        stop_ids = torch.tensor(self.stop_token_ids, device=device)
        # The warpers `generate` builds for do_sample with this temperature and top_p (top_k off).
        warpers = []
        if temperature not in (0.0, 1.0):
            warpers.append(TemperatureLogitsWarper(temperature))
        if temperature != 0 and top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p))

        cache = _in_place_cache(self.model, prompt_ids.shape[1] + max_new_tokens)
        # transformers 5.24 renamed past_key_values to cache (the old name warns).
        forward_arguments = inspect.signature(self._transformers_model.forward).parameters
        cache_argument = "cache" if "cache" in forward_arguments else "past_key_values"
        positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)  # (P, Lp): left padding skipped
        output = self.model(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{cache_argument: cache},
        )
        # One prefill per prompt; its cache and last logits serve the prompt's n samples.
        logits = output.logits[:, -1].float().repeat_interleave(n, dim=0)  # (P·n, V)
        cache.batch_repeat_interleave(n)
        attention_mask = prompt_mask.repeat_interleave(n, dim=0)  # (B, Lp + t), B rows active
        next_position = positions[:, -1].repeat_interleave(n, dim=0) + 1  # (B,)
        generated = torch.full(
            (rows, max_new_tokens), self.tokenizer.pad_token_id, dtype=torch.long, device=device
        )
        active = torch.arange(rows, device=device)  # (B,): the output row of each batch row
        for step in range(max_new_tokens):
            if temperature == 0:
                tokens = logits.argmax(-1)  # (B,)
            else:
                for warper in warpers:
                    logits = warper(None, logits)
                tokens = _sample_inverse_cdf(torch.softmax(logits, dim=-1))  # (B,)
            generated[active, step] = tokens
            running = ~torch.isin(tokens, stop_ids)  # (B,)
            if step == max_new_tokens - 1 or not bool(running.any()):
                return generated[:, : step + 1]
            if not bool(running.all()):
                # Finished rows leave the batch (cache, mask, positions): each finished row among
                # the first `kept` is overwritten by a running row from the tail, so only those
                # rows move in the cache (`_InPlaceLayer.batch_select_indices`).
                kept = int(running.sum())
                order = torch.arange(kept, device=device)  # (kept,): source row of each row
                holes = (~running[:kept]).nonzero().flatten()
                order[holes] = running[kept:].nonzero().flatten() + kept
                active, tokens = active[order], tokens[order]
                attention_mask, next_position = attention_mask[order], next_position[order]
                cache.batch_select_indices(order)
            attention_mask = torch.nn.functional.pad(attention_mask, (0, 1), value=1)
            output = self.model(
                input_ids=tokens[:, None],
                attention_mask=attention_mask,
                position_ids=next_position[:, None],
                use_cache=True,
                **{cache_argument: cache},
            )
            next_position = next_position + 1
            logits = output.logits[:, -1].float()  # (B, V)
        raise AssertionError("unreachable: the loop returns at its last step")


def _sample_inverse_cdf(probs: torch.Tensor) -> torch.Tensor:
    """One token per row of probs (B, V), drawn with probability probs[b, v]: the first v whose
    float64 cumulative sum exceeds u · total, u ~ U[0, 1). Zero-probability tokens own an empty
    interval and are never drawn; float64 resolves probabilities down to ~1e-16, finer than the
    float32 probabilities themselves. -> (B,) long."""
    cumulative = probs.double().cumsum(-1)  # (B, V)
    threshold = torch.rand(probs.shape[0], 1, dtype=torch.float64, device=probs.device)
    threshold = threshold * cumulative[:, -1:]
    tokens = torch.searchsorted(cumulative, threshold, right=True).clamp_(max=probs.shape[1] - 1)
    # u · total can round up to total (probability ~2^-53): redraw such a row from probs.
    drawn_zero = probs.gather(-1, tokens) == 0  # (B, 1)
    if bool(drawn_zero.any()):
        rows = drawn_zero.flatten().nonzero().flatten()
        tokens[rows] = torch.multinomial(probs[rows], 1)
    return tokens.flatten()


class _InPlaceLayer(DynamicLayer):
    """A `DynamicLayer` whose keys and values are written in place into a buffer: a new token
    costs one write instead of a copy of the whole cache (`torch.cat`). A full buffer is
    reallocated with room for twice its positions (at least `min_growth` more, at most
    `max_length`), so memory stays within about twice what is filled, as with `DynamicCache`.

    Args:
        max_length: the most positions the cache will hold (prompt + max_new_tokens).
        min_growth: the fewest positions a reallocation adds.
    """

    def __init__(self, max_length: int, min_growth: int = 64) -> None:
        super().__init__()
        self.max_length = max_length
        self.min_growth = min_growth
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        batch, heads = key_states.shape[:2]
        self.key_buffer = key_states.new_empty((batch, heads, 0, key_states.shape[-1]))
        self.value_buffer = value_states.new_empty((batch, heads, 0, value_states.shape[-1]))
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        assert end <= self.max_length, "the cache was sized for fewer tokens"
        capacity = self.key_buffer.shape[2]
        if end > capacity:
            self._reallocate(min(self.max_length, max(end, 2 * capacity, end + self.min_growth)))
        self.key_buffer[:, :, self.length : end] = key_states
        self.value_buffer[:, :, self.length : end] = value_states
        self.length = end
        self._views()
        return self.keys, self.values

    def _reallocate(self, capacity: int, rows: torch.Tensor | None = None) -> None:
        """New buffers of `capacity` positions holding the filled positions of `rows` (a
        LongTensor of row numbers, repeats allowed; None keeps every row)."""
        buffers = []
        for buffer in (self.key_buffer, self.value_buffer):
            filled = buffer[:, :, : self.length] if rows is None else buffer[rows, :, : self.length]
            batch, heads, _, dim = filled.shape
            grown = filled.new_empty((batch, heads, capacity, dim))  # (B', H, capacity, D)
            grown[:, :, : self.length] = filled
            buffers.append(grown)
        self.key_buffer, self.value_buffer = buffers
        self._views()

    def _views(self) -> None:
        self.keys = self.key_buffer[:, :, : self.length]  # (B, H, length, D)
        self.values = self.value_buffer[:, :, : self.length]

    def get_seq_length(self) -> int:
        return self.length

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.length:
            rows = torch.arange(self.key_buffer.shape[0], device=self.device)
            self._reallocate(self.key_buffer.shape[2], rows.repeat_interleave(repeats))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep rows `indices` (B',), in that order, B' ≤ B. Only the rows whose source differs
        from their position are copied (the right-hand side is gathered before the write, so
        any indices are safe), and only the filled positions of each."""
        if self.length:
            count = len(indices)
            moved = (indices != torch.arange(count, device=indices.device)).nonzero().flatten()
            for buffer in (self.key_buffer, self.value_buffer):
                buffer[moved, :, : self.length] = buffer[indices[moved], :, : self.length]
            self.key_buffer, self.value_buffer = self.key_buffer[:count], self.value_buffer[:count]
            self._views()


def _in_place_cache(model: torch.nn.Module, max_length: int) -> DynamicCache:
    """A DynamicCache for `model` whose full-attention layers write in place (`_InPlaceLayer`,
    at most `max_length` positions); models with other layer kinds (sliding windows, linear
    attention) keep transformers' own layers."""
    cache = DynamicCache(config=model.config)
    if cache.layers and all(type(layer) is DynamicLayer for layer in cache.layers):
        cache.layers = [_InPlaceLayer(max_length) for _ in cache.layers]
    return cache


BACKEND = HFRolloutBackend
