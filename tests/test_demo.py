"""dcrl.demo's entropy-control table: which runs get which row is decided by what each run did
(its logged target entropy, the targets its config composes), not by its directory's name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from dcrl.demo import GRPO_DROP_GOAL, RMS_GOAL, composes_no_target, entropy_control_table

FIXTURE = Path(__file__).parent / "data" / "report_fixture"


def entropy_of(run: Path) -> np.ndarray:
    """The logged sampled-token NLL per step (the fixture logs one record per step)."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return np.array([record["entropy/sampled_nll"] for record in records])


def copy_run(name: str, destination: Path, algorithm: dict | None = None) -> Path:
    """A fixture run under another directory name; `algorithm` replaces its config's block."""
    shutil.copytree(FIXTURE / name, destination)
    if algorithm is not None:
        config = yaml.safe_load((destination / "config.yaml").read_text())
        config["algorithm"] = algorithm
        (destination / "config.yaml").write_text(yaml.safe_dump(config))
    return destination


def test_rows_are_decided_by_what_each_run_did_not_its_name(tmp_path):
    """A GRPO run in a directory not called grpo gets the drop row (its config composes no
    target); a run named grpo whose config composes ICR (a target, no controller) gets none; a
    controlled run gets its RMS row."""
    baseline = copy_run("grpo-seed1", tmp_path / "baseline")
    not_grpo = copy_run("grpo-seed2", tmp_path / "grpo", {"name": "icr"})
    controlled = copy_run("dcpo-seed1", tmp_path / "run-b")
    assert composes_no_target(baseline) and not composes_no_target(not_grpo)

    _, rows = entropy_control_table([baseline, not_grpo, controlled])
    assert [row["run"] for row in rows] == ["baseline", "run-b"]
    entropy = entropy_of(baseline)
    head, tail = entropy[:3].mean(), entropy[len(entropy) // 2 :].mean()
    drop = 1 - tail / head
    assert rows[0]["first_3"] == pytest.approx(round(head, 3))
    assert rows[0]["second_half"] == pytest.approx(round(tail, 3))
    assert rows[0]["change"] == f"-{drop:.1%}"
    assert rows[0]["goal"] == f">= {GRPO_DROP_GOAL:.0%} drop"
    assert rows[0]["met"] == ("yes" if drop >= GRPO_DROP_GOAL else "no")
    assert rows[1]["goal"] == f"<= {RMS_GOAL:.0%}" and rows[1]["target"] > 0


def test_a_run_without_a_readable_config_gets_no_drop_row(tmp_path):
    run = copy_run("grpo-seed1", tmp_path / "grpo")
    (run / "config.yaml").unlink()
    assert not composes_no_target(run)
    assert entropy_control_table([run])[1] == []
