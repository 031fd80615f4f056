"""The rollout interface: `RolloutBackend.generate` returns a `RolloutBatch` of P·n responses.

Layout of a batch of N = P·n rows (the n samples of prompt p are rows p·n … p·n + n − 1):

    prompt_ids    (N, Lp)  LEFT-padded: [pad … pad, prompt tokens]
    response_ids  (N, Lr)  RIGHT-padded: [response tokens (… EOS), pad … pad]
    sequences()   (N, Lp + Lr) = prompt_ids ‖ response_ids, attention mask likewise

For a causal LM the logit at position j predicts token j + 1, so the logits that score the response
tokens are `logits[:, Lp - 1 : Lp - 1 + Lr]` (`RolloutBatch.response_logits_slice`). Generation
numbers positions from the first real prompt token (left padding skipped), so a forward pass that
must reproduce the sampling distribution passes `position_ids = (attention_mask.cumsum(-1) - 1)
.clamp(min=0)` (what transformers' `generate` does); without it a left-padded row is shifted.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import torch


@dataclass
class RolloutBatch:
    """P prompts × n sampled responses, as padded tensors (all on CPU unless moved).

    prompt_ids: (N, Lp) long, left-padded with `pad_token_id`.
    prompt_mask: (N, Lp) long, 1 on prompt tokens.
    response_ids: (N, Lr) long, right-padded with `pad_token_id`.
    response_mask: (N, Lr) long, 1 on generated tokens up to and including the EOS, 0 after.
    response_lengths: (N,) long, = response_mask.sum(-1).
    truncated: (N,) bool, the response hit max_new_tokens without an EOS.
    group_index: (N,) long, the prompt each row answers (samples of a prompt are contiguous).
    temperature: (N,) float, the sampling temperature of each row (0 = greedy).
    top_p: (N,) float, the nucleus threshold of each row.
    prompt_texts: N strings, the prompt of each row.
    response_texts: N strings, each response decoded without special tokens.
    pad_token_id: the id used for padding.
    sampling_logprobs: (N, Lr) float or None, the engine's own log-prob of each sampled token
        (at T = 1, before temperature and top-p; NaN where the engine reported none, 0 on
        padding), for engines that sample with their own copy of the weights (vllm); the
        trainer compares them with its own (the rollout-trainer mismatch).
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    response_lengths: torch.Tensor
    truncated: torch.Tensor
    group_index: torch.Tensor
    temperature: torch.Tensor
    top_p: torch.Tensor
    prompt_texts: list[str]
    response_texts: list[str]
    pad_token_id: int
    sampling_logprobs: torch.Tensor | None = None

    def __post_init__(self) -> None:
        rows = self.prompt_ids.shape[0]
        assert self.prompt_ids.shape == self.prompt_mask.shape
        assert self.response_ids.shape == self.response_mask.shape
        assert self.response_ids.shape[0] == rows
        for per_row in (self.response_lengths, self.truncated, self.group_index):
            assert per_row.shape == (rows,)
        for per_row in (self.temperature, self.top_p):
            assert per_row.shape == (rows,)
        if self.sampling_logprobs is not None:
            assert self.sampling_logprobs.shape == self.response_ids.shape
        assert len(self.prompt_texts) == rows and len(self.response_texts) == rows

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    @property
    def response_logits_slice(self) -> slice:
        """Positions of `sequences()` whose logits predict the response tokens: Lp−1 … Lp+Lr−2."""
        prompt_width = self.prompt_ids.shape[1]
        return slice(prompt_width - 1, prompt_width - 1 + self.response_ids.shape[1])

    def sequences(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask), each (N, Lp + Lr): prompt then response, for the trainer's
        forward pass. Score the response with `logits[:, self.response_logits_slice]` and pass
        position ids that skip the left padding (see the module docstring)."""
        input_ids = torch.cat([self.prompt_ids, self.response_ids], dim=1)  # (N, Lp + Lr)
        attention_mask = torch.cat([self.prompt_mask, self.response_mask], dim=1)  # (N, Lp + Lr)
        return input_ids, attention_mask

    def select(self, indices: Sequence[int] | torch.Tensor) -> RolloutBatch:
        """The rows `indices` (a list or LongTensor of row numbers, or a bool mask of length N),
        in that order, with their texts and group ids; the padded widths are kept."""
        index = torch.as_tensor(indices)
        if index.dtype == torch.bool:
            if index.shape != (len(self),):
                raise ValueError(
                    f"a bool row mask must have shape ({len(self)},), got {index.shape}"
                )
            index = index.nonzero().flatten()
        index = index.long().reshape(-1)
        if len(index) and (index.min() < -len(self) or index.max() >= len(self)):
            raise ValueError(f"row indices must be in [0, {len(self)}), got {index.tolist()}")
        rows = index.tolist()
        tensors = {
            f.name: getattr(self, f.name)[index]
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return replace(
            self,
            **tensors,
            prompt_texts=[self.prompt_texts[i] for i in rows],
            response_texts=[self.response_texts[i] for i in rows],
        )

    @classmethod
    def pad_to_common(cls, batches: Sequence[RolloutBatch]) -> list[RolloutBatch]:
        """The same batches, prompts left-padded and responses right-padded to the largest Lp and
        Lr among them, so their tensors stack row-wise. Rows and their contents are unchanged."""
        if not batches:
            raise ValueError("pad_to_common needs at least one RolloutBatch, got none")
        pad_ids = {b.pad_token_id for b in batches}
        if len(pad_ids) != 1:
            raise ValueError(
                f"batches use different pad token ids {sorted(pad_ids)}: same tokenizer?"
            )
        prompt_width = max(b.prompt_ids.shape[1] for b in batches)
        response_width = max(b.response_ids.shape[1] for b in batches)
        padded = []
        for b in batches:
            left = prompt_width - b.prompt_ids.shape[1]
            right = response_width - b.response_ids.shape[1]
            padded.append(
                replace(
                    b,
                    prompt_ids=torch.nn.functional.pad(
                        b.prompt_ids, (left, 0), value=b.pad_token_id
                    ),
                    prompt_mask=torch.nn.functional.pad(b.prompt_mask, (left, 0), value=0),
                    response_ids=torch.nn.functional.pad(
                        b.response_ids, (0, right), value=b.pad_token_id
                    ),
                    response_mask=torch.nn.functional.pad(b.response_mask, (0, right), value=0),
                    sampling_logprobs=None
                    if b.sampling_logprobs is None
                    else torch.nn.functional.pad(b.sampling_logprobs, (0, right), value=0.0),
                )
            )
        return padded

    @classmethod
    def concat(cls, batches: Sequence[RolloutBatch], *, merge_groups: bool = False) -> RolloutBatch:
        """Stack batches row-wise (padded to a common shape), in order.

        merge_groups: False (default) renumbers each batch's group ids after the previous batch's
            largest id, so groups from different calls stay distinct (e.g. AEPO's T = 1 batch and
            its tempered batch keep separate GRPO groups). True keeps the ids as they are, so
            rows with the same id form one group across batches.
        """
        padded = cls.pad_to_common(batches)
        group_indices = []
        offset = 0
        for b in padded:
            group_indices.append(b.group_index if merge_groups else b.group_index + offset)
            if len(b):
                offset = int(group_indices[-1].max()) + 1
        tensors = {
            f.name: torch.cat([getattr(b, f.name) for b in padded])
            for f in fields(cls)
            if all(isinstance(getattr(b, f.name), torch.Tensor) for b in padded)
        }
        if "sampling_logprobs" not in tensors:  # some batch has none: the whole has none
            tensors["sampling_logprobs"] = None
        tensors["group_index"] = torch.cat(group_indices)
        return replace(
            padded[0],
            **tensors,
            prompt_texts=[text for b in padded for text in b.prompt_texts],
            response_texts=[text for b in padded for text in b.response_texts],
        )


def validate_sampling_arguments(
    prompts: Sequence[str], n: int, temperature: float, top_p: float, max_new_tokens: int
) -> None:
    """Raise a ValueError naming the argument when a `generate` call's inputs are unusable."""
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise TypeError("prompts must be a list of strings (wrap a single prompt as [prompt])")
    if len(prompts) == 0:
        raise ValueError("prompts is empty: pass at least one prompt")
    if n < 1:
        raise ValueError(f"n (samples per prompt) must be ≥ 1, got {n}")
    if temperature < 0:
        raise ValueError(f"temperature must be ≥ 0 (0 = greedy), got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (1 disables nucleus sampling), got {top_p}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be ≥ 1, got {max_new_tokens}")


