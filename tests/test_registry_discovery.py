"""Adding a method is one new file (issue 28): the registries find the modules of dcrl/targets/
and dcrl/algorithms/ by their file names, so the design doc's `hard_correct.py` dropped into
the targets package, with no registry line, runs by name as a preset and as a composed target.
A file there without `TARGET`, or naming itself otherwise than its file, is an error naming it.

The files go to a scratch directory added to `dcrl.targets.__path__` (a copy of the list), and
the registries' caches are cleared before and after, so nothing outlives a test.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dcrl import algorithms, targets
from dcrl.cli import app
from dcrl.config import ConfigError
from dcrl.targets import TargetError, get_target_class
from dcrl.train.config import load_run_config
from tests.test_design_examples import examples, hard_correct_advantages, prepare

BUILT_IN_TARGETS = [
    "aepo",
    "best_of_n",
    "dcpo",
    "entropy_adv",
    "entropy_reg",
    "icr",
    "kimi",
    "lp_f",
    "shorter_better",
]
BUILT_IN_ALGORITHMS = [
    "aepo",
    "clip_cov",
    "clip_higher",
    "composed",
    "dcpo",
    "entropy_adv",
    "entropy_reg",
    "grpo",
    "icr",
    "kimi",
    "kl_cov",
    "lp_f",
    "shorter_better",
]


def rediscover() -> None:
    targets.find_targets.cache_clear()
    algorithms.find_algorithms.cache_clear()


@pytest.fixture
def targets_dir(tmp_path, monkeypatch):
    """A directory that is part of the dcrl.targets package; a file written there is a module of
    it. Undone after: its modules forgotten, the path restored, the registries found afresh."""
    directory = tmp_path / "more_targets"
    directory.mkdir()
    monkeypatch.setattr(targets, "__path__", [*targets.__path__, str(directory)])
    rediscover()
    yield directory
    for path in directory.glob("*.py"):
        sys.modules.pop(f"dcrl.targets.{path.stem}", None)
        if path.stem in vars(targets):
            delattr(targets, path.stem)  # set by importing the submodule
    rediscover()  # the monkeypatch's teardown, after this, restores __path__


def add_module(directory: Path, name: str, source: str) -> Path:
    path = directory / f"{name}.py"
    path.write_text(source, encoding="utf-8")
    importlib.invalidate_caches()
    rediscover()
    return path


def test_the_built_in_names_are_the_files():
    assert sorted(targets.TARGETS) == BUILT_IN_TARGETS
    assert sorted(algorithms.ALGORITHMS) == BUILT_IN_ALGORITHMS
    assert targets.TARGETS["dcpo"] == algorithms.ALGORITHMS["dcpo"] == "dcrl.targets.dcpo"
    assert algorithms.ALGORITHMS["grpo"] == "dcrl.algorithms.grpo"
    assert "best_of_n" not in algorithms.ALGORITHMS  # a target without a preset
    assert algorithms.ALGORITHMS is algorithms.find_algorithms()  # one cached table
    assert targets.TARGETS is targets.find_targets()


def test_finding_the_targets_imports_no_method():
    code = (
        "import sys, dcrl.targets as t; names = sorted(t.TARGETS); "
        "print(names, sorted(m for m in sys.modules if m.startswith('dcrl.targets.')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == f"{BUILT_IN_TARGETS} ['dcrl.targets.base']"


def test_a_new_method_is_one_file_with_no_registry_line(targets_dir):
    registries = Path(targets.__file__).read_text() + Path(algorithms.__file__).read_text()
    assert "hard_correct" not in registries
    add_module(targets_dir, "hard_correct", examples()["dcrl.targets.hard_correct"])

    assert targets.TARGETS["hard_correct"] == "dcrl.targets.hard_correct"
    assert algorithms.ALGORITHMS["hard_correct"] == "dcrl.targets.hard_correct"
    assert sorted(targets.TARGETS) == sorted([*BUILT_IN_TARGETS, "hard_correct"])
    assert sorted(algorithms.ALGORITHMS) == sorted([*BUILT_IN_ALGORITHMS, "hard_correct"])

    algorithm, batch, scores, (train_batch, metrics) = prepare(
        ["algorithm.name=hard_correct", "algorithm.weight=2"]
    )
    assert algorithm.name == "hard_correct"
    expected = hard_correct_advantages(batch, scores, 2.0)
    torch.testing.assert_close(train_batch.advantages, expected, rtol=0, atol=1e-6)
    assert metrics["hard_correct/bonus_mean"] > 0
    _, _, _, (composed, _) = prepare(
        ["algorithm.name=composed", "algorithm.targets=[dcpo, {name: hard_correct, weight: 2}]"]
    )
    assert composed.advantages.shape == train_batch.advantages.shape

    listing = CliRunner().invoke(app, ["algorithms"])
    assert listing.exit_code == 0, listing.output
    assert any(line.startswith("hard_correct ") for line in listing.output.splitlines())


def test_a_module_without_target_is_an_error_naming_the_file(targets_dir):
    path = add_module(targets_dir, "half_done", '"""A method with its target still to write."""\n')
    add_module(targets_dir, "_helpers", "VALUE = 1\n")  # `_`-prefixed: a helper, no method

    assert "half_done" in targets.TARGETS and "_helpers" not in targets.TARGETS
    assert "half_done" not in algorithms.ALGORITHMS  # no preset: not an algorithm name
    with pytest.raises(TargetError, match="defines no TARGET") as error:
        get_target_class("half_done")
    assert str(path) in str(error.value) and "TARGET = " in str(error.value)
    with pytest.raises(ConfigError, match="defines no TARGET"):
        load_run_config(None, ["algorithm.name=composed", "algorithm.targets=[half_done]"])


def test_a_file_named_otherwise_than_its_method_is_an_error_naming_it(targets_dir):
    path = add_module(targets_dir, "hard", examples()["dcrl.targets.hard_correct"])

    assert "hard" in targets.TARGETS
    with pytest.raises(TargetError, match="named 'hard_correct'") as error:
        get_target_class("hard")
    assert str(path) in str(error.value)
    with pytest.raises(ValueError, match="named 'hard_correct'") as error:
        algorithms.find_algorithms()
    assert str(path) in str(error.value)
