"""verl's real training loop on the CPU: `examples/verl/cpu_smoke.sh` runs verl's legacy
`RayPPOTrainer.fit`, through dcrl's `DcrlRayPPOTrainer`, for 2 steps of AEPO and of DCPO + ICR
(composed: both terms in one run) on the built-in tiny-arith policy, and verl's V1
`PPOTrainer.fit` (TransferQueue), through dcrl's `DcrlPPOTrainer`, for 2 steps of DCPO + ICR and
of AEPO (its tempered groups through verl's V1 agent loop), each with one more step resumed from
its step-2 checkpoint, with verl's Ray workers, FSDP2 actor on gloo, agent
loop, reward loop, weight sync and checkpoints, and dcrl's CPU platform and transformers rollout
in verl's extension points. The script's own checks
(examples/verl/smoke_check.py, shared with gpu_smoke.sh) must pass; on top, from verl's step
metrics: each method's own term acted, verl trained on it, and the rollout sampled the weights
the actor had just trained (verl's rollout-vs-actor probability difference at step 2, both in
float32).

Each run starts a Ray instance and ~7 processes that import verl (2-4 minutes each on a shared
2-core machine). `bash examples/verl/cpu_smoke.sh` runs AEPO, DCPO and ICR each alone, resumed
too (docs/scaling_out_verl.md)."""

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "verl" / "cpu_smoke.sh"
_spec = importlib.util.spec_from_file_location(
    "smoke_check", REPO / "examples" / "verl" / "smoke_check.py"
)
smoke_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(smoke_check)
# verl's max |π_rollout − π_actor| over the step's tokens: ~3e-6 with float32 on both sides; a
# rollout left on the step-1 weights (the server's weight load disabled) measured 0.9999.
SYNCED = 1e-4


def _run_smoke(
    out: Path, algorithm: str, resume: bool, trainer: str
) -> subprocess.CompletedProcess:
    import sys

    env = {
        **os.environ,
        "OUT": str(out),
        "PYTHON": sys.executable,  # .venv-verl's, which runs tests/verl
        "SMOKE_RESUME": "1" if resume else "0",
        "SMOKE_TRAINER": trainer,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
    }
    env.pop("VERL_USE_EXTERNAL_MODULES", None)
    return subprocess.run(
        ["/bin/bash", str(SCRIPT), algorithm],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "trainer, algorithm, resume",
    [
        ("legacy", "aepo", False),
        ("legacy", "dcpo+icr", False),
        ("v1", "dcpo+icr", True),
        ("v1", "aepo", True),
    ],
    ids=["aepo", "dcpo+icr", "v1-dcpo+icr", "v1-aepo"],
)
def test_verls_fit_trains_dcrls_recipe_on_the_cpu(tmp_path, trainer, algorithm, resume):
    result = _run_smoke(tmp_path, algorithm, resume, trainer)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    assert f"cpu_smoke: {algorithm}: dcrl's trainer ran 2 steps" in output
    log = (tmp_path / f"{algorithm}-run.log").read_text(errors="replace")
    steps = smoke_check.steps(log)
    assert sorted(steps) == [1, 2]
    for step in (1, 2):
        assert steps[step]["training/global_step"] == step
        assert "actor/pg_loss" in steps[step]
    # verl's update moved the actor (a step whose 4 prompts all fail has no gradient).
    assert max(steps[s]["actor/grad_norm"] for s in (1, 2)) > 0
    # Each method's own term acted: AEPO spliced tempered rows in, DCPO's pass at T gave
    # ρ ≠ 1, ICR picked a shortest correct response.
    if algorithm == "aepo":
        assert max(steps[s]["control/num_reinforce"] for s in (1, 2)) >= 1
        for step in (1, 2):  # spliced rows: rollout log-probs set to π_old, no IS correction
            reinforced = steps[step]["control/num_reinforce"]
            assert steps[step].get("aepo/rollout_logprobs_reset", 0.0) == reinforced
    else:
        assert max(steps[s]["dcpo/rho_max"] for s in (1, 2)) > 1.0
        assert max(steps[s]["icr/num_selected"] for s in (1, 2)) >= 1
    # The step-2 rollout sampled the weights of the step-1 update.
    assert steps[2]["training/rollout_probs_diff_max"] < SYNCED, steps[2]
    checkpoint = tmp_path / "checkpoints" / algorithm / "global_step_2"
    assert (checkpoint / "dcrl_controller.json").exists()
    assert (checkpoint / "actor").is_dir()
    if resume:
        assert f"cpu_smoke: {algorithm}: resumed from its checkpoint and trained step 3" in output
        resumed = smoke_check.steps(
            (tmp_path / f"{algorithm}-resume.log").read_text(errors="replace")
        )
        assert sorted(resumed) == [3]
        assert resumed[3]["control/previous_entropy"] == steps[2]["entropy/sampled_nll"]
        assert resumed[3]["training/rollout_probs_diff_max"] < SYNCED  # the resumed weights