def encode_prompts(
    tokenizer: Any, prompts: Sequence[str], add_special_tokens: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize prompts the way every backend does: (prompt_ids, prompt_mask), each (P, Lp) long,
    left-padded. Raises a ValueError for prompts that encode to no tokens."""
    encoded = tokenizer(
        list(prompts),
        padding=True,
        padding_side="left",
        add_special_tokens=add_special_tokens,
        return_tensors="pt",
    )
    prompt_ids, prompt_mask = encoded["input_ids"], encoded["attention_mask"].long()  # (P, Lp)
    empty = (prompt_mask.sum(-1) == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"prompts {empty} encode to no tokens: a causal LM needs at least one prompt token "
            "to condition on"
        )
    return prompt_ids, prompt_mask


class RolloutBackend(abc.ABC):
    """Generates responses for prompts. One interface for every engine (HF generate, vLLM).

    A backend is registered by one line in `dcrl.rollout.ROLLOUT_BACKENDS` (name -> module with
    `BACKEND = <the class>`), or named as 'package.module:Class'. The trainer builds it with
    `from_config` from the run's rollout section (its `backend_options` become constructor
    keyword arguments) and checks that section with `check_config` before the model loads;
    override `from_config` to read other rollout settings (hf reads `decoding`) and extend
    `check_config` to refuse settings the backend cannot honour.
    """

    name: str = "base"
    takes_batch_size: bool = True  # False: the engine schedules its own batches

    # Constructor arguments the trainer sets from the rollout section itself, so that
    # `rollout.backend_options` may not set them too.
    section_arguments: tuple[str, ...] = ("batch_size",)

    @classmethod
    def check_config(cls, config: Any) -> None:
        """Raise ValueError('<setting> ...: <problem>; <fix>') for rollout settings (the run's
        rollout section) this backend cannot honour. By default: every key of
        `backend_options` must be a keyword argument of the constructor (any key, when it takes
        **options), and not one the section sets. Extend it, calling this one first."""
        named, open_ended = cls._constructor_options()
        for key in config.backend_options:
            if key in cls.section_arguments:
                raise ValueError(
                    f"backend_options.{key}: set by the rollout section itself; set "
                    f"rollout.{key} instead"
                )
            if key not in named and not open_ended:
                raise ValueError(
                    f"backend_options.{key}: not a setting of the {config.backend} backend; "
                    f"its settings: {', '.join(named) or 'none'}"
                )

    @classmethod
    def _constructor_options(cls) -> tuple[list[str], bool]:
        """The keyword arguments `backend_options` may set, and whether any other is accepted:
        each constructor up the class chain adds its own, and one that takes **options passes
        the rest to its parent's (open-ended when no constructor in the chain is closed)."""
        named: list[str] = []
        for klass in cls.__mro__:
            if "__init__" not in vars(klass) or not issubclass(klass, RolloutBackend):
                continue
            parameters = inspect.signature(vars(klass)["__init__"]).parameters.values()
            named += [
                p.name
                for p in parameters
                if p.name not in ("self", "model", "tokenizer", *cls.section_arguments, *named)
                and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            ]
            if not any(p.kind is p.VAR_KEYWORD for p in parameters):
                return named, False
        return named, True

    @classmethod
    def from_config(cls, config: Any, model: torch.nn.Module, tokenizer: Any) -> RolloutBackend:
        """The backend for the trainer, from the run's rollout section (`config`): its
        `backend_options` as keyword arguments, and `batch_size` when the backend takes one."""
        options = {"batch_size": config.batch_size} if cls.takes_batch_size else {}
        return cls(model, tokenizer, **options, **config.backend_options)  # type: ignore[call-arg]

    @abc.abstractmethod
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
        """Sample n responses for each prompt.

        Args:
            prompts: P prompt strings (already formatted; tokenized as the tokenizer does by
                default, left-padded).
            n: samples per prompt; row p·n + k is sample k of prompt p.
            temperature: softmax temperature; 0 means greedy decoding (all n samples identical).
            top_p: nucleus threshold in (0, 1]; 1 disables it. No top-k, no repetition penalty.
            max_new_tokens: response length cap; a response that reaches it without an EOS is
                marked `truncated`.
            seed: makes the call reproducible (same arguments, same backend settings) without
                touching the global torch RNG; None draws from the global torch RNG.

        Returns:
            A RolloutBatch of P·n rows.
        """

    def sync_weights(self, model: torch.nn.Module) -> None:  # noqa: B027 — optional hook
        """Make the engine sample from `model`'s current weights (after an optimizer step).
        Backends that generate with the live model object (hf) need nothing."""
