"""The trainer and `dcrl train`: a CLI run that trains every parameter, micro-batch invariance of
the update, atomic checkpoints, the metric sinks, and the clear errors of bad inputs."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from dcrl.cli import app
from dcrl.config import ConfigError
from dcrl.core.logprobs import entropy_signals
from dcrl.models import load_policy
from dcrl.train import checkpoint as ckpt
from dcrl.train.checkpoint import CheckpointError
from dcrl.train.config import load_run_config
from dcrl.train.resume_check import restore_checkpoint
from dcrl.train.trainer import Trainer
from tests.helpers import is_finite, read_metrics, tiny_config, tiny_overrides


def run_cli(*args: str):
    return CliRunner().invoke(app, ["train", *args])


@pytest.mark.slow
def test_cli_train_changes_every_parameter_and_exports_the_policy(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(*tiny_overrides(run_dir, "grpo", "log.console=true"))
    assert result.exit_code == 0, result.output
    assert f"run directory: {run_dir}" in result.output
    assert "step    2" in result.output  # the console sink's per-step line

    torch.manual_seed(1)  # train.seed: the trainer seeds torch before building the model
    initial, _ = load_policy("tiny")
    trained, _ = load_policy(str(run_dir / "policy"))
    initial_params = dict(initial.named_parameters())
    trained_params = dict(trained.named_parameters())
    assert trained_params.keys() == initial_params.keys()
    unchanged = [n for n, p in trained_params.items() if torch.equal(p, initial_params[n])]
    assert unchanged == []
    assert [r["step"] for r in read_metrics(run_dir)] == [1, 2]
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["algorithm"]["name"] == "grpo" and saved["train"]["steps"] == 2


@pytest.mark.slow
@pytest.mark.parametrize(
    ("algorithm", "extra"),
    [("grpo", ()), ("entropy_reg", ()), ("entropy_reg", ("algorithm.form=true_entropy",))],
    ids=["grpo", "entropy_reg-sampled_nll", "entropy_reg-true_entropy"],
)
def test_update_does_not_depend_on_the_micro_batch_size(tmp_path, algorithm, extra):
    """Global token normalization: micro-batches of 1 accumulate the mini-batch's gradient.

    Compared in float64. In float32, summing the same terms in another order moves a gradient by
    ~1e-7 of its terms' magnitude, and Adam's first step, lr·g/(|g| + 1e-8), turns that noise on
    a near-zero gradient into an lr-sized move of its parameter, which then changes the next
    mini-batch's gradients: any float32 tolerance is either loose or flaky. In float64 the
    reordering noise is ~1e-16 relative, far below Adam's eps, so both optimizer steps' gradients
    must agree to rtol 1e-9 (atol 1e-12 for entries that cancel to ~0), while a normalization
    bug (a per-micro-batch mean) changes them by tens of percent.
    """
    config = tiny_config(
        tmp_path / "run",
        algorithm,
        "train.mini_batch_prompts=2",  # two optimizer steps of 8 rows each
        "train.micro_batch_size=8",
        "train.grad_clip=1e6",  # compare raw gradients, not clipped ones
        *extra,
    )
    trainer = Trainer(config)
    trainer.model.double()  # in place: the optimizer keeps the same parameters
    batches = []
    original_update = trainer.update
    trainer.update = lambda batch: batches.append(batch) or original_update(batch)
    gradients: list[list[torch.Tensor]] = []
    trainer.optimizer.register_step_pre_hook(
        lambda *_: gradients.append([p.grad.clone() for p in trainer.model.parameters()])
    )

    # Snapshot the state the update starts from, run the step (micro-batches of 8) ...
    trainer.algorithm.prepare = _snapshot_before(trainer, trainer.algorithm.prepare)
    metrics = trainer.train_step()
    grads_whole, gradients[:] = list(gradients), []
    lengths = batches[0].response_mask.sum(-1)
    assert lengths.min() < lengths.max()  # unequal micro-batches: a per-micro mean would differ

    # ... then replay the same update from the same state with micro-batches of 1.
    model_state, optimizer_state, scheduler_state = trainer.snapshot
    trainer.model.load_state_dict(model_state)
    trainer.optimizer.load_state_dict(optimizer_state)
    trainer.scheduler.load_state_dict(scheduler_state)
    trainer.config.train.micro_batch_size = 1
    replay, replay_entropy = original_update(batches[0])
    replay.update(entropy_signals(replay_entropy))

    assert len(grads_whole) == len(gradients) == 2
    for whole, single in zip(grads_whole, gradients, strict=True):
        assert any(bool(g.abs().sum() > 0) for g in whole)
        for g_whole, g_single in zip(whole, single, strict=True):
            assert g_whole.dtype == torch.float64
            torch.testing.assert_close(g_single, g_whole, atol=1e-12, rtol=1e-9)
    for name in ("loss/policy", "entropy/sampled_nll", "entropy/full"):
        assert replay[name] == pytest.approx(metrics[name], rel=1e-9, abs=1e-12)


def _snapshot_before(trainer: Trainer, prepare):
    """Wrap prepare so the trainer keeps (model, optimizer, scheduler) states as of before the
    update in `trainer.snapshot`."""

    def wrapped(batch, scores, ctx):
        trainer.snapshot = (
            copy.deepcopy(trainer.model.state_dict()),
            copy.deepcopy(trainer.optimizer.state_dict()),
            copy.deepcopy(trainer.scheduler.state_dict()),
        )
        return prepare(batch, scores, ctx)

    return wrapped


@pytest.mark.slow
def test_a_failed_save_leaves_latest_on_the_previous_complete_checkpoint(tmp_path, monkeypatch):
    trainer = Trainer(tiny_config(tmp_path / "run"))
    trainer.train_step()
    first = trainer.save()
    saved_params = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train_step()

    def failing_save(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(
        CheckpointError, match=r"step 2 .*simulated.*step_000001 is intact.*--resume"
    ):
        trainer.save()
    monkeypatch.undo()

    root = tmp_path / "run" / ckpt.CHECKPOINTS
    assert not (root / ".tmp-step_000002").exists()  # failed mid-write: its space given back
    assert not (root / "step_000002").exists()
    assert ckpt.latest_checkpoint(tmp_path / "run") == first == root / "step_000001"
    model, _ = load_policy("tiny")
    optimizer = torch.optim.AdamW(model.parameters())
    state = restore_checkpoint(
        tmp_path / "run",
        trainer.config,
        model,
        optimizer,
        None,
        copy.deepcopy(trainer.algorithm),
        copy.deepcopy(trainer.sampler),
    )
    assert state["step"] == 1
    for name, value in model.state_dict().items():
        assert torch.equal(value, saved_params[name]), name

    # The next save succeeds and clears the stray temporary directory.
    assert trainer.save() == root / "step_000002"
    assert not (root / ".tmp-step_000002").exists()
    assert ckpt.latest_checkpoint(tmp_path / "run") == root / "step_000002"


@pytest.mark.slow
def test_sinks_write_one_jsonl_line_per_step_and_tensorboard_events(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    history = Trainer(tiny_config(run_dir, "grpo", "log.tensorboard=true")).fit()

    records = read_metrics(run_dir)
    assert [r["step"] for r in records] == [1, 2]
    assert set(records[0]) == set(records[1]) == {"step", *history[0]}
    assert all(is_finite(v) for r in records for v in r.values())
    events = list((run_dir / "tb").glob("events.out.tfevents.*"))
    assert events
    accumulator = EventAccumulator(str(run_dir / "tb"))
    accumulator.Reload()
    assert set(accumulator.Tags()["scalars"]) == set(history[0])
    rewards = accumulator.Scalars("reward/accuracy")
    assert [e.step for e in rewards] == [1, 2]
    assert [e.value for e in rewards] == pytest.approx([m["reward/accuracy"] for m in history])


# ------------------------------------------------------------------------------ bad inputs


def test_unknown_config_key_names_the_key_and_the_known_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key train\.stepz; known keys under "):
        tiny_config(tmp_path, "grpo", "train.stepz=3")
    with pytest.raises(ConfigError, match=r"known keys under train: .*\bsteps\b"):
        tiny_config(tmp_path, "grpo", "train.stepz=3")
    # an AEPO option given to GRPO is unknown to GRPO's config
    with pytest.raises(ConfigError, match=r"algorithm\.target_entropy.*known keys under algorithm"):
        tiny_config(tmp_path, "grpo", "algorithm.target_entropy=0.3")
    result = run_cli(*tiny_overrides(tmp_path / "run"), "rollout.num=3")
    assert result.exit_code == 2
    assert "error: unknown config key rollout.num" in result.output
    assert "Traceback" not in result.output


def test_bad_value_names_the_key_and_the_allowed_values(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"rollout\.backend: unknown rollout backend 'sglang': choose one of hf, vllm",
    ):
        tiny_config(tmp_path, "grpo", "rollout.backend=sglang")
    with pytest.raises(ConfigError, match=r"algorithm\.controller: 'pid' .*'bang_bang', 'pi'"):
        tiny_config(tmp_path, "dcpo", "algorithm.controller=pid")
    with pytest.raises(ConfigError, match=r"train\.steps: expected an integer"):
        tiny_config(tmp_path, "grpo", "train.steps=many")
    with pytest.raises(ConfigError, match=r"mini_batch_prompts"):
        tiny_config(tmp_path, "grpo", "train.mini_batch_prompts=3")


def test_unknown_algorithm_lists_the_registered_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"algorithm\.name: unknown algorithm 'ppo'.*aepo.*grpo"):
        tiny_config(tmp_path, "ppo")
    result = run_cli(*tiny_overrides(tmp_path / "run", "ppo"))
    assert result.exit_code == 2 and "unknown algorithm 'ppo'" in result.output


def test_missing_model_path_is_an_error_line_and_exit_code_2(tmp_path):
    missing = tmp_path / "no-such-model"
    result = run_cli(*tiny_overrides(tmp_path / "run"), f"model.name={missing}")
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ")
    assert str(missing) in result.output
    assert "Traceback" not in result.output


def test_malformed_data_line_names_file_line_and_field(tmp_path):
    data = tmp_path / "problems.jsonl"
    data.write_text(
        json.dumps({"problem": "1+1", "answer": "2"})
        + "\n"
        + json.dumps({"problem": "2+2", "solution": "4"})
        + "\n"
    )
    overrides = ("data.task=file", f"data.path={data}")
    with pytest.raises(ValueError, match=rf"{data}:2: missing field 'answer'"):
        Trainer(tiny_config(tmp_path / "run", "grpo", *overrides))
    result = run_cli(*tiny_overrides(tmp_path / "run2", "grpo", *overrides))
    assert result.exit_code == 2
    assert f"{data}:2: missing field 'answer'" in result.output


def test_print_config_prints_the_resolved_config_with_algorithm_defaults(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("--print-config", *tiny_overrides(run_dir, "dcpo"), "train.lr=3e-4")
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.output)
    assert printed["algorithm"]["name"] == "dcpo"
    assert printed["algorithm"]["alpha_cap"] == 0.1  # a DCPO default, not given on the line
    assert printed["algorithm"]["clip_low"] == 0.2  # a shared PPO default
    assert printed["train"]["lr"] == 3e-4
    assert printed["rollout"]["top_p"] == 0.99
    assert not run_dir.exists()  # printing starts nothing


@pytest.mark.slow
def test_run_dir_with_checkpoints_needs_resume(tmp_path):
    run_dir = tmp_path / "run"
    Trainer(tiny_config(run_dir, "grpo", "train.steps=1")).fit()
    with pytest.raises(FileExistsError, match=r"already holds checkpoints.*--resume"):
        Trainer(tiny_config(run_dir, "grpo", "train.steps=1"))
    result = run_cli(*tiny_overrides(run_dir, "grpo", "train.steps=1"))
    assert result.exit_code == 2
    assert f"dcrl train --resume {run_dir}" in result.output
    # --resume continues with the saved config: overrides are refused.
    result = run_cli("--resume", str(run_dir), "train.steps=5")
    assert result.exit_code == 2 and "drop --config and overrides" in result.output


def test_resume_of_a_directory_that_is_not_a_run_is_an_error(tmp_path):
    result = run_cli("--resume", str(tmp_path))
    assert result.exit_code == 2
    assert "is not a dcrl run directory" in result.output


def test_load_run_config_reads_a_yaml_recipe_and_applies_overrides(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"algorithm": {"name": "aepo", "max_reinforce": 7}}))
    config = load_run_config(recipe, ["algorithm.target_entropy=0.3", "train.steps=4"])
    assert config.algorithm.name == "aepo"
    assert config.algorithm.max_reinforce == 7
    assert config.algorithm.target_entropy == 0.3
    assert config.train.steps == 4
    assert config.train.logprob_chunk_size is None  # auto: sized in bytes by dcrl.core.logprobs


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["grpo", "aepo"])
def test_on_policy_update_skips_the_old_logprob_pass_and_takes_the_same_step(tmp_path, algorithm):
    """One optimizer step per rollout: π_old is the policy being updated, so the no-grad
    old-log-prob pass is skipped and the loss uses its own detached log-probs.

    Compared in float64 (see the micro-batch test above for why not float32): the skipped pass
    would have returned the same log-probs up to ~1e-16 relative, so the PPO ratio differs from
    exactly 1 by that much and both runs' gradients must agree to rtol 1e-9.
    """
    gradients = {}
    calls = {}
    for reuse in (True, False):
        config = tiny_config(
            tmp_path / f"run-{reuse}",
            algorithm,
            "train.steps=1",
            "train.grad_clip=1e6",
            f"train.reuse_on_policy_logprobs={str(reuse).lower()}",
        )
        trainer = Trainer(config)
        trainer.model.double()
        passes = []
        original_pass = trainer.logprob_pass
        trainer.logprob_pass = lambda *a, s=passes, f=original_pass, **k: s.append(k) or f(*a, **k)
        grads: list[list[torch.Tensor]] = []
        trainer.optimizer.register_step_pre_hook(
            lambda *_, grads=grads, trainer=trainer: grads.append(
                [p.grad.clone() for p in trainer.model.parameters()]
            )
        )
        trainer.train_step()
        gradients[reuse], calls[reuse] = grads, len(passes)
    assert calls == {True: 0, False: 1}
    assert len(gradients[True]) == len(gradients[False]) == 1
    for g_reuse, g_pass in zip(gradients[True][0], gradients[False][0], strict=True):
        torch.testing.assert_close(g_reuse, g_pass, atol=1e-12, rtol=1e-9)
    assert any(bool(g.abs().sum() > 0) for g in gradients[True][0])


def test_length_sorted_chunks_hold_every_row_once_longest_first():
    from dcrl.train.batches import length_sorted_chunks

    lengths = torch.tensor([3, 7, 1, 7, 5, 0, 2])
    mask = (torch.arange(8) < lengths[:, None]).long()  # (7, 8)
    chunks = length_sorted_chunks(mask, 3)
    assert [len(c) for c in chunks] == [3, 3, 1]
    order = torch.cat(chunks)
    assert sorted(order.tolist()) == list(range(7))
    assert order.tolist() == [1, 3, 4, 0, 6, 2, 5]  # ties (rows 1 and 3) keep row order


@pytest.mark.slow
@pytest.mark.parametrize("reuse", [True, False], ids=["on_policy", "old_logprob_pass"])
def test_length_sorted_micro_batches_take_the_rollout_order_step(tmp_path, monkeypatch, reuse):
    """Grouping rows of similar length into micro-batches (so trim_padding cuts more) changes
    the mini-batch gradient and the old log-probs only by float summation order.

    Compared in float64 (see test_update_does_not_depend_on_the_micro_batch_size for why not
    float32): reordering moves a sum by ~1e-16 relative, so both runs' gradients agree to rtol
    1e-9, while a row scored with another row's mask or advantage would differ by far more.
    """
    from dcrl.train import batches as batches_module
    from dcrl.train.batches import row_chunks

    def rollout_order(response_mask, size):  # the micro-batches before sorting
        return [
            torch.arange(len(response_mask))[rows] for rows in row_chunks(len(response_mask), size)
        ]

    results = {}
    for sort in (True, False):
        if not sort:
            monkeypatch.setattr(batches_module, "length_sorted_chunks", rollout_order)
        config = tiny_config(
            tmp_path / f"run-{sort}",
            "grpo",
            "train.steps=1",
            "train.micro_batch_size=3",  # 16 rows: 6 micro-batches, 3 old-log-prob chunks
            "train.grad_clip=1e6",
            f"train.reuse_on_policy_logprobs={str(reuse).lower()}",
        )
        trainer = Trainer(config)
        trainer.model.double()
        batches, grads = [], []
        original_update = trainer.update
        trainer.update = lambda batch, f=original_update, b=batches: b.append(batch) or f(batch)
        trainer.optimizer.register_step_pre_hook(
            lambda *_, grads=grads, trainer=trainer: grads.append(
                [p.grad.clone() for p in trainer.model.parameters()]
            )
        )
        metrics = trainer.train_step()
        results[sort] = (batches[0], grads[0], metrics)
    (batch, grads_sorted, metrics_sorted), (batch_plain, grads_plain, metrics_plain) = (
        results[True],
        results[False],
    )
    lengths = batch.response_mask.sum(-1)
    assert lengths.min() < lengths.max()  # sorting regroups the rows
    assert torch.equal(batch.input_ids, batch_plain.input_ids)  # the same rollout
    if not reuse:
        torch.testing.assert_close(
            batch.old_logprobs, batch_plain.old_logprobs, atol=1e-12, rtol=1e-9
        )
    assert any(bool(g.abs().sum() > 0) for g in grads_sorted)
    for g_sorted, g_plain in zip(grads_sorted, grads_plain, strict=True):
        torch.testing.assert_close(g_sorted, g_plain, atol=1e-12, rtol=1e-9)
    for name in ("loss/policy", "entropy/sampled_nll", "entropy/full", "loss/clipfrac_low"):
        assert metrics_sorted[name] == pytest.approx(metrics_plain[name], rel=1e-9, abs=1e-12)


@pytest.mark.slow
def test_rollout_decoding_option_reaches_the_backend_and_is_checked(tmp_path):
    trainer = Trainer(tiny_config(tmp_path / "run", "grpo", "rollout.decoding=loop"))
    assert trainer.backend.decoding == "loop"
    trainer.train_step()  # a step samples through the loop
    with pytest.raises(ValueError, match="decoding=loop"):
        tiny_config(tmp_path / "other", "grpo", "rollout.backend=vllm", "rollout.decoding=loop")
