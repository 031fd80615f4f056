"""Launch verl's PPO trainer with dcrl's recipe (trainer.py, trainer_v1.py). Hydra entry point
with verl's own config tree, so every verl override works unchanged:

    python -m dcrl.integrations.verl.main +algorithm.dcrl.name=dcpo ...                    # V1
    python -m dcrl.integrations.verl.main trainer.use_v1=False +algorithm.dcrl.name=aepo ...

It does what `python -m verl.trainer.main_ppo` does, following `trainer.use_v1` as verl does:
with verl's legacy trainer (`trainer.use_v1=False`) the Ray actor which drives training builds
`DcrlRayPPOTrainer` itself (`DcrlTaskRunnerBody.build_trainer`); with the V1 trainer (verl's
default) verl's own V1 task runner builds the trainer registered as `trainer.v1.trainer_mode`,
which this sets to dcrl's (`trainer_v1.DcrlPPOTrainer`, registered as "dcrl"). dcrl's
registrations (and, for V1, the module that registers its trainer) are imported in every Ray
worker: VERL_USE_EXTERNAL_MODULES is set in this process and in the env_vars of the runtime env
verl passes to `ray.init`, so that workers on an existing cluster (`ray_kwargs.ray_init.address`,
`ray job submit`), which do not inherit this process's environment, get it too. With
`trainer.device=cpu` verl runs on dcrl's CPU platform (VERL_PLATFORM=cpu, cpu_platform.py) and
the settings verl's GPU defaults need changed are checked first. examples/verl/ has the papers'
full commands and a CPU run (cpu_smoke.sh); docs/scaling_out_verl.md says what runs where.

Why the runner builds the trainer by name, instead of swapping verl's module-level
`RayPPOTrainer` for ours: Ray ships an actor class to its worker with cloudpickle, by value, and
the methods of a class shipped by value carry a copy of the globals they read. A rebinding of
`main_ppo_v0.RayPPOTrainer` made inside the worker never reaches that copy, so verl's own
`TaskRunner.run` would build the plain `RayPPOTrainer` (plain GRPO) without any error.
tests/verl/test_entry_point.py runs this module under Ray and checks which class was built.
"""

from __future__ import annotations

import os
from typing import Any

REGISTER_MODULE = "dcrl.integrations.verl.register"
V1_MODULE = "dcrl.integrations.verl.trainer_v1"  # registers the V1 trainer "dcrl" (TransferQueue)
V1_TRAINER_NAME = "dcrl"  # trainer.v1.trainer_mode of dcrl's V1 trainer
MODULES_VAR = "VERL_USE_EXTERNAL_MODULES"
RAY_JOB_CONFIG_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray in a `ray job submit` entrypoint
PLATFORM_VAR = "VERL_PLATFORM"  # verl's platform override (verl.plugin.platform)
CPU_PLATFORM = "cpu"  # dcrl's CPU platform (cpu_platform.py)
HF_ROLLOUT = "dcrl_hf"  # dcrl's transformers rollout (hf_rollout.py)


def _with_register_module(value: str | None, required: tuple[str, ...] = (REGISTER_MODULE,)) -> str:
    """A VERL_USE_EXTERNAL_MODULES value with dcrl's modules added (once each, last)."""
    modules = [m.strip() for m in (value or "").split(",") if m.strip()]
    for module in required:
        if module not in modules:
            modules.append(module)
    return ",".join(modules)


def _import_registrations_everywhere() -> None:
    """Add dcrl's registration module to VERL_USE_EXTERNAL_MODULES before verl is imported:
    `import verl` imports it here (Ray workers get it through the runtime env, see
    `forward_registrations_to_ray_workers`)."""
    os.environ[MODULES_VAR] = _with_register_module(os.environ.get(MODULES_VAR))


_import_registrations_everywhere()

import importlib.util  # noqa: E402
import json  # noqa: E402

import hydra  # noqa: E402
import ray  # noqa: E402
import verl.trainer.main_ppo_v0 as legacy  # noqa: E402
from omegaconf import OmegaConf, open_dict  # noqa: E402
from verl.trainer.main_ppo import run_ppo  # noqa: E402
from verl.trainer.ppo.utils import need_critic, need_reference_policy  # noqa: E402
from verl.utils.config import validate_config  # noqa: E402
from verl.utils.device import auto_set_device  # noqa: E402

