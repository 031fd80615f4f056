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


def _refused_before_any_experiment(arguments, monkeypatch):
    """Run `dcrl theory run ARGUMENTS` with the simulator replaced by a tripwire: the error line
    must come before any experiment starts, with status 2 and no traceback."""
    import dcrl.theory.experiments

    def tripwire(*args, **kwargs):
        raise AssertionError("an experiment ran before the options were checked")

    monkeypatch.setattr(dcrl.theory.experiments, "run_suite", tripwire)
    result = CliRunner().invoke(app, ["run", "--quick", "-e", "E1", *arguments])
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("option", ["--out", "--figures-dir"])
def test_an_output_directory_that_is_a_file_is_refused_before_the_experiments(
    tmp_path, monkeypatch, option
):
    """--out naming a file raised FileExistsError from write_report, after every experiment."""
    existing = tmp_path / "results.txt"
    existing.write_text("keep me")
    arguments = ["--out", str(tmp_path / "out"), option, str(existing)]
    error = _refused_before_any_experiment(arguments, monkeypatch)
    assert f"{option} {existing} is a file, not a directory" in error
    inside = _refused_before_any_experiment(
        ["--out", str(tmp_path / "out"), option, str(existing / "sub")], monkeypatch
    )
    assert f"{existing} is a file" in inside
    assert existing.read_text() == "keep me"
    assert not (tmp_path / "out").exists()


def test_a_negative_env_seed_names_the_option(tmp_path, monkeypatch):
    """--env-seed -1 used to end in numpy's 'expected non-negative integer'."""
    error = _refused_before_any_experiment(
        ["--env-seed", "-1", "--out", str(tmp_path / "out")], monkeypatch
    )
    assert "--env-seed -1" in error and ">= 0" in error


def test_the_environment_refuses_a_negative_seed():
    from dcrl.theory.environment import make_environment

    with pytest.raises(ValueError, match="seed=-1"):
        make_environment(dim=2, num_actions=2, pool_size=4, seed=-1)
