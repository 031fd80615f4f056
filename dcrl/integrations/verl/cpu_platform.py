"""A CPU platform for verl (`VERL_PLATFORM=cpu`): verl's workers on the CPU, FSDP on gloo.

verl picks its device through its platform registry (`verl.plugin.platform`: nvidia, npu, rocm
ship with it; `VERL_PLATFORM` names one, else it probes and falls back to nvidia). verl 0.9.1 has
no CPU platform, so a GPU-less machine gets the CUDA one and fails at the first `torch.cuda` call.
This module registers one, under the name "cpu", through that registry's own extension point;
dcrl's registration module imports it first, in every process that imports verl
(VERL_USE_EXTERNAL_MODULES), and `dcrl.integrations.verl.main` sets `VERL_PLATFORM=cpu` for the
driver and every Ray worker when the run says `trainer.device=cpu`.

What it answers, and why:
    device_name "cpu"; the communication backend gloo (FSDP2 and verl's collectives run on it);
    the device id is `torch.device("cpu")`, not an index: verl moves tensors with
    `.to(get_device_id())`, and `.to(0)` would mean cuda:0;
    Ray: one "CPU" per worker bundle (verl's resource pool asks one unit of the platform's Ray
    resource per worker, and `num_cpus` in place of `num_gpus` for each actor);
    `device_module` is a small stand-in for `torch.cuda` with the calls verl makes on it
    (`get_torch_device().empty_cache()`, `.synchronize()`, memory statistics, RNG state, streams)
    answered for the CPU: no-ops, zeros, the CPU generator.

It is never chosen by verl's auto-detection (`is_platform_available` is False): only by name.
"""

from __future__ import annotations

import contextlib
import types
from typing import Any

import torch
from verl.plugin.platform import PlatformBase, PlatformRegistry

PLATFORM_NAME = "cpu"


def _no_op(*args: Any, **kwargs: Any) -> None:
    return None


def _zero(*args: Any, **kwargs: Any) -> int:
    return 0


def _memory_info(*args: Any, **kwargs: Any) -> tuple[int, int]:
    """(free, total) bytes of the machine's memory, where verl asks the device's."""
    import psutil

    memory = psutil.virtual_memory()
    return int(memory.available), int(memory.total)


def _device_module() -> types.ModuleType:
    """The calls verl makes on `get_torch_device()`, answered for the CPU."""
    module = types.ModuleType("dcrl_verl_cpu_device")
    module.is_available = lambda: True
    module.device_count = lambda: 1
    module.current_device = lambda: torch.device("cpu")
    module.set_device = _no_op
    module.synchronize = _no_op
    module.empty_cache = _no_op
    module.ipc_collect = _no_op
    module.set_per_process_memory_fraction = _no_op
    module.mem_get_info = _memory_info
    module.memory_allocated = _zero
    module.memory_reserved = _zero
    module.max_memory_allocated = _zero
    module.max_memory_reserved = _zero
    module.reset_peak_memory_stats = _no_op
    module.get_device_name = lambda *args, **kwargs: "cpu"
    module.manual_seed = torch.manual_seed
    module.manual_seed_all = torch.manual_seed
    module.get_rng_state = lambda *args, **kwargs: torch.get_rng_state()
    module.set_rng_state = lambda state, *args, **kwargs: torch.set_rng_state(state)
    module.current_stream = lambda *args, **kwargs: None
    module.stream = lambda *args, **kwargs: contextlib.nullcontext()
    module.Stream = lambda *args, **kwargs: None
    module.Event = torch.Event
    return module


_DEVICE_MODULE = _device_module()


@PlatformRegistry.register(platform=PLATFORM_NAME)
class PlatformCPU(PlatformBase):
    """verl's platform interface on the CPU (see the module docstring)."""

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> types.ModuleType:
        return _DEVICE_MODULE

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        return False  # chosen by name (VERL_PLATFORM=cpu) only, never by auto-detection

    def current_device(self) -> Any:
        return torch.device("cpu")

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: int | None = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "DCRL_VERL_VISIBLE_CPUS"  # nothing sets it: there is no device to hide

    @contextlib.contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "CPU"

    def ray_resource_options(self, num_gpus: float) -> dict[str, Any]:
        return {"num_cpus": num_gpus}

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None


def on_cpu_platform() -> bool:
    """Whether verl's platform in this process is dcrl's CPU platform."""
    from verl.plugin.platform import get_platform

    return isinstance(get_platform(), PlatformCPU)


def cpu_resource_pool_manager(manager: Any) -> Any:
    """verl's `ResourcePoolManager` with its resource check counting CPUs.

    `ResourcePoolManager._check_resource_available` (verl/single_controller/ray/base.py) counts
    the cluster's "GPU" (or "NPU") resources, whatever the platform's Ray resource is, so it
    refuses a CPU run ("Total available GPUs 0 is less than total desired GPUs 1") before any
    worker starts; the placement groups it then asks for use the platform's resource (one "CPU"
    per worker here). This returns the same manager, its check counting CPUs."""
    from dataclasses import fields

    from verl.single_controller.ray.base import ResourcePoolManager

    class CPUResourcePoolManager(ResourcePoolManager):
        def _check_resource_available(self) -> None:
            import ray

            available = sum(
                node.get("CPU", 0)
                for node in ray._private.state.available_resources_per_node().values()
            )
            required = sum(n for nodes in self.resource_pool_spec.values() for n in nodes)
            if available < required:
                raise ValueError(
                    f"error: trainer.device=cpu: the Ray cluster has {available:g} CPUs free, "
                    f"the workers need {required} (one per trainer.n_gpus_per_node x "
                    "trainer.nnodes); start Ray with more (ray_kwargs.ray_init.num_cpus)"
                )

    return CPUResourcePoolManager(**{f.name: getattr(manager, f.name) for f in fields(manager)})
