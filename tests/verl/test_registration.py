"""verl finds dcrl's registrations through its import hook, in a fresh interpreter (as a Ray
worker would start): VERL_USE_EXTERNAL_MODULES names the module, `import verl` imports it."""

import json
import os
import subprocess
import sys

MODULE = "dcrl.integrations.verl.register"
LOOKUP = """
import json
from verl.trainer.ppo import core_algos
from verl.experimental.agent_loop.agent_loop import _agent_loop_registry
known = core_algos.ADV_ESTIMATOR_REGISTRY, core_algos.POLICY_LOSS_REGISTRY
found = {"builtin": "grpo_vectorized" in known[0]}
if "dcrl_icr" in known[0]:
    found["icr"] = core_algos.get_adv_estimator_fn("dcrl_icr").__module__
    found["grpo"] = core_algos.get_adv_estimator_fn("dcrl_grpo").__module__
    found["loss"] = core_algos.get_policy_loss_fn("dcrl_ppo_clip").__module__
    found["agent"] = _agent_loop_registry["dcrl_tempered_agent"]["_target_"]
print(json.dumps(found))
"""


def _lookup(external_modules: str | None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VERL_USE_EXTERNAL_PLUGINS": "none"}
    env.pop("VERL_USE_EXTERNAL_MODULES", None)
    if external_modules is not None:
        env["VERL_USE_EXTERNAL_MODULES"] = external_modules
    result = subprocess.run(
        [sys.executable, "-c", LOOKUP], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_hook_registers_every_name():
    found = _lookup(MODULE)
    assert found["icr"] == found["grpo"] == found["loss"] == MODULE
    assert found["agent"] == f"{MODULE}.TemperedSingleTurnAgentLoop"
    assert found["builtin"]  # verl's own registrations are untouched


def test_without_the_hook_verl_does_not_know_the_names():
    assert _lookup(None) == {"builtin": True}
