"""verl's entry point, under a real Ray instance, builds dcrl's trainer in the Ray worker.

`python -m dcrl.integrations.verl.main` runs as a user would run it (Hydra config, `run_ppo`,
Ray starting the task-runner actor in a worker process, verl's helpers loading the tokenizer
and the datasets) until the runner calls `init_workers` on the trainer it built; a Ray worker
setup hook (tests/verl/ray_hooks.py) records that trainer's class there and stops the run, since
starting verl's workers needs GPUs.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray
from hydra import compose, initialize_config_dir
from verl.trainer.constants_ppo import get_ppo_ray_runtime_env

from tests.verl.fixtures import math_parquet, tiny_policy_folder
from tests.verl.ray_hooks import BUILT_TRAINER_FILE, STOP_MESSAGE

REGISTER_MODULE = "dcrl.integrations.verl.register"

REPO = Path(__file__).resolve().parents[2]


def _overrides(tmp_path: Path) -> list[str]:
    """A small run's Hydra overrides: the tiny policy, a parquet of additions, small batches."""
    model = tiny_policy_folder(tmp_path / "tiny")
    data = math_parquet(tmp_path / "train.parquet")
    return [
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
    ]


def _launch(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
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
        *_overrides(tmp_path),
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


class _RayInitCalled(Exception):
    pass


def _runtime_env_given_to_ray_init(tmp_path: Path, monkeypatch, *overrides: str) -> dict:
    """Run the entry point's `main` in this process on a composed config, through verl's
    `run_ppo`, until it calls `ray.init`; return the keyword arguments of that call."""
    monkeypatch.delenv("VERL_USE_EXTERNAL_MODULES", raising=False)  # restored afterwards
    from dcrl.integrations.verl import main as entry

    calls: list[dict] = []

    def ray_init(**kwargs):
        calls.append(kwargs)
        raise _RayInitCalled

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", ray_init)
    with initialize_config_dir(config_dir=entry.VERL_CONFIG_DIR, version_base=None):
        config = compose("ppo_trainer", overrides=[*_overrides(tmp_path), *overrides])
    with pytest.raises(_RayInitCalled):
        entry.main(config)
    (kwargs,) = calls
    return kwargs


@pytest.mark.parametrize(
    "user_env_vars, expected_modules",
    [
        ([], [REGISTER_MODULE]),
        (
            [
                "+ray_kwargs.ray_init.runtime_env.env_vars.MY_FLAG=on",
                "+ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=my_plugin",
            ],
            ["my_plugin", REGISTER_MODULE],
        ),
    ],
    ids=["no-env-vars", "user-env-vars"],
)
def test_ray_init_runtime_env_imports_dcrls_registrations_in_every_worker(
    tmp_path, monkeypatch, user_env_vars, expected_modules
):
    """Ray workers on a cluster started elsewhere (`ray_kwargs.ray_init.address`, or `ray job
    submit`) do not inherit the driver's environment: VERL_USE_EXTERNAL_MODULES, with dcrl's
    registration module, is in the env_vars of the runtime env verl's run_ppo gives ray.init,
    next to verl's defaults and the user's own env vars and modules."""
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    kwargs = _runtime_env_given_to_ray_init(
        tmp_path, monkeypatch, "+ray_kwargs.ray_init.address=ray://head:10001", *user_env_vars
    )
    assert kwargs["address"] == "ray://head:10001"
    env_vars = kwargs["runtime_env"]["env_vars"]
    assert env_vars["VERL_USE_EXTERNAL_MODULES"].split(",") == expected_modules
    for key, value in get_ppo_ray_runtime_env()["env_vars"].items():
        assert env_vars[key] == value  # verl's own defaults stay
    if user_env_vars:
        assert env_vars["MY_FLAG"] == "on"


def test_under_ray_job_submit_the_jobs_own_runtime_env_is_respected(tmp_path, monkeypatch):
    """Under `ray job submit`, Ray refuses an env var that both the job's runtime env and
    ray.init's set: one with dcrl's module is left to the job; one without it is refused with
    the fix."""
    job = {"runtime_env": {"env_vars": {"VERL_USE_EXTERNAL_MODULES": f"x,{REGISTER_MODULE}"}}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    kwargs = _runtime_env_given_to_ray_init(tmp_path, monkeypatch)
    assert "VERL_USE_EXTERNAL_MODULES" not in kwargs["runtime_env"].get("env_vars", {})

    job = {"runtime_env": {"env_vars": {"VERL_USE_EXTERNAL_MODULES": "x"}}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    from dcrl.integrations.verl import main as entry

    with initialize_config_dir(config_dir=entry.VERL_CONFIG_DIR, version_base=None):
        config = compose("ppo_trainer", overrides=_overrides(tmp_path))
    with pytest.raises(SystemExit, match=f"VERL_USE_EXTERNAL_MODULES='x,{REGISTER_MODULE}'"):
        entry.main(config)


V1_MODULE = "dcrl.integrations.verl.trainer_v1"


def _compose(tmp_path: Path, *overrides: str):
    from dcrl.integrations.verl import main as entry

    with initialize_config_dir(config_dir=entry.VERL_CONFIG_DIR, version_base=None):
        return compose("ppo_trainer", overrides=[*_overrides(tmp_path), *overrides])


@pytest.mark.parametrize("name", ["dcpo", "aepo"])
def test_v1_runs_dcrls_registered_trainer_in_every_worker(tmp_path, monkeypatch, name):
    """trainer.use_v1=True (verl's default): verl's V1 task runner builds the trainer registered
    as trainer.v1.trainer_mode, which the entry point sets to dcrl's; every Ray worker imports
    the module that registers it. AEPO (a row-replacing target) runs there too."""
    from verl.trainer.ppo.v1 import get_trainer_cls

    from dcrl.integrations.verl import main as entry
    from dcrl.integrations.verl.trainer_v1 import DcrlPPOTrainer

    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    config = _compose(tmp_path, "trainer.use_v1=True", f"+algorithm.dcrl.name={name}")
    assert entry.check_trainer_choice(config) == (REGISTER_MODULE, V1_MODULE)
    assert get_trainer_cls(config.trainer.v1.trainer_mode) is DcrlPPOTrainer
    kwargs = _runtime_env_given_to_ray_init(
        tmp_path, monkeypatch, "trainer.use_v1=True", f"+algorithm.dcrl.name={name}"
    )
    modules = kwargs["runtime_env"]["env_vars"]["VERL_USE_EXTERNAL_MODULES"].split(",")
    assert modules == [REGISTER_MODULE, V1_MODULE]


def test_v1_refuses_verls_async_modes(tmp_path):
    from dcrl.integrations.verl import main as entry

    config = _compose(
        tmp_path,
        "trainer.use_v1=True",
        "+algorithm.dcrl.name=aepo",
        "trainer.v1.trainer_mode=separate_async",
    )
    with pytest.raises(SystemExit, match="synchronous"):
        entry.check_trainer_choice(config)


def test_cpu_device_refuses_gpu_settings_and_selects_the_cpu_platform(tmp_path, monkeypatch):
    """trainer.device=cpu: the settings verl's GPU defaults need changed are refused, each with
    its fix; with them, every Ray worker gets VERL_PLATFORM=cpu (dcrl's CPU platform)."""
    import verl.plugin.platform.platform_manager as platforms

    from dcrl.integrations.verl import main as entry

    monkeypatch.setenv("VERL_PLATFORM", "cpu")  # restored afterwards, as is verl's choice
    monkeypatch.setattr(platforms, "_current_platform", None)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    config = _compose(tmp_path, "+algorithm.dcrl.name=dcpo", "trainer.device=cpu")
    with pytest.raises(SystemExit) as refused:
        entry.main(config)
    for fix in (
        "actor_rollout_ref.actor.strategy=fsdp2",
        "attn_implementation=eager",
        "use_remove_padding=True",
        "actor_rollout_ref.rollout.name=dcrl_hf",
    ):
        assert fix in str(refused.value)
    kwargs = _runtime_env_given_to_ray_init(
        tmp_path,
        monkeypatch,
        "+algorithm.dcrl.name=dcpo",
        "trainer.device=cpu",
        "actor_rollout_ref.actor.strategy=fsdp2",
        "+actor_rollout_ref.model.override_config.attn_implementation=eager",
        "actor_rollout_ref.model.use_remove_padding=False",
        "actor_rollout_ref.rollout.name=dcrl_hf",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
    )
    assert kwargs["runtime_env"]["env_vars"]["VERL_PLATFORM"] == "cpu"
    assert platforms.get_platform().device_name == "cpu"