from dcrl.integrations.verl.cpu_platform import (  # noqa: E402
    cpu_resource_pool_manager,
    on_cpu_platform,
)
from dcrl.integrations.verl.trainer import DcrlRayPPOTrainer  # noqa: E402

VERL_CONFIG_DIR = os.path.join(os.path.dirname(legacy.__file__), "config")


class DcrlTaskRunnerBody(legacy.BaseTaskRunner):
    """The training driver that runs inside a Ray actor (`DcrlTaskRunner`): it sets up verl's
    workers, tokenizer and datasets through verl's own helpers (the legacy `BaseTaskRunner`),
    then builds, initializes and fits `DcrlRayPPOTrainer`."""

    def build_trainer(self, config: Any) -> DcrlRayPPOTrainer:
        """dcrl's trainer for `config` (a resolved Hydra config), workers not yet started."""
        from verl.trainer.ppo.utils import create_rl_dataset, create_rl_sampler
        from verl.utils.config import omega_conf_to_dataclass
        from verl.utils.dataset.rl_dataset import collate_fn

        OmegaConf.resolve(config)
        _, worker_group_class = self.add_actor_rollout_worker(config)
        self.add_critic_worker(config)
        self.add_reward_model_resource_pool(config)
        self.add_teacher_model_resource_pool(config)
        validate_config(
            config=config,
            use_reference_policy=need_reference_policy(config),
            use_critic=need_critic(config),
        )
        model = omega_conf_to_dataclass(config.actor_rollout_ref.model)
        datasets = {
            split: create_rl_dataset(
                files,
                config.data,
                model.tokenizer,
                model.processor,
                is_train=split == "train",
                max_samples=config.data.get(f"{split}_max_samples", -1),
            )
            for split, files in (("train", config.data.train_files), ("val", config.data.val_files))
        }
        return DcrlRayPPOTrainer(
            config=config,
            tokenizer=model.tokenizer,
            processor=model.processor,
            role_worker_mapping=self.role_worker_mapping,
            resource_pool_manager=self.init_resource_pool_mgr(config),
            ray_worker_group_cls=worker_group_class,
            train_dataset=datasets["train"],
            val_dataset=datasets["val"],
            collate_fn=collate_fn,
            train_sampler=create_rl_sampler(config.data, datasets["train"]),
        )

    def add_actor_rollout_worker(self, config: Any) -> Any:
        """verl's actor/rollout worker; on the CPU platform, its gloo-started subclass
        (cpu_workers.py) in the role verl's helper picked."""
        worker_class, group_class = super().add_actor_rollout_worker(config)
        if on_cpu_platform():
            from dcrl.integrations.verl.cpu_workers import CPUActorRolloutRefWorker

            self._use_cpu_workers()
            worker_class = CPUActorRolloutRefWorker
        return worker_class, group_class

    def add_critic_worker(self, config: Any) -> None:
        super().add_critic_worker(config)
        if on_cpu_platform():
            self._use_cpu_workers()

    def _use_cpu_workers(self) -> None:
        from dcrl.integrations.verl.cpu_workers import cpu_worker_class

        for role, worker in self.role_worker_mapping.items():
            self.role_worker_mapping[role] = cpu_worker_class(worker)

    def init_resource_pool_mgr(self, config: Any) -> Any:
        manager = super().init_resource_pool_mgr(config)
        return cpu_resource_pool_manager(manager) if on_cpu_platform() else manager

    def run(self, config: Any) -> None:
        trainer = self.build_trainer(config)
        trainer.init_workers()
        trainer.fit()


# The Ray actor verl's `run_ppo` starts. ray.remote is called here, not used as a decorator, so
# that the name `DcrlTaskRunnerBody` keeps the plain class. Run as `python -m
# dcrl.integrations.verl.main`, this module is `__main__`, which Ray's cloudpickle never pickles by
# name: the class travels to the worker by value, with a copy of the globals its methods read.
# That is safe here because the one that matters, `DcrlRayPPOTrainer`, is a class of an importable
# module (dcrl.integrations.verl.trainer), pickled by name and imported in the worker, and nothing
# is rebound at run time. (Imported under its own name, this module's class travels by name.)
DcrlTaskRunner = ray.remote(DcrlTaskRunnerBody)


