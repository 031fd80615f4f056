"""verl's actor / rollout / reference worker on dcrl's CPU platform (`trainer.device=cpu`).

verl's `TrainingWorker.__init__` starts the process group with
`initialize_global_process_group_ray` (verl/utils/distributed.py), whose backend string is
`f"cpu:gloo,{get_device_name()}:{get_nccl_backend()}"`: on a CPU platform that is
"cpu:gloo,cpu:gloo", which torch refuses ("Duplicate device type cpu in backend string"). The
function leaves an existing process group alone, so this worker starts it first, on gloo alone,
from the same environment verl gives each worker (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT).
Nothing else differs from verl's `ActorRolloutRefWorker`.

verl's engine registry (`EngineRegistry`, keyed by device) has its FSDP engines for "cuda" and
"npu" only; importing this module registers the same classes for "cpu" through the registry's
own decorator (FSDP2's `fully_shard` and FSDP run on CPU tensors and gloo).
"""

from __future__ import annotations

import os
from typing import Any

import ray
import torch.distributed
from verl.workers.engine.base import EngineRegistry
from verl.workers.engine.fsdp.transformer_impl import (
    FSDPEngineWithLMHead,
    FSDPEngineWithValueHead,
)
from verl.workers.engine_workers import ActorRolloutRefWorker, TrainingWorker

from dcrl.integrations.verl.cpu_platform import PLATFORM_NAME


def _register_cpu_engines() -> None:
    for model_type, engine in (
        ("language_model", FSDPEngineWithLMHead),
        ("value_model", FSDPEngineWithValueHead),
    ):
        registered = EngineRegistry._engines.get(model_type, {}).get("fsdp2", {})
        if PLATFORM_NAME not in registered:
            EngineRegistry.register(
                model_type=model_type, backend=["fsdp", "fsdp2"], device=PLATFORM_NAME
            )(engine)


_register_cpu_engines()


def init_cpu_process_group() -> None:
    """The worker's default process group on gloo, unless one is already up."""
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(
            backend="gloo",
            rank=int(os.environ.get("RANK", 0)),
            world_size=int(os.environ.get("WORLD_SIZE", 1)),
            init_method=os.environ.get("DIST_INIT_METHOD", None),
        )


class CPUActorRolloutRefWorker(ActorRolloutRefWorker):
    """verl's hybrid worker, its process group started on gloo (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        init_cpu_process_group()
        super().__init__(*args, **kwargs)


class CPUTrainingWorker(TrainingWorker):
    """verl's critic / standalone training worker, its process group started on gloo."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        init_cpu_process_group()
        super().__init__(*args, **kwargs)


_CPU_WORKERS = {
    ActorRolloutRefWorker.__name__: CPUActorRolloutRefWorker,
    TrainingWorker.__name__: CPUTrainingWorker,
}


def cpu_worker_class(remote_class: Any) -> Any:
    """verl's Ray worker class (`ray.remote(ActorRolloutRefWorker)` or
    `ray.remote(TrainingWorker)`) as its gloo-started subclass here; any other unchanged."""
    name = getattr(getattr(remote_class, "__ray_metadata__", None), "class_name", None)
    cpu_class = _CPU_WORKERS.get(name)
    return remote_class if cpu_class is None else ray.remote(cpu_class)
