"""Rollouts with vLLM (GPU), colocated in the training process, same interface as the hf backend.

vLLM is imported only when this backend is built (`get_rollout_backend("vllm", ...)`); it is not
a dcrl dependency (its package pins an exact torch build of its own). Install it on a GPU machine.

The engine loads the policy's checkpoint directory once; after each optimizer step the trainer
calls `sync_weights(policy)`, which copies the current weights into the engine through vLLM's
public `LLM.apply_model` (each worker's model `load_weights`), as TRL's colocate mode does. For the
function to reach the model without serialization the engine core runs in this process:
`VLLM_ENABLE_V1_MULTIPROCESSING=0` is set (unless the caller set it) before the engine starts.

Sampling: `SamplingParams(temperature, top_p, max_tokens, seed)` with vLLM's neutral defaults for
everything else (no top-k, min-p or penalties), i.e. the distribution the hf backend samples. Each
of the P·n rows is its own request with its own seed drawn from `seed`, so a seeded call is
reproducible and the n samples of a prompt are independent; vLLM's prefix cache shares the prompt.
"""

from __future__ import annotations

import os
import random
from typing import Any

import torch

from dcrl.rollout.base import (
    RolloutBackend,
    RolloutBatch,
    encode_prompts,
    validate_sampling_arguments,
)

VLLM_MISSING_MESSAGE = (
    "the vllm backend needs `pip install vllm` on a GPU machine (it is not a dcrl dependency); "
    "on CPU use rollout.backend=hf"
)


class VLLMRolloutBackend(RolloutBackend):
    """vLLM engine over the policy's checkpoint directory.

    Args:
        model: the policy (a transformers model, or a peft model wrapping one). Its checkpoint
            directory (`model.name_or_path`) is what the engine loads; pass `model_path` when the
            policy was built in memory (save it first, e.g. with `dcrl.models.save_tiny_model`).
        tokenizer: the policy's tokenizer; dcrl tokenizes prompts itself so both backends see
            identical prompt ids.
        model_path: checkpoint directory for the engine (default: model.name_or_path).
        gpu_memory_utilization: fraction of GPU memory vLLM may take (weights + KV cache); leave
            room for the training copy of the model and its optimizer.
        dtype: engine dtype ("auto" follows the checkpoint).
        add_special_tokens: as in the hf backend.
        engine_options: more keyword arguments for `vllm.LLM` (max_model_len, enforce_eager, ...).
    """

    name = "vllm"
    takes_batch_size = False  # vLLM schedules its own batches

    @classmethod
    def check_config(cls, config: Any) -> None:
        super().check_config(config)
        if config.decoding == "loop":
            raise ValueError(
                "decoding=loop is the hf backend's decoder; with backend=vllm set decoding=auto "
                "or generate"
            )

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        model_path: str | None = None,
        gpu_memory_utilization: float = 0.5,
        dtype: str = "auto",
        add_special_tokens: bool = True,
        **engine_options: Any,
    ) -> None:
        try:
            import vllm
        except ImportError as error:
            raise ImportError(VLLM_MISSING_MESSAGE) from error
        model_path = model_path or getattr(model, "name_or_path", "")
        if not model_path or not os.path.isdir(model_path):
            raise ValueError(
                f"the vllm backend loads the policy from a checkpoint directory, got {model_path!r}:"
                " save the policy (save_pretrained) and pass model_path=<that directory>"
            )
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token: load the policy with load_policy")
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        self.vllm = vllm
        self.tokenizer = tokenizer
        self.add_special_tokens = add_special_tokens
        self.llm = vllm.LLM(
            model=model_path,
            tokenizer=model_path,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            **engine_options,
        )

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
        """See `RolloutBackend.generate`."""
        validate_sampling_arguments(prompts, n, temperature, top_p, max_new_tokens)
        prompt_ids, prompt_mask = encode_prompts(self.tokenizer, prompts, self.add_special_tokens)
        seeds = random.Random(seed) if seed is not None else random.SystemRandom()
        requests, sampling = [], []
        for ids, mask in zip(prompt_ids.tolist(), prompt_mask.tolist(), strict=True):
            prompt_token_ids = [token for token, keep in zip(ids, mask, strict=True) if keep]
            for _ in range(n):
                requests.append({"prompt_token_ids": prompt_token_ids})
                sampling.append(
                    self.vllm.SamplingParams(
                        n=1,
                        temperature=temperature,
                        top_p=top_p,
                        max_tokens=max_new_tokens,
                        seed=seeds.randrange(2**31),
                    )
                )
        outputs = self.llm.generate(requests, sampling, use_tqdm=False)

        # vLLM may or may not keep the EOS in token_ids (version- and option-dependent); dcrl's
        # convention is that the response includes it, so put it back when it was dropped.
        responses, truncated = [], []
        for request_output in outputs:
            completion = request_output.outputs[0]
            tokens = list(completion.token_ids)
            if completion.finish_reason == "stop":
                stop_token = completion.stop_reason
                stop_token = (
                    stop_token if isinstance(stop_token, int) else self.tokenizer.eos_token_id
                )
                if not tokens or tokens[-1] != stop_token:
                    tokens.append(stop_token)
            responses.append(tokens)
            truncated.append(completion.finish_reason == "length")
        rows = len(responses)
        lengths = torch.tensor([len(tokens) for tokens in responses])  # (N,)
        width = max(1, int(lengths.max()))
        pad = self.tokenizer.pad_token_id
        response_ids = torch.full((rows, width), pad, dtype=torch.long)  # (N, Lr)
        for row, tokens in enumerate(responses):
            response_ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        return RolloutBatch(
            prompt_ids=prompt_ids.repeat_interleave(n, dim=0),  # (N, Lp)
            prompt_mask=prompt_mask.repeat_interleave(n, dim=0),  # (N, Lp)
            response_ids=response_ids,
            response_mask=(torch.arange(width) < lengths[:, None]).long(),  # (N, Lr)
            response_lengths=lengths,
            truncated=torch.tensor(truncated, dtype=torch.bool),
            group_index=torch.arange(len(prompts)).repeat_interleave(n),
            temperature=torch.full((rows,), float(temperature)),
            top_p=torch.full((rows,), float(top_p)),
            prompt_texts=[prompt for prompt in prompts for _ in range(n)],
            response_texts=self.tokenizer.batch_decode(responses, skip_special_tokens=True),
            pad_token_id=pad,
        )

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Copy `model`'s current weights into the engine (LoRA adapters merged in), then drop
        the prefix cache, whose KV entries were computed with the old weights."""
        is_peft = hasattr(model, "merge_adapter")
        if is_peft:
            model.merge_adapter()
        try:
            weights = []
            for name, parameter in model.state_dict().items():
                if is_peft:
                    if "lora_" in name or "original_module" in name:
                        continue  # adapters are merged into the base weights
                    name = name.removeprefix("base_model.model.").replace(".base_layer", "")
                    name = name.replace("modules_to_save.default.", "")
                weights.append((name, parameter.detach()))
            self.llm.apply_model(lambda engine_model: engine_model.load_weights(weights))
        finally:
            if is_peft:
                model.unmerge_adapter()
        self.llm.reset_prefix_cache()


BACKEND = VLLMRolloutBackend
