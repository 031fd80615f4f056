"""The fault suite (`make faults`, and part of `make test`): bad inputs end in one clear error,
the grader survives hostile answers, and no kill, torn write or failed write loses a checkpoint
or a logged step. bench/faults.py runs the long campaign (real `kill -9`s) and the corpus as
real processes."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from typer.testing import CliRunner

import dcrl._atomic
from dcrl.cli import app
from dcrl.errors import UserError
from dcrl.models import load_policy
from dcrl.rewards import MathGrader, exact_match_reward, numeric_reward
from dcrl.train import checkpoint as ckpt
from dcrl.train.resume_check import restore_checkpoint, trainer_state
from dcrl.train.trainer import Trainer, TrainingDiverged
from tests.fault_inputs import BAD_INPUTS
from tests.helpers import bare_run, read_metrics, tiny_config, tiny_overrides
from tests.test_resume import RESUME_OPTIONS, SimulatedKill, check_resumed_run, run_until_killed

pytestmark = pytest.mark.faults


@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda case: case.name)
def test_a_bad_input_ends_in_one_error_line_that_names_it(case, tmp_path):
    result = CliRunner().invoke(app, case.args(tmp_path))
    assert isinstance(result.exception, SystemExit), result.exception  # no uncaught exception
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1, result.stderr
    assert errors[0] == result.stderr.strip().splitlines()[-1]  # the last thing said
    assert case.names.replace("{scratch}", str(tmp_path)) in errors[0]
    assert "Traceback" not in result.output


# -- the grader against hostile answers ---------------------------------------------------------
LATEX_PIECES = [
    "\\frac{",
    "\\sqrt{",
    "\\boxed{",
    "{",
    "}",
    "^",
    "_",
    "\\left(",
    "\\right)",
    "(",
    ")",
    "9",
    "-",
    "x",
    "\\infty",
    "\\pi",
    ".",
    ",",
    "=",
    "\\dfrac{",
    "e",
    "10",
    "\\\\",
    "$",
    " ",
]
hostile_text = st.one_of(
    st.text(max_size=200),  # any unicode
    st.lists(st.sampled_from(LATEX_PIECES), max_size=60).map("".join),  # unbalanced LaTeX
    st.integers(1, 400).map(lambda depth: "{" * depth + "1" + "}" * (depth // 2)),  # deep nesting
    st.integers(1, 12).map(lambda depth: "\\frac{" * depth + "1}{2}" * depth),
    st.integers(1, 6000).map(lambda digits: "-" * (digits % 2) + "9" * digits),  # huge integers
)
# Reference answers come from a dataset: short LaTeX, text, or integers of any size.
reference_text = st.one_of(
    st.text(max_size=20),
    st.lists(st.sampled_from(LATEX_PIECES), max_size=8).map("".join),
    st.integers().map(str),
    st.integers(1, 6000).map(lambda digits: "-" * (digits % 2) + "9" * digits),
)
# Answers whose grading cannot finish: they must hit the time limit and score 0, not hang.
TOO_EXPENSIVE = ["\\frac{" * 400 + "1}{2}" * 400, "9^{9^{9^{9}}}"]


@pytest.fixture(scope="module")
def grader():
    grader = MathGrader(timeout_s=1.0, max_answer_chars=10_000)
    yield grader
    grader.close()


@pytest.mark.slow
@settings(max_examples=1000, deadline=None, database=None, derandomize=True)
@given(prediction=hostile_text, answer=reference_text, boxed=st.booleans())
@example(prediction=TOO_EXPENSIVE[0], answer="x", boxed=True)
@example(prediction=TOO_EXPENSIVE[1], answer="2", boxed=True)
def test_the_grader_scores_any_string_in_0_1(grader, prediction, answer, boxed):
    completion = f"so \\boxed{{{prediction}}}" if boxed else prediction
    scores = [
        grader(completion, answer),
        exact_match_reward(completion, answer),
        numeric_reward(completion, "-12.5"),  # it refuses a non-numeric reference by design
    ]
    assert all(isinstance(score, float) and 0.0 <= score <= 1.0 for score in scores)


# -- checkpoints, kills and torn writes ----------------------------------------------------------
@pytest.mark.slow
def test_a_failed_checkpoint_write_is_one_error_and_keeps_the_previous_checkpoint(
    tmp_path, monkeypatch
):
    run_dir = tmp_path / "run"
    real_save = torch.save
    saves = []

    def save_failing_the_second_time(*args, **kwargs):
        saves.append(args[1])
        if len(saves) == 2:
            raise OSError(28, "No space left on device (injected)")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(ckpt.torch, "save", save_failing_the_second_time)
    options = ("train.steps=3", "train.save_every=1", "train.keep_checkpoints=3")
    result = CliRunner().invoke(app, ["train", *tiny_overrides(run_dir, "grpo", *options)])
    monkeypatch.undo()

    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: could not write the checkpoint of step 2")
    assert "No space left on device (injected)" in error
    assert f"{run_dir}/checkpoints/step_000001 is intact" in error and "--resume" in error
    assert ckpt.latest_checkpoint(run_dir) == run_dir / ckpt.CHECKPOINTS / "step_000001"

    resumed = CliRunner().invoke(app, ["train", "--resume", str(run_dir)])
    assert resumed.exit_code == 0, resumed.output
    assert [r["step"] for r in read_metrics(run_dir)] == [1, 2, 3]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """The uninterrupted run the interrupted ones must reproduce (tests/test_resume.py)."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    Trainer(tiny_config(run_dir, "grpo", *RESUME_OPTIONS)).fit()
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize("rename", [1, 2], ids=["writing-config.yaml", "cutting-metrics.jsonl"])
def test_a_kill_during_resume_start_up_loses_no_metrics(
    tmp_path, monkeypatch, straight_run, rename
):
    """Resume start-up rewrites two files (config.yaml, then metrics.jsonl cut back to the
    checkpoint); a kill at the moment of either rename leaves every logged line."""
    interrupted = tmp_path / "run"
    run_until_killed(interrupted, "grpo", "save")
    logged = (interrupted / "metrics.jsonl").read_bytes()
    real_replace = os.replace
    renames = []

    def killed_at_rename(*args):
        renames.append(args)
        if len(renames) == rename:
            raise SimulatedKill("killed during resume start-up")
        return real_replace(*args)

    monkeypatch.setattr(dcrl._atomic.os, "replace", killed_at_rename)
    with pytest.raises(SimulatedKill):
        Trainer.from_run_dir(interrupted).fit()
    monkeypatch.undo()
    assert (interrupted / "metrics.jsonl").read_bytes() == logged

    Trainer.from_run_dir(interrupted).fit()
    check_resumed_run(straight_run, interrupted)


