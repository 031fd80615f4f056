"""A run killed mid-way and resumed from its latest checkpoint logs exactly the metrics of the same
run uninterrupted (timings aside): model, optimizer, RNG, data position and the algorithm's own
state (entropy controller, Clip-Cov's generator) round-trip through the checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from dcrl.cli import app
from dcrl.train import checkpoint as ckpt
from dcrl.train.trainer import Trainer
from tests.helpers import bare_run, read_metrics, tiny_config

STEPS = 3
KILLED_AT = 3  # the step during which the run dies; its checkpoint step 2 is the last one
RESUME_OPTIONS = (f"train.steps={STEPS}", "train.save_every=1", "train.keep_checkpoints=3")


class SimulatedKill(Exception):
    pass


def run_until_killed(run_dir: Path, algorithm: str, where: str, *extra: str) -> None:
    """Run the config and die during step KILLED_AT: in train_step before it does anything, or
    in save after its metrics were logged (they must be dropped and logged again on resume)."""
    trainer = Trainer(tiny_config(run_dir, algorithm, *RESUME_OPTIONS, *extra))
    original = getattr(trainer, where)

    def dying(*args, **kwargs):
        step_running = trainer.step + 1 if where == "train_step" else trainer.step
        if step_running == KILLED_AT:
            raise SimulatedKill(f"killed in {where} of step {KILLED_AT}")
        return original(*args, **kwargs)

    setattr(trainer, where, dying)
    with pytest.raises(SimulatedKill):
        trainer.fit()


def without_timings(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.startswith(("time/", "perf/"))}


def assert_same_checkpoint(a: Path, b: Path) -> None:
    weights_a, weights_b = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        assert weights_a[name].equal(weights_b[name]), name
    assert (a / "trainer_state.json").read_text() == (b / "trainer_state.json").read_text()


def check_interrupted_run(straight: Path, interrupted: Path, where: str) -> None:
    """The state a kill during step KILLED_AT leaves: checkpoint step KILLED_AT − 1, intact."""
    latest = ckpt.latest_checkpoint(interrupted)
    assert latest == interrupted / ckpt.CHECKPOINTS / f"step_{KILLED_AT - 1:06d}"
    assert_same_checkpoint(latest, straight / ckpt.CHECKPOINTS / latest.name)
    logged = [r["step"] for r in read_metrics(interrupted)]
    assert logged == list(range(1, KILLED_AT + (where == "save")))


def check_resumed_run(straight: Path, resumed: Path) -> None:
    records_straight, records_resumed = read_metrics(straight), read_metrics(resumed)
    assert [r["step"] for r in records_resumed] == list(range(1, STEPS + 1))
    for a, b in zip(records_straight, records_resumed, strict=True):
        assert without_timings(a) == without_timings(b), f"step {a['step']} differs"
    final = f"step_{STEPS:06d}"
    assert_same_checkpoint(straight / ckpt.CHECKPOINTS / final, resumed / ckpt.CHECKPOINTS / final)


# Clip-Cov detaching 30% of the tokens, drawn from nearly all of them: which ones depends on
# its generator, whose state must round-trip.
RANDOM_CLIP_COV = ("algorithm.clip_cov_ratio=0.3", "algorithm.clip_cov_lb=-10")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("algorithm", "where", "extra"),
    [("grpo", "train_step", ()), ("aepo", "save", ()), ("clip_cov", "train_step", RANDOM_CLIP_COV)],
    ids=["grpo-killed-in-step", "aepo-killed-in-save", "clip_cov-killed-in-step"],
)
def test_resume_reproduces_the_uninterrupted_run(tmp_path, algorithm, where, extra):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    Trainer(tiny_config(straight, algorithm, *RESUME_OPTIONS, *extra)).fit()
    run_until_killed(interrupted, algorithm, where, *extra)
    check_interrupted_run(straight, interrupted, where)

    resumed = Trainer.from_run_dir(interrupted)
    assert resumed.step == KILLED_AT - 1
    history = resumed.fit()
    assert len(history) == STEPS - KILLED_AT + 1
    check_resumed_run(straight, interrupted)


@pytest.mark.slow
def test_cli_resume_restores_the_dcpo_controller(tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    Trainer(tiny_config(straight, "dcpo", *RESUME_OPTIONS)).fit()
    run_until_killed(interrupted, "dcpo", "save")
    check_interrupted_run(straight, interrupted, "save")

    result = CliRunner().invoke(app, ["train", "--resume", str(interrupted)])
    assert result.exit_code == 0, result.output
    check_resumed_run(straight, interrupted)
    # The controller acted on the restored entropy: step 3's T and α follow from step 2's.
    step2, step3 = read_metrics(interrupted)[1:]
    assert step3["control/previous_entropy"] == step2["entropy/sampled_nll"]


@pytest.mark.slow
def test_a_fresh_run_over_an_attempt_that_died_before_any_checkpoint_starts_its_log_over(
    tmp_path,
):
    run_dir = tmp_path / "run"
    trainer = Trainer(tiny_config(run_dir, "grpo", "train.steps=3"))  # save_every=0: at the end
    original = trainer.train_step

    def dying_in_step_2() -> dict[str, float]:
        if trainer.step == 1:
            raise SimulatedKill("killed in step 2")
        return original()

    trainer.train_step = dying_in_step_2
    with pytest.raises(SimulatedKill):
        trainer.fit()
    assert [r["step"] for r in read_metrics(run_dir)] == [1]
    assert ckpt.latest_checkpoint(run_dir) is None

    Trainer(tiny_config(run_dir, "grpo", "train.steps=3")).fit()  # no checkpoint: no --resume
    assert [r["step"] for r in read_metrics(run_dir)] == [1, 2, 3]


def test_lora_checkpoint_holds_only_the_adapters_and_restores_them(tmp_path):
    import torch

    from dcrl.models import load_policy
    from dcrl.train import checkpoint
    from dcrl.train.resume_check import restore_checkpoint, trainer_state

    model, _ = load_policy("tiny", lora={"rank": 2, "target_modules": ["q_proj", "v_proj"]})
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(1.0)
    config, algorithm, sampler = bare_run(tmp_path)
    state = trainer_state(config, algorithm, sampler)
    path = checkpoint.save_checkpoint(tmp_path, 1, model, optimizer, None, state)
    assert (path / "trainable.safetensors").is_file()
    assert not (path / "model.safetensors").exists()
    trained = {n: p.detach().clone() for n, p in model.named_parameters()}

    fresh, _ = load_policy("tiny", lora={"rank": 2, "target_modules": ["q_proj", "v_proj"]})
    fresh_optimizer = torch.optim.AdamW([p for p in fresh.parameters() if p.requires_grad])
    restore_checkpoint(tmp_path, config, fresh, fresh_optimizer, None, algorithm, sampler)
    for name, param in fresh.named_parameters():
        assert torch.equal(param, trained[name]), name


STATE = "trainer_state.json"
LAYOUTS = {  # files under RUN/checkpoints -> the checkpoint a resume continues from
    "no checkpoints": ({}, None),
    "latest missing, one intact": ({f"step_000001/{STATE}": "{}"}, None),
    "latest names the newest": (
        {"latest": "step_000002\n", f"step_000001/{STATE}": "{}", f"step_000002/{STATE}": "{}"},
        "step_000002",
    ),
    "latest names an older intact one": (
        {"latest": "step_000001", f"step_000001/{STATE}": "{}", f"step_000002/{STATE}": "{}"},
        "step_000001",
    ),
    "latest names an incomplete one": (
        {"latest": "step_000002", f"step_000001/{STATE}": "{}", "step_000002/optimizer.pt": ""},
        None,
    ),
    "latest names a folder of another name": (
        {"latest": "../run/checkpoints/step_000001", f"step_000001/{STATE}": "{}"},
        None,
    ),
    "latest is not text": ({"latest": b"\xff\xfe", f"step_000001/{STATE}": "{}"}, None),
}


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_latest_checkpoint_is_the_one_a_resume_continues_from(tmp_path, layout):
    """One lookup: `latest_checkpoint` finds what `resume_check.find_checkpoint` resumes from,
    and is None exactly where the resume refuses with a ResumeError."""
    from dcrl.train.resume_check import ResumeError, find_checkpoint

    files, expected = LAYOUTS[layout]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name, content in files.items():
        path = run_dir / ckpt.CHECKPOINTS / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    latest = ckpt.latest_checkpoint(run_dir)
    if expected is None:
        assert latest is None
        with pytest.raises(ResumeError, match="latest|nothing to resume"):
            find_checkpoint(run_dir)
    else:
        assert latest == find_checkpoint(run_dir) == run_dir / ckpt.CHECKPOINTS / expected
