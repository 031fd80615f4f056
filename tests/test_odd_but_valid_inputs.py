"""Inputs that are odd but valid work: YAML merge keys in a recipe, a 401-digit number in a
hand-edited metrics.jsonl (dcrl/config.py, dcrl/report/runs.py)."""

from __future__ import annotations

import math

import pytest

from dcrl.config import ConfigError, load_yaml
from dcrl.report.runs import load_run

pytestmark = pytest.mark.faults


def test_yaml_merge_keys_are_valid_and_a_key_given_twice_is_not(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("base: &base {lr: 1.0e-3, steps: 2}\ntrain:\n  <<: *base\n  steps: 5\n")
    assert load_yaml(recipe)["train"] == {"lr": 1.0e-3, "steps": 5}  # the explicit key wins
    recipe.write_text("train:\n  steps: 2\n  steps: 5\n")
    with pytest.raises(ConfigError, match="'steps' is given twice"):
        load_yaml(recipe)


def test_a_number_too_large_for_a_float_in_the_metrics_reads_as_nan(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(
        '{"step": 1, "loss/policy": 1' + "0" * 400 + ', "reward/accuracy": 0.5}\n'
    )
    loaded = load_run(run)
    assert math.isnan(loaded.metrics["loss/policy"][0])
    assert loaded.metrics["reward/accuracy"][0] == 0.5
