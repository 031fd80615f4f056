"""Launch verl's PPO trainer with dcrl's recipe (trainer.py). Hydra entry point with verl's own
config tree, so every verl override works unchanged:

    python -m dcrl.integrations.verl.main trainer.use_v1=False +algorithm.dcrl.name=dcpo ...

It does what `python -m verl.trainer.main_ppo` does with verl's legacy trainer
(`trainer.use_v1=False`), except that the Ray actor which drives training builds
`DcrlRayPPOTrainer` itself (`DcrlTaskRunnerBody.build_trainer`), and dcrl's registrations are
imported in every Ray worker: VERL_USE_EXTERNAL_MODULES is set in this process and in the
env_vars of the runtime env verl passes to `ray.init`, so that workers on an existing cluster
(`ray_kwargs.ray_init.address`, `ray job submit`), which do not inherit this process's
environment, get it too. examples/verl/ has the papers' full commands;
docs/scaling_out_verl.md says what runs on which trainer.

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
MODULES_VAR = "VERL_USE_EXTERNAL_MODULES"
RAY_JOB_CONFIG_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray in a `ray job submit` entrypoint


def _with_register_module(value: str | None) -> str:
    """A VERL_USE_EXTERNAL_MODULES value with dcrl's registration module added (once, last)."""
    modules = [m.strip() for m in (value or "").split(",") if m.strip()]
    if REGISTER_MODULE not in modules:
        modules.append(REGISTER_MODULE)
    return ",".join(modules)


def _import_registrations_everywhere() -> None:
    """Add dcrl's registration module to VERL_USE_EXTERNAL_MODULES before verl is imported:
    `import verl` imports it here (Ray workers get it through the runtime env, see
    `forward_registrations_to_ray_workers`)."""
    os.environ[MODULES_VAR] = _with_register_module(os.environ.get(MODULES_VAR))


_import_registrations_everywhere()

import json  # noqa: E402

import hydra  # noqa: E402
import ray  # noqa: E402
import verl.trainer.main_ppo_v0 as legacy  # noqa: E402
from omegaconf import OmegaConf, open_dict  # noqa: E402
from verl.trainer.main_ppo import run_ppo  # noqa: E402
from verl.trainer.ppo.utils import need_critic, need_reference_policy  # noqa: E402
from verl.utils.config import validate_config  # noqa: E402
from verl.utils.device import auto_set_device  # noqa: E402

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


def check_trainer_choice(config: Any) -> None:
    """dcrl's recipe runs on verl's legacy trainer; refuse the V1 trainer with the fix."""
    if config.trainer.use_v1:
        raise SystemExit(
            "error: trainer.use_v1=True: dcrl's AEPO / DCPO / composed recipe runs on verl's legacy "
            "RayPPOTrainer only (docs/scaling_out_verl.md); add trainer.use_v1=False, or run ICR "
            "alone with python -m verl.trainer.main_ppo algorithm.adv_estimator=dcrl_icr"
        )


def _job_env_vars() -> dict[str, str]:
    """The env_vars of the runtime env `ray job submit` gave this job ({} outside a Ray job)."""
    job_config = json.loads(os.environ.get(RAY_JOB_CONFIG_VAR, "") or "{}")
    return dict((job_config.get("runtime_env") or {}).get("env_vars") or {})


def forward_registrations_to_ray_workers(config: Any) -> None:
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
        if REGISTER_MODULE in [m.strip() for m in job_value.split(",")]:
            return  # the job's runtime env gives it to every worker already
        raise SystemExit(
            f"error: the Ray job's runtime env sets {MODULES_VAR}={job_value!r} without "
            f"{REGISTER_MODULE}, so verl's workers would not register dcrl's loss, estimators and "
            f"agent loop; set {MODULES_VAR}={_with_register_module(job_value)!r} in the job's "
            f"runtime env (ray job submit --runtime-env-json), or leave {MODULES_VAR} out of it "
            "and dcrl sets it"
        )
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
                    value = env_vars.get(MODULES_VAR, None) or os.environ.get(MODULES_VAR)
                    env_vars[MODULES_VAR] = _with_register_module(value)


@hydra.main(config_path=VERL_CONFIG_DIR, config_name="ppo_trainer", version_base=None)
def main(config) -> None:
    check_trainer_choice(config)
    auto_set_device(config)
    validate_config(
        config=config,
        use_reference_policy=need_reference_policy(config),
        use_critic=need_critic(config),
    )
    forward_registrations_to_ray_workers(config)
    run_ppo(config, task_runner_class=DcrlTaskRunner)


if __name__ == "__main__":
    main()
