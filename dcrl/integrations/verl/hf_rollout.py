"""A transformers rollout for verl on the CPU (`actor_rollout_ref.rollout.name=dcrl_hf`).

verl 0.9.1 samples only through its server rollouts (vLLM, SGLang, TensorRT-LLM:
`verl.workers.rollout.replica.RolloutReplicaRegistry`), which need a GPU build; its agent loop
sends each sample to a server actor's `generate` (token ids in, token ids out) and the actor
workers push their weights to that server after every update (`ServerAdapter.update_weights`,
through the checkpoint manager's "naive" backend). This module plugs a transformers model into
the same two extension points verl's own backends use:

    DcrlHFReplica     a `RolloutReplica` registered as "dcrl_hf" in verl's replica registry: it
                      starts one server actor per replica (hybrid mode, next to verl's workers);
    DcrlHFServer      that actor: the model from `actor_rollout_ref.model.path` in float32 on
                      the CPU, sampling exactly softmax(logits / T) within the top-p nucleus
                      (top-k when verl asks for it), one request at a time, returning verl's
                      `TokenOutput` (the tokens up to and including the stop token, and their
                      log-probs under the model at T = 1 when asked, as vLLM returns them);
    DcrlHFServerAdapter  the worker-side `BaseRollout` ("dcrl_hf", "async" in verl's rollout
                      class table): it gathers the full weights verl's engine hands it after an
                      update and loads them into the server, so the next rollout samples the
                      updated policy.

It is dcrl's CPU stand-in for vLLM, for tests and tiny models: no batching across requests, no
KV-cache management (sleep and wake-up have nothing to free), weights copied through Ray.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import ray
import torch
from transformers import GenerationConfig
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica, TokenOutput

logger = logging.getLogger(__name__)

ROLLOUT_NAME = "dcrl_hf"  # dcrl.integrations.verl.register registers both classes under it


def server_actor_name(replica_rank: int) -> str:
    """The Ray actor name of replica `replica_rank`'s server (the adapter finds it by name)."""
    job_id = ray.get_runtime_context().get_job_id()
    return f"{ROLLOUT_NAME}_server_{job_id}_{replica_rank}"


class DcrlHFServer:
    """A rollout server around a transformers causal LM (see the module docstring)."""

    def __init__(self, model_path: str, response_length: int, prompt_length: int, seed: int):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.manual_seed(seed)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        self.model.eval()
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        stops = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        if configured is not None:
            stops += [configured] if isinstance(configured, int) else list(configured)
        if not stops:
            raise ValueError(
                f"error: {model_path}: the tokenizer has no eos_token and the generation config "
                "no eos_token_id, so a response could not end before the length limit"
            )
        self.stop_token_ids = sorted(set(stops))
        pad = tokenizer.pad_token_id
        self.pad_token_id = self.stop_token_ids[0] if pad is None else pad
        self.response_length = response_length
        self.prompt_length = prompt_length
        self.global_steps: int | None = None
        self._lock = asyncio.Lock()

    # -- generation -------------------------------------------------------------------------
    async def generate(
        self,
        request_id: str,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        image_data: Any = None,
        video_data: Any = None,
        **unused: Any,
    ) -> TokenOutput:
        if image_data or video_data:
            raise ValueError("error: the dcrl_hf rollout samples text only (no images or video)")
        async with self._lock:  # one request at a time: the model is not re-entrant
            return await asyncio.to_thread(self._generate, list(prompt_ids), dict(sampling_params))

    @torch.no_grad()
    def _generate(self, prompt_ids: list[int], params: dict[str, Any]) -> TokenOutput:
        max_tokens = params.get("max_tokens", params.get("max_new_tokens"))
        if max_tokens is None:
            # verl's vLLM server: the response length, within prompt + response length
            max_tokens = min(
                self.response_length, self.prompt_length + self.response_length - len(prompt_ids)
            )
        max_tokens = max(1, int(max_tokens))
        temperature = float(params.get("temperature", 1.0))
        top_k = int(params.get("top_k", -1) or -1)
        logprobs = bool(params.get("logprobs"))
        # Nothing from the checkpoint's generation_config.json (transformers' top-k 50, a
        # repetition penalty...): only what verl's sampling params say, as dcrl's hf backend.
        sampling = (
            {"do_sample": False}
            if temperature == 0
            else {
                "do_sample": True,
                "temperature": temperature,
                "top_p": float(params.get("top_p", 1.0)),
                "top_k": top_k if top_k > 0 else 0,
            }
        )
        config = GenerationConfig(
            eos_token_id=self.stop_token_ids,
            pad_token_id=self.pad_token_id,
            max_new_tokens=max_tokens,
            return_dict_in_generate=True,
            output_logits=logprobs,
            **sampling,
        )
        input_ids = torch.tensor([prompt_ids], dtype=torch.long)
        output = self.model.generate(
            input_ids=input_ids, attention_mask=torch.ones_like(input_ids), generation_config=config
        )
        tokens = output.sequences[0, len(prompt_ids) :].tolist()
        stop_at = next((i for i, t in enumerate(tokens) if t in self.stop_token_ids), None)
        if stop_at is not None:
            tokens = tokens[: stop_at + 1]  # the stop token is part of the response, as in vLLM
        log_probs = None
        if logprobs:
            logits = torch.stack(output.logits, dim=1)[0, : len(tokens)].float()  # (len, V), raw
            chosen = torch.tensor(tokens, dtype=torch.long)
            log_probs = logits.log_softmax(-1).gather(-1, chosen[:, None])[:, 0].tolist()
        return TokenOutput(
            token_ids=tokens,
            log_probs=log_probs,
            stop_reason="completed",
            extra_fields={"global_steps": self.global_steps},
        )

    # -- weights ----------------------------------------------------------------------------
    async def update_weights(self, state: dict[str, torch.Tensor], global_steps: int | None):
        async with self._lock:
            own = self.model.state_dict()
            unknown = sorted(set(state) - set(own))
            if unknown:
                raise ValueError(
                    f"error: the actor sent weights the rollout model does not have: {unknown[:5]}"
                )
            self.model.load_state_dict({**own, **state}, strict=True)
            if self.model.config.tie_word_embeddings:
                self.model.tie_weights()
            self.global_steps = global_steps

    async def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: tensor.clone() for name, tensor in self.model.state_dict().items()}

    # -- what verl's replica and trainer call; there is no device memory to free ------------
    async def wake_up(self, tags: list[str] | None = None) -> None:
        return None

    async def sleep(self) -> None:
        return None

    async def clear_kv_cache(self) -> None:
        return None

    async def release_kv_cache(self) -> None:
        return None

    async def resume_kv_cache(self) -> None:
        return None

    async def abort_all_requests(self, **unused: Any) -> dict[str, Any]:
        return {"aborted_count": 0, "request_ids": []}

    async def resume_generation(self) -> None:
        return None

    async def start_profile(self, **unused: Any) -> None:
        return None

    async def stop_profile(self) -> None:
        return None

    async def set_global_steps(self, global_steps: int) -> None:
        self.global_steps = global_steps