@pytest.mark.slow
def test_resume_skips_a_torn_last_line(tmp_path, straight_run):
    interrupted = tmp_path / "run"
    run_until_killed(interrupted, "grpo", "save")
    with (interrupted / "metrics.jsonl").open("a") as log:
        log.write('{"step": 4, "reward/acc')  # a power loss mid-append
    result = CliRunner().invoke(app, ["train", "--resume", str(interrupted)])
    assert result.exit_code == 0, result.output
    check_resumed_run(straight_run, interrupted)


@pytest.mark.slow
def test_a_damaged_metrics_line_before_the_last_is_one_error(tmp_path):
    interrupted = tmp_path / "run"
    run_until_killed(interrupted, "grpo", "save")
    lines = (interrupted / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][:20]
    (interrupted / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(app, ["train", "--resume", str(interrupted)])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert f"error: {interrupted / 'metrics.jsonl'}:2: not a JSON record" in result.stderr


def test_optimizer_state_is_loaded_without_running_code(tmp_path):
    """A planted optimizer.pt whose unpickling would run code is refused, and the code never runs."""
    model, _ = load_policy("tiny")
    optimizer = torch.optim.AdamW(model.parameters())
    config, algorithm, sampler = bare_run(tmp_path)
    state = trainer_state(config, algorithm, sampler)
    path = ckpt.save_checkpoint(tmp_path, 1, model, optimizer, None, state)
    marker = tmp_path / "code-ran"

    class Planted:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"optimizer": Planted()}, path / "optimizer.pt")
    with pytest.raises(UserError, match=r"optimizer\.pt holds objects other than tensors"):
        restore_checkpoint(tmp_path, config, model, optimizer, None, algorithm, sampler)
    assert not marker.exists()


# -- NaN and inf in a step -----------------------------------------------------------------------
def poison_loss(trainer: Trainer, steps: set[int]) -> None:
    """Make the loss NaN (and so every gradient) during the given steps."""
    original = trainer.algorithm.loss

    def loss(*args, **kwargs):
        value, metrics = original(*args, **kwargs)
        return (value * math.nan if trainer.step in steps else value), metrics

    trainer.algorithm.loss = loss


@pytest.mark.slow
def test_a_non_finite_step_is_skipped_and_logged(tmp_path):
    trainer = Trainer(tiny_config(tmp_path / "run", "grpo", "train.steps=3"))
    poison_loss(trainer, {2})
    weights = []
    original_step = trainer.train_step

    def step_keeping_weights():
        metrics = original_step()
        weights.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
        return metrics

    trainer.train_step = step_keeping_weights
    trainer.fit()

    logged = read_metrics(tmp_path / "run")
    assert [r["train/skipped_updates"] for r in logged] == [0, 1, 0]
    assert [r["train/bad_steps"] for r in logged] == [0, 1, 0]
    assert logged[1]["loss/policy"] is None  # NaN is logged as null
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # step 2 skipped
    assert not all(torch.equal(weights[1][k], weights[2][k]) for k in weights[1])
    assert all(torch.isfinite(v).all() for v in trainer.model.state_dict().values())


@pytest.mark.slow
def test_consecutive_non_finite_steps_stop_the_run_with_its_last_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    options = ("train.steps=5", "train.save_every=1", "train.max_bad_steps=2")
    trainer = Trainer(tiny_config(run_dir, "grpo", *options))
    poison_loss(trainer, {2, 3, 4, 5})
    with pytest.raises(TrainingDiverged, match=r"step 3: .*NaN/inf in 2 steps in a row") as error:
        trainer.fit()
    latest = ckpt.latest_checkpoint(run_dir)
    assert latest == run_dir / ckpt.CHECKPOINTS / "step_000002"
    assert f"{latest} is intact" in str(error.value) and "train.lr" in str(error.value)
    first = load_file(run_dir / ckpt.CHECKPOINTS / "step_000001" / "model.safetensors")
    last = load_file(latest / "model.safetensors")
    assert all(torch.equal(first[name], last[name]) for name in first)  # no NaN reached them
    assert [r["step"] for r in read_metrics(run_dir)] == [1, 2, 3]
