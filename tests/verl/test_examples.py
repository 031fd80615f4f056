"""Every Hydra override of the example launch scripts composes against verl's own config tree,
and the `algorithm.dcrl` block builds dcrl's settings (so a typo fails here, not on 8 GPUs);
gpu_smoke.sh's batch sizes go through verl's agent-loop chunking."""

import os
import re
import subprocess
from pathlib import Path

import pytest
import verl.trainer.main_ppo_v0 as legacy
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from verl.trainer.ppo.utils import need_critic, need_reference_policy
from verl.utils.config import validate_config

from dcrl.algorithms import get_algorithm_class
from dcrl.integrations.verl.register import dcrl_settings
from tests.verl.recipe_harness import aepo_trainer, verl_step

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "verl"
VERL_CONFIG = os.path.join(os.path.dirname(legacy.__file__), "config")


def _common_args() -> list[str]:
    script = f'MODEL=model; source "{EXAMPLES}/common.sh"; printf "%s\\n" "${{COMMON_ARGS[@]}}"'
    output = subprocess.run(["/bin/bash", "-c", script], capture_output=True, text=True, check=True)
    return [line for line in output.stdout.splitlines() if line]


@pytest.mark.parametrize(
    "script, algorithm",
    [
        ("run_dcpo_qwen2.5_math_7b.sh", "dcpo"),
        ("run_aepo_qwen2.5_math_7b.sh", "aepo"),
        ("run_icr_qwen3_4b.sh", "icr"),
    ],
)
def test_example_overrides_compose(script, algorithm):
    text = (EXAMPLES / script).read_text()
    overrides = re.findall(r"^\s+([+\w][\w.+]*=\S+) \\$", text, re.MULTILINE)
    assert len(overrides) >= 10
    with initialize_config_dir(config_dir=VERL_CONFIG, version_base=None):
        config = compose("ppo_trainer", overrides=_common_args() + overrides)
    assert config.actor_rollout_ref.actor.policy_loss.loss_mode == "dcrl_ppo_clip"
    assert config.actor_rollout_ref.rollout.temperature == 1.0
    settings = dcrl_settings(config.algorithm, get_algorithm_class(algorithm).config_class)
    assert settings.name == algorithm


def _smoke_overrides(algorithm: str) -> list[str]:
    """examples/verl/gpu_smoke.sh's overrides for one algorithm (printed, not run)."""
    script = EXAMPLES / "gpu_smoke.sh"
    env = {**os.environ, "SMOKE_PRINT_ARGS": "1", "OUT": "/nonexistent"}
    output = subprocess.run(
        ["/bin/bash", str(script), algorithm], capture_output=True, text=True, check=True, env=env
    )
    return [line for line in output.stdout.splitlines() if line]


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=VERL_CONFIG, version_base=None):
        return compose("ppo_trainer", overrides=overrides)


@pytest.mark.parametrize("algorithm", ["aepo", "dcpo", "icr"])
def test_gpu_smoke_overrides_compose(algorithm):
    """examples/verl/gpu_smoke.sh's overrides compose against verl's Hydra config, pass verl's
    own validate_config (batch and micro-batch sizes) and build dcrl's settings, so a typo
    fails here, not on the day a GPU is lent."""
    config = _compose(_smoke_overrides(algorithm))
    assert config.trainer.use_v1 is False
    assert config.actor_rollout_ref.rollout.name == "vllm"
    validate_config(
        config=config,
        use_reference_policy=need_reference_policy(config),
        use_critic=need_critic(config),
    )
    settings = dcrl_settings(config.algorithm, get_algorithm_class(algorithm).config_class)
    assert settings.name == algorithm


@pytest.mark.parametrize("algorithm", ["aepo", "dcpo", "icr"])
def test_gpu_smoke_keys_are_verl_0_9_1s(algorithm):
    """Every key gpu_smoke.sh sets is a key of verl 0.9.1's generated trainer config (the
    flattened ppo_trainer.yaml verl ships), and every key it adds with `+` is dcrl's
    `algorithm.dcrl` block, absent there."""
    generated = OmegaConf.to_container(  # plain dicts: `???` (required) values stay keys
        OmegaConf.load(os.path.join(VERL_CONFIG, "_generated_ppo_trainer.yaml"))
    )

    def has_key(dotted: str) -> bool:
        node = generated
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    for override in _smoke_overrides(algorithm):
        key = override.split("=", 1)[0]
        if key.startswith("+"):
            assert key.startswith("+algorithm.dcrl."), override
            assert not has_key(key[1:]), override
        else:
            assert has_key(key), override


def test_gpu_smoke_aepo_batches_go_through_verls_agent_loop_chunking(tmp_path, monkeypatch):
    """gpu_smoke.sh's AEPO step with its own numbers (prompts per step, n, agent-loop workers,
    AEPO's settings) through verl's AgentLoopManager, whose DataProto.chunk needs equal chunks,
    and on to the splice: the on-policy rows divide the workers, and the tempered request does
    not, so the run exercises dcrl's padding."""
    config = _compose(_smoke_overrides("aepo"))
    rollout = config.actor_rollout_ref.rollout
    num_workers, n = rollout.agent.num_workers, rollout.n
    num_prompts = config.data.train_batch_size
    block = OmegaConf.to_container(config.algorithm.dcrl)
    block.pop("name")
    trainer, manager = aepo_trainer(tmp_path, monkeypatch, [], num_workers, n=n, **block)

    step = verl_step(trainer, num_prompts=num_prompts, n=n, balance=True)

    assert len(step.batch) == num_prompts * n
    settings = trainer.dcrl_algorithm.config
    num_tempered = n * max(1, int(num_prompts * settings.tempered_fraction))
    assert num_tempered % num_workers != 0  # padded for verl's equal chunks
    for worker in manager.agent_loop_workers:  # on-policy rows, then the padded tempered ones
        assert worker.chunk_sizes == [
            num_prompts * n // num_workers,
            -(-num_tempered // num_workers),
        ]
    assert trainer._step_metrics["control/num_reinforce"] == int(
        step.batch.batch["dcrl_is_reinforce"].sum()
    )
