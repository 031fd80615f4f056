"""Launch verl's PPO trainer with dcrl's recipe (trainer.py). Hydra entry point with verl's own
config tree, so every verl override works unchanged:

    python -m dcrl.integrations.verl.main trainer.use_v1=False +algorithm.dcrl.name=dcpo ...

It does what `python -m verl.trainer.main_ppo` does with verl's legacy trainer
(`trainer.use_v1=False`), except that the Ray actor which drives training builds
`DcrlRayPPOTrainer` itself (`DcrlTaskRunner.build_trainer`), and dcrl's registrations are
imported in every Ray worker (VERL_USE_EXTERNAL_MODULES). examples/verl/ has the papers' full
commands; docs/scaling_out_verl.md says what runs on which trainer.

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


def _import_registrations_everywhere() -> None:
    """Add dcrl's registration module to VERL_USE_EXTERNAL_MODULES before verl is imported:
    `import verl` imports it here, and Ray workers started from this process inherit it."""
    modules = [m for m in os.environ.get("VERL_USE_EXTERNAL_MODULES", "").split(",") if m]
    if REGISTER_MODULE not in modules:
        os.environ["VERL_USE_EXTERNAL_MODULES"] = ",".join([*modules, REGISTER_MODULE])


_import_registrations_everywhere()

import hydra  # noqa: E402
import ray  # noqa: E402
import verl.trainer.main_ppo_v0 as legacy  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
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
# the name `DcrlTaskRunnerBody` keeps the plain class: Ray's wrapper subclass travels by value,
# its base by reference (by name), and the worker runs `run` with this module's own globals.
DcrlTaskRunner = ray.remote(DcrlTaskRunnerBody)


def check_trainer_choice(config: Any) -> None:
    """dcrl's recipe runs on verl's legacy trainer; refuse the V1 trainer with the fix."""
    if config.trainer.use_v1:
        raise SystemExit(
            "error: trainer.use_v1=True: dcrl's AEPO / DCPO / composed recipe runs on verl's legacy "
            "RayPPOTrainer only (docs/scaling_out_verl.md); add trainer.use_v1=False, or run ICR "
            "alone with python -m verl.trainer.main_ppo algorithm.adv_estimator=dcrl_icr"
        )


@hydra.main(config_path=VERL_CONFIG_DIR, config_name="ppo_trainer", version_base=None)
def main(config) -> None:
    check_trainer_choice(config)
    auto_set_device(config)
    validate_config(
        config=config,
        use_reference_policy=need_reference_policy(config),
        use_critic=need_critic(config),
    )
    run_ppo(config, task_runner_class=DcrlTaskRunner)


if __name__ == "__main__":
    main()