class DcrlHFReplica(RolloutReplica):
    """verl's rollout replica for the dcrl_hf server: one server actor, on the CPU."""

    async def launch_servers(self) -> None:
        from verl.utils.config import omega_conf_to_dataclass

        rollout = self.config
        model = self.model_config
        if not hasattr(model, "local_path"):
            model = omega_conf_to_dataclass(model)  # verl's HFModelConfig: the local copy's path
        server = (
            ray.remote(DcrlHFServer)
            .options(
                name=server_actor_name(self.replica_rank),
                num_cpus=0,
                max_concurrency=self.max_concurrency,
            )
            .remote(
                model_path=model.local_path,
                response_length=rollout.response_length,
                prompt_length=rollout.prompt_length,
                seed=int(getattr(rollout, "seed", 0) or 0),
            )
        )
        await server.sleep.remote()  # started
        self.servers = [server]
        self._server_handle = server
        self._server_address = f"{ROLLOUT_NAME}-replica-{self.replica_rank}"

    def rollout_worker_use_gpu(self) -> bool:
        return False


class DcrlHFServerAdapter(BaseRollout):
    """The actor worker's side of the dcrl_hf rollout: weights to the server after an update."""

    def __init__(self, config: Any, model_config: Any, device_mesh: Any, replica_rank: int = -1):
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", "0"))
        world = (
            self.config.tensor_model_parallel_size
            * self.config.data_parallel_size
            * self.config.pipeline_model_parallel_size
        )
        self.replica_rank = rank // world if replica_rank == -1 else replica_rank
        self._sends = rank % world == 0  # one worker per replica loads the weights
        self._server: Any = None

    def _server_handle(self) -> Any:
        if self._server is None:
            self._server = ray.get_actor(server_actor_name(self.replica_rank))
        return self._server

    async def resume(self, tags: list[str]) -> None:
        return None

    async def release(self) -> None:
        return None

    @torch.no_grad()
    async def update_weights(
        self,
        weights: Any,
        global_steps: int | None = None,
        wire_format: str = "named_tensors",
        **unused: Any,
    ) -> None:
        if wire_format != "named_tensors":
            raise ValueError(
                f"error: the dcrl_hf rollout takes full weights (wire_format 'named_tensors'), not "
                f"{wire_format!r}; use actor_rollout_ref.rollout.checkpoint_engine.backend=naive"
            )
        from verl.workers.rollout.utils import ensure_async_iterator

        state: dict[str, torch.Tensor] = {}
        # Every rank walks the generator: FSDP gathers each full tensor collectively.
        async for name, tensor in ensure_async_iterator(weights):
            if hasattr(tensor, "full_tensor"):
                tensor = tensor.full_tensor()
            if self._sends:
                state[name] = tensor.detach().to("cpu", torch.float32).clone()
        if self._sends:
            await self._server_handle().update_weights.remote(state, global_steps)