def check_trainer_choice(config: Any) -> tuple[str, ...]:
    """The trainer dcrl's recipe runs on, following verl's `trainer.use_v1` (its default: V1).

    Legacy (`use_v1=False`): `DcrlRayPPOTrainer`, built by this module's task runner. V1: verl's
    own V1 task runner builds the trainer registered as `trainer.v1.trainer_mode`, set here to
    dcrl's ("dcrl", trainer_v1.py: verl's synchronous trainer with the recipe); verl's async
    modes are refused (the recipe's controllers and DCPO's ρ read the step's own, on-policy
    rows). Returns the modules every Ray worker must import."""
    if not config.trainer.get("use_v1", False):
        return (REGISTER_MODULE,)
    mode = str(config.trainer.get("v1", {}).get("trainer_mode", "sync"))
    if mode not in ("sync", V1_TRAINER_NAME):
        raise SystemExit(
            f"error: trainer.v1.trainer_mode={mode}: dcrl's recipe runs on verl's synchronous "
            f"V1 trainer (its own registered as '{V1_TRAINER_NAME}'); leave "
            f"trainer.v1.trainer_mode at sync (dcrl sets {V1_TRAINER_NAME}), or use "
            "trainer.use_v1=False"
        )
    if importlib.util.find_spec("transfer_queue") is None:
        raise SystemExit(
            "error: trainer.use_v1=True: verl's V1 trainer needs TransferQueue, which is not "
            "installed; pip install TransferQueue==0.1.11 (what verl[verl-core] pulls in), or add "
            "trainer.use_v1=False"
        )
    with open_dict(config):
        config.trainer.v1.trainer_mode = V1_TRAINER_NAME
    return (REGISTER_MODULE, V1_MODULE)


def _job_env_vars() -> dict[str, str]:
    """The env_vars of the runtime env `ray job submit` gave this job ({} outside a Ray job)."""
    job_config = json.loads(os.environ.get(RAY_JOB_CONFIG_VAR, "") or "{}")
    return dict((job_config.get("runtime_env") or {}).get("env_vars") or {})


def forward_registrations_to_ray_workers(
    config: Any, required: tuple[str, ...] = (REGISTER_MODULE,)
) -> None:
    """Put VERL_USE_EXTERNAL_MODULES, with dcrl's registration module, into
    `ray_kwargs.ray_init.runtime_env.env_vars`, which verl's `run_ppo` merges over its own
    defaults and passes to `ray.init`: every Ray worker of the job (actor, rollout and agent-loop
    workers) then imports dcrl's registrations, also on a cluster started elsewhere, whose
    workers do not inherit this process's environment. The user's env vars stay; a module list
    the user set there (or, failing that, in this process's environment) is kept, dcrl's added.

    Under `ray job submit`, Ray refuses a ray.init env var that the job's runtime env also sets:
    if the job sets VERL_USE_EXTERNAL_MODULES with dcrl's module, it is left to the job; without
    it, this refuses with the fix.
    """
    job_value = _job_env_vars().get(MODULES_VAR)
    if job_value is not None:
        missing = [m for m in required if m not in [v.strip() for v in job_value.split(",")]]
        if not missing:
            return  # the job's runtime env gives it to every worker already
        raise SystemExit(
            f"error: the Ray job's runtime env sets {MODULES_VAR}={job_value!r} without "
            f"{', '.join(missing)}, so verl's workers would not register dcrl's loss, "
            f"estimators, agent loop and trainer; set "
            f"{MODULES_VAR}={_with_register_module(job_value, required)!r} in the job's runtime "
            f"env (ray job submit --runtime-env-json), or leave {MODULES_VAR} out of it and dcrl "
            "sets it"
        )
    _set_ray_env_var(
        config,
        MODULES_VAR,
        lambda value: _with_register_module(value or os.environ.get(MODULES_VAR), required),
    )


def _set_ray_env_var(config: Any, name: str, new_value: Any) -> None:
    """Set `ray_kwargs.ray_init.runtime_env.env_vars[name]` to new_value(the value there or
    None), creating the nested keys verl's config leaves out."""
    with open_dict(config):
        ray_init = config.ray_kwargs.get("ray_init", None)
        if ray_init is None:
            config.ray_kwargs.ray_init = {}
            ray_init = config.ray_kwargs.ray_init
        with open_dict(ray_init):
            if ray_init.get("runtime_env", None) is None:
                ray_init.runtime_env = {}
            runtime_env = ray_init.runtime_env
            with open_dict(runtime_env):
                if runtime_env.get("env_vars", None) is None:
                    runtime_env.env_vars = {}
                env_vars = runtime_env.env_vars
                with open_dict(env_vars):
                    env_vars[name] = new_value(env_vars.get(name, None))


