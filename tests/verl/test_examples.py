"""Every Hydra override of the example launch scripts composes against verl's own config tree,
and the `algorithm.dcrl` block builds dcrl's settings (so a typo fails here, not on 8 GPUs)."""

import os
import re
import subprocess
from pathlib import Path

import pytest
import verl.trainer.main_ppo_v0 as legacy
from hydra import compose, initialize_config_dir

from dcrl.algorithms import get_algorithm_class
from dcrl.integrations.verl.register import dcrl_settings

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


@pytest.mark.parametrize("algorithm", ["aepo", "dcpo", "icr"])
def test_gpu_smoke_overrides_compose(algorithm):
    """examples/verl/gpu_smoke.sh's overrides (printed, not run) compose against verl's Hydra
    config and build dcrl's settings, so a typo fails here, not on the day a GPU is lent."""
    script = EXAMPLES / "gpu_smoke.sh"
    env = {**os.environ, "SMOKE_PRINT_ARGS": "1", "OUT": "/nonexistent"}
    output = subprocess.run(
        ["/bin/bash", str(script), algorithm], capture_output=True, text=True, check=True, env=env
    )
    overrides = [line for line in output.stdout.splitlines() if line]
    with initialize_config_dir(config_dir=VERL_CONFIG, version_base=None):
        config = compose("ppo_trainer", overrides=overrides)
    assert config.trainer.use_v1 is False
    assert config.actor_rollout_ref.rollout.name == "vllm"
    settings = dcrl_settings(config.algorithm, get_algorithm_class(algorithm).config_class)
    assert settings.name == algorithm
