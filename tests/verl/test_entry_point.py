"""verl's entry point, under a real Ray instance, builds dcrl's trainer in the Ray worker.

`python -m dcrl.integrations.verl.main` runs as a user would run it (Hydra config, `run_ppo`,
Ray starting the task-runner actor in a worker process, verl's helpers loading the tokenizer
and the datasets) until the runner calls `init_workers` on the trainer it built; a Ray worker
setup hook (tests/verl/ray_hooks.py) records that trainer's class there and stops the run, since
starting verl's workers needs GPUs.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.verl.fixtures import math_parquet, tiny_policy_folder
from tests.verl.ray_hooks import BUILT_TRAINER_FILE, STOP_MESSAGE

REPO = Path(__file__).resolve().parents[2]


def _launch(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    model = tiny_policy_folder(tmp_path / "tiny")
    data = math_parquet(tmp_path / "train.parquet")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
        BUILT_TRAINER_FILE: str(tmp_path / "built.txt"),
        "RAY_DEDUP_LOGS": "0",
        "VERL_USE_EXTERNAL_PLUGINS": "none",
    }
    env.pop("VERL_USE_EXTERNAL_MODULES", None)
    args = [
        f"actor_rollout_ref.model.path={model}",
        f"data.train_files={data}",
        f"data.val_files={data}",
        "data.train_batch_size=4",
        "data.max_prompt_length=16",
        "data.max_response_length=8",
        "data.filter_overlong_prompts=False",
        "data.dataloader_num_workers=0",
        "actor_rollout_ref.rollout.n=2",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
        "actor_rollout_ref.actor.policy_loss.loss_mode=dcrl_ppo_clip",
        "actor_rollout_ref.rollout.temperature=1.0",
        "algorithm.adv_estimator=grpo",
        "trainer.use_v1=False",
        "trainer.n_gpus_per_node=1",
        "trainer.nnodes=1",
        "trainer.logger=[console]",
        f"trainer.default_local_dir={tmp_path / 'checkpoints'}",
        "ray_kwargs.ray_init.num_cpus=1",
        "+ray_kwargs.ray_init.include_dashboard=False",
        "+ray_kwargs.ray_init.runtime_env.worker_process_setup_hook="
        "tests.verl.ray_hooks.record_built_trainer",
        *overrides,
    ]
    return subprocess.run(
        [sys.executable, "-m", "dcrl.integrations.verl.main", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize(
    "overrides",
    [
        ["+algorithm.dcrl.name=aepo"],
        ["+algorithm.dcrl.name=composed", "+algorithm.dcrl.targets=[dcpo,icr]"],
    ],
    ids=["aepo", "dcpo+icr"],
)
def test_the_ray_worker_builds_dcrls_trainer(tmp_path, overrides):
    result = _launch(tmp_path, *overrides)
    output = result.stdout + result.stderr
    assert STOP_MESSAGE in output, output[-6000:]
    built = (tmp_path / "built.txt").read_text()
    assert built == "dcrl.integrations.verl.trainer.DcrlRayPPOTrainer"
    name = overrides[0].split("=")[1]
    assert f"dcrl: DcrlRayPPOTrainer runs {name}" in output