def select_cpu_platform(config: Any) -> None:
    """`trainer.device=cpu`: verl's workers on the CPU, through dcrl's "cpu" platform
    (cpu_platform.py). verl picks its platform from VERL_PLATFORM, once per process: set it here
    before verl asks (auto_set_device) and in the runtime env of every Ray worker."""
    if str(config.trainer.get("device", "cuda")) != "cpu":
        return
    chosen = os.environ.get(PLATFORM_VAR, "").strip().lower()
    if chosen and chosen != CPU_PLATFORM:
        raise SystemExit(
            f"error: trainer.device=cpu, but {PLATFORM_VAR}={chosen} in the environment names "
            f"another verl platform; unset {PLATFORM_VAR} (dcrl sets it to {CPU_PLATFORM}), or "
            "drop trainer.device=cpu"
        )
    problems = cpu_setting_problems(config)
    if problems:
        raise SystemExit(
            "error: trainer.device=cpu: verl's GPU settings that cannot run on the CPU:\n  "
            + "\n  ".join(problems)
            + "\n(examples/verl/cpu_smoke.sh has a complete CPU run; "
            "docs/scaling_out_verl.md, 'verl on the CPU')"
        )
    os.environ[PLATFORM_VAR] = CPU_PLATFORM
    _set_ray_env_var(config, PLATFORM_VAR, lambda value: CPU_PLATFORM)


def cpu_setting_problems(config: Any) -> list[str]:
    """The settings of a `trainer.device=cpu` run that verl cannot run on the CPU, each with
    what it raises and the fix (one line each)."""
    problems = []
    actor = config.actor_rollout_ref.actor
    if str(actor.strategy) == "fsdp":
        problems.append(
            "actor_rollout_ref.actor.strategy=fsdp: FSDP1 with sync_module_states=True (verl's "
            "FSDPEngine._build_fsdp_module) refuses a module on the CPU ('The module has CPU "
            "parameters or buffers when `sync_module_states=True`'); set "
            "actor_rollout_ref.actor.strategy=fsdp2"
        )
    model = config.actor_rollout_ref.model
    attention = (model.get("override_config", None) or {}).get("attn_implementation", None)
    if attention in (None, "flash_attention_2", "flash_attention_3"):
        problems.append(
            f"actor_rollout_ref.model.override_config.attn_implementation={attention or 'unset'}:"
            " verl loads the model with flash_attention_2 unless told otherwise, a CUDA kernel; "
            "add +actor_rollout_ref.model.override_config.attn_implementation=eager (or sdpa)"
        )
    if model.get("use_remove_padding", False):
        problems.append(
            "actor_rollout_ref.model.use_remove_padding=True packs the rows of a micro-batch "
            "into one sequence for flash-attn's variable-length kernels; set it to False"
        )
    rollout = config.actor_rollout_ref.rollout
    name = None if OmegaConf.is_missing(rollout, "name") else rollout.name
    if name != HF_ROLLOUT:
        problems.append(
            f"actor_rollout_ref.rollout.name={name or 'unset'}: verl's rollout servers (vllm, "
            f"sglang, trtllm) need a GPU; set actor_rollout_ref.rollout.name={HF_ROLLOUT} (dcrl's "
            "transformers rollout server)"
        )
    return problems


@hydra.main(config_path=VERL_CONFIG_DIR, config_name="ppo_trainer", version_base=None)
def main(config) -> None:
    modules = check_trainer_choice(config)
    select_cpu_platform(config)
    auto_set_device(config)
    validate_config(
        config=config,
        use_reference_policy=need_reference_policy(config),
        use_critic=need_critic(config),
    )
    forward_registrations_to_ray_workers(config, modules)
    if config.trainer.get("use_v1", False):
        from verl.trainer.main_ppo import TaskRunnerV1

        run_ppo(config, task_runner_class=TaskRunnerV1)  # builds trainer.v1.trainer_mode's class
    else:
        run_ppo(config, task_runner_class=DcrlTaskRunner)


if __name__ == "__main__":
    main()
