"""The worked examples of docs/design.md, "Adding a piece", run as written: each code block that
starts with `# dcrl/<path>.py` becomes that module (under a scratch package instead of dcrl), and
its name is added to the registries, so a new method (its target and its preset, one file), a
policy loss and a rollout backend each work from one file. (The registries find a method's file
in dcrl/targets/ by its name with no line added: tests/test_registry_discovery.py puts the
example there.)
"""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from dcrl import algorithms, rollout, targets
from dcrl.algorithms import make_algorithm
from dcrl.core import losses as core_losses
from dcrl.core.advantages import grpo_advantages
from dcrl.step_data import StepContext
from dcrl.train.config import load_run_config
from tests.test_algorithm_reference import fixed_rollout, score

DESIGN = Path(__file__).resolve().parents[1] / "docs" / "design.md"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
PACKAGE = "design_examples"


def examples() -> dict[str, str]:
    """dcrl module name -> source, for each `# dcrl/...py` block of docs/design.md."""
    found = {}
    for block in BLOCK.findall(DESIGN.read_text(encoding="utf-8")):
        source = textwrap.dedent(block)
        first, _, rest = source.partition("\n")
        match = re.fullmatch(r"# (dcrl/[\w/]+)\.py", first.strip())
        if match:
            found[match.group(1).replace("/", ".")] = rest
    return found


@pytest.fixture
def registered(tmp_path, monkeypatch):
    """The examples as modules of a scratch package, with their registry lines."""
    sources = examples()
    assert set(sources) == {
        "dcrl.targets.hard_correct",  # the method: its target and its preset
        "dcrl.core.losses_cispo",
        "dcrl.rollout.counting",
    }
    local = {name: f"{PACKAGE}.{name.replace('.', '_')}" for name in sources}
    (tmp_path / PACKAGE).mkdir()
    (tmp_path / PACKAGE / "__init__.py").write_text("")
    for name, source in sources.items():
        for original, moved in local.items():
            source = source.replace(original, moved)
        (tmp_path / PACKAGE / f"{local[name].rpartition('.')[2]}.py").write_text(source)
    for cached in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
        del sys.modules[cached]  # a new scratch package per test: its loss registers again
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(targets.TARGETS, "hard_correct", local["dcrl.targets.hard_correct"])
    monkeypatch.setitem(algorithms.ALGORITHMS, "hard_correct", local["dcrl.targets.hard_correct"])
    monkeypatch.setattr(core_losses, "_POLICY_LOSSES", dict(core_losses._POLICY_LOSSES))
    monkeypatch.setitem(core_losses.POLICY_LOSS_MODULES, "cispo", local["dcrl.core.losses_cispo"])
    monkeypatch.setitem(rollout.ROLLOUT_BACKENDS, "counting", local["dcrl.rollout.counting"])
    return local


def prepare(overrides: list[str]):
    algorithm = make_algorithm(load_run_config(None, overrides).algorithm)
    batch, scores = fixed_rollout()
    ctx = StepContext(step=1, rollout=None, logprob_pass=score)
    return algorithm, batch, scores, algorithm.prepare(batch, scores, ctx)


def hard_correct_advantages(batch, scores, weight):
    """GRPO plus weight · (1 − p_g) on each correct response, p_g by a loop over groups."""
    expected = grpo_advantages(scores, batch.group_index).clone()
    for i in range(len(scores)):
        group = [j for j in range(len(scores)) if batch.group_index[j] == batch.group_index[i]]
        pass_rate = sum(float(scores[j] > 0.5) for j in group) / len(group)
        expected[i] += weight * (1 - pass_rate) * float(scores[i] > 0.5)
    return expected[:, None] * batch.response_mask


def test_a_new_methods_target_composes_from_its_one_file(registered):
    overrides = ["algorithm.name=composed", "algorithm.targets=[{name: hard_correct, weight: 2}]"]
    _, batch, scores, (train_batch, metrics) = prepare(overrides)
    expected = hard_correct_advantages(batch, scores, 2.0)
    torch.testing.assert_close(train_batch.advantages, expected, rtol=0, atol=1e-6)
    assert metrics["hard_correct/bonus_mean"] > 0


def test_a_new_methods_preset_runs_by_name_from_the_same_file(registered):
    algorithm, batch, scores, (train_batch, metrics) = prepare(
        ["algorithm.name=hard_correct", "algorithm.weight=2"]
    )
    assert algorithm.name == "hard_correct" and algorithm.state_dict() == {}
    _, _, _, (composed, composed_metrics) = prepare(
        ["algorithm.name=composed", "algorithm.targets=[{name: hard_correct, weight: 2}]"]
    )
    assert torch.equal(train_batch.advantages, composed.advantages)
    assert metrics == composed_metrics


def test_a_new_policy_loss_is_one_file_and_one_line(registered):
    algorithm, _, _, (train_batch, _) = prepare(
        ["algorithm.name=grpo", "algorithm.policy_loss=cispo", "algorithm.clip_high=0.5"]
    )
    mask = train_batch.response_mask.float()
    logprobs = (train_batch.old_logprobs + 0.4 * mask).requires_grad_()
    counts = {"num_tokens": float(mask.sum()), "num_sequences": float(len(mask))}
    loss, _ = algorithm.loss(train_batch, logprobs, None, counts)
    ratio = torch.exp(logprobs.detach() - train_batch.old_logprobs).clamp(max=1.5)
    expected = (-ratio * train_batch.advantages * logprobs.detach() * mask).sum() / mask.sum()
    torch.testing.assert_close(loss.detach(), expected)
    assert not algorithm.micro_batches_in_order


@pytest.mark.slow
def test_a_new_rollout_backend_is_one_file_and_one_line(registered, tmp_path):
    from dcrl.config import ConfigError
    from dcrl.train.trainer import Trainer
    from tests.helpers import read_metrics, tiny_overrides

    overrides = [*tiny_overrides(tmp_path / "run"), "rollout.backend=counting"]
    with pytest.raises(ConfigError, match=r"backend_options\.strat: not a setting"):
        load_run_config(None, [*overrides, "rollout.backend_options={strat: 0}"])
    trainer = Trainer(load_run_config(None, [*overrides, "rollout.backend_options={start: 5}"]))
    trainer.fit()
    assert type(trainer.backend).__name__ == "CountingBackend"
    lengths = [r["length/mean"] * 16 for r in read_metrics(tmp_path / "run")]  # 4 prompts × 4
    assert trainer.backend.tokens == pytest.approx(5 + sum(lengths))
