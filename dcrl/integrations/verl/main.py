"""Launch verl's PPO trainer with dcrl's AEPO / DCPO recipe (trainer.py). Hydra entry point with
verl's own config tree, so every verl override works unchanged:

    python -m dcrl.integrations.verl.main trainer.use_v1=False +algorithm.dcrl.name=dcpo ...

It does what `python -m verl.trainer.main_ppo` does with the legacy trainer, with
`DcrlRayPPOTrainer` in place of `RayPPOTrainer`, and imports dcrl's registrations in every Ray
worker (VERL_USE_EXTERNAL_MODULES). examples/verl/ has the papers' full commands.
"""

from __future__ import annotations

import os

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
from verl.trainer.main_ppo import run_ppo  # noqa: E402
from verl.trainer.ppo.utils import need_critic, need_reference_policy  # noqa: E402
from verl.utils.config import validate_config  # noqa: E402
from verl.utils.device import auto_set_device  # noqa: E402

from dcrl.integrations.verl.trainer import DcrlRayPPOTrainer  # noqa: E402

VERL_CONFIG_DIR = os.path.join(os.path.dirname(legacy.__file__), "config")


@ray.remote
class DcrlTaskRunner(legacy.TaskRunner.__ray_actor_class__):
    """verl's legacy TaskRunner building `DcrlRayPPOTrainer` instead of `RayPPOTrainer`."""

    def run(self, config):
        # The runner builds its trainer by this module-level name; this actor process only ever
        # runs this one training job, so rebinding it here changes nothing else.
        legacy.RayPPOTrainer = DcrlRayPPOTrainer
        return super().run(config)


@hydra.main(config_path=VERL_CONFIG_DIR, config_name="ppo_trainer", version_base=None)
def main(config) -> None:
    if config.trainer.use_v1:
        raise SystemExit(
            "dcrl's verl recipe runs on verl's RayPPOTrainer: add trainer.use_v1=False"
        )
    auto_set_device(config)
    validate_config(
        config=config,
        use_reference_policy=need_reference_policy(config),
        use_critic=need_critic(config),
    )
    run_ppo(config, task_runner_class=DcrlTaskRunner)


if __name__ == "__main__":
    main()
