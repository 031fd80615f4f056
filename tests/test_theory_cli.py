"""`dcrl theory run`, called through its Typer sub-app."""

import json

import pytest
from typer.testing import CliRunner

from dcrl.theory.cli import app


@pytest.mark.slow
def test_run_writes_json_figures_and_summary(tmp_path):
    out = tmp_path / "run"
    figures = tmp_path / "figures"
    arguments = ["run", "--quick", "-e", "E1", "-e", "e5", "--out", str(out)]
    result = CliRunner().invoke(app, [*arguments, "--figures-dir", str(figures)])
    assert result.exit_code == 0, result.output
    assert "E1" in result.output and "PASS" in result.output
    payload = json.loads((out / "results.json").read_text())
    assert [e["name"] for e in payload["experiments"]] == ["E1", "E5"]
    assert payload["passed"] is True
    assert "RECONSTRUCTION" in payload["note"]
    summary = (out / "summary.md").read_text()
    assert "RECONSTRUCTION" in summary and "![E1](E1.png)" in summary
    assert "dcrl theory run --quick --out" in summary
    for name in ("E1", "E5"):
        png = out / f"{name}.png"
        assert png.read_bytes()[:4] == b"\x89PNG"
        assert png.stat().st_size < 200_000
        assert (figures / f"theory_{name.lower()}.png").exists()


def test_run_one_experiment_with_changed_parameters(tmp_path):
    out = tmp_path / "e3"
    arguments = ["run", "-e", "E3", "--beta", "1", "--dim", "6", "--actions", "3"]
    arguments += [
        "--pool-size",
        "1024",
        "--seeds",
        "8",
        "--rare-fraction",
        "1",
        "--rare-fraction",
        "0.01",
    ]
    result = CliRunner().invoke(app, [*arguments, "--out", str(out)])
    assert result.exit_code == 0, result.output
    experiment = json.loads((out / "results.json").read_text())["experiments"][0]
    assert experiment["params"]["beta"] == 1.0 and experiment["params"]["dim"] == 6
    assert experiment["params"]["num_seeds"] == 8
    assert [f["rare_fraction"] for f in experiment["series"]["fractions"]] == [1.0, 0.01]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--beta", "0"], "beta=0.0"),
        (["--dim", "2", "--actions", "4"], "num_actions=4 exceeds dim=2"),
        (["-e", "E9"], "unknown experiment"),
    ],
)
def test_bad_parameters_exit_with_a_clear_error(tmp_path, arguments, message):
    result = CliRunner().invoke(app, ["run", "--quick", "--out", str(tmp_path), *arguments])
    assert result.exit_code == 2
    assert message in result.stderr and result.stderr.startswith("error: ")
    assert "error" not in result.stdout  # errors go to stderr, like every dcrl command's
    assert not (tmp_path / "results.json").exists()
