"""A Ray worker setup hook for tests/verl/test_entry_point.py (passed as the runtime_env's
`worker_process_setup_hook`): in every Ray worker, verl's `RayPPOTrainer.init_workers` records
the class of the trainer it is called on, then stops the run. `init_workers` is the first thing a
task runner calls on the trainer it built, and it would start GPU workers, which CPU tests lack.
"""

import os

BUILT_TRAINER_FILE = "DCRL_TEST_BUILT_TRAINER"  # env var: where to write the class name
STOP_MESSAGE = "dcrl test: stopped at init_workers after the trainer was built"


def record_built_trainer() -> None:
    from verl.trainer.ppo.ray_trainer import RayPPOTrainer

    def init_workers(self) -> None:
        cls = type(self)
        with open(os.environ[BUILT_TRAINER_FILE], "w") as handle:
            handle.write(f"{cls.__module__}.{cls.__qualname__}")
        raise RuntimeError(STOP_MESSAGE)

    RayPPOTrainer.init_workers = init_workers
