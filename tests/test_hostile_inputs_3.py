"""Hostile and mistaken inputs of issue 29: each ends in one `error: ...` line naming the input,
the problem and the fix, with exit status 2, no traceback and nothing half-written."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from dcrl.cli import app
from tests.helpers import tiny_overrides

pytestmark = pytest.mark.faults


def error_line(args: list[str]) -> str:
    """Run `dcrl ARGS`; check it ends in exactly one error line and no traceback; return it."""
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, SystemExit), result.exception  # no uncaught exception
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1, result.stderr
    assert errors[0] == result.stderr.strip().splitlines()[-1]
    return errors[0]


def problems_file(path: Path, first_line: str) -> Path:
    """A JSONL problem file: `first_line`, then eight good problems."""
    good = '{"problem": "1+1=", "answer": "2"}\n' * 8
    path.write_text(first_line + "\n" + good)
    return path


def train_on_file(tmp_path: Path, data_path: Path) -> list[str]:
    return ["train", *tiny_overrides(tmp_path / "run"), "data.task=file", f"data.path={data_path}"]


# -- 2: a deeply nested row in a training data file ---------------------------------------------
@pytest.mark.parametrize("depth", [100_000, 500, 101])
def test_a_deeply_nested_row_names_the_file_and_line(tmp_path, depth):
    """100,000 levels overflowed the JSON parser (RecursionError out of the loader); a few
    hundred parsed, then overflowed the stack when the row was pickled for the reward, blamed on
    the reward function. Both are refused where the row is read."""
    nested = "[" * depth + "]" * depth
    data = problems_file(
        tmp_path / "deep.jsonl", f'{{"problem": "1+1=", "answer": "2", "x": {nested}}}'
    )
    error = error_line(train_on_file(tmp_path, data))
    assert f"{data}:1:" in error and "nests lists or objects more than 100 levels" in error
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_row_nested_100_levels_deep_still_loads(tmp_path):
    from dcrl.tasks import load_problems

    nested = "[" * 100 + "]" * 100
    data = problems_file(
        tmp_path / "ok.jsonl", f'{{"problem": "1+1=", "answer": "2", "x": {nested}}}'
    )
    assert len(load_problems(data)) == 9


# -- 5: a directory as the problem file ---------------------------------------------------------
def test_a_directory_as_the_problem_file_is_called_a_directory(tmp_path):
    """data.path naming a directory was reported as 'problem file not found'."""
    folder = tmp_path / "data"
    folder.mkdir()
    error = error_line(train_on_file(tmp_path, folder))
    assert "data.path" in error and f"{folder} is a directory, not a file" in error
    assert "not found" not in error


# -- 5: task options of the wrong type ----------------------------------------------------------
@pytest.mark.parametrize(
    ("task", "options", "named"),
    [
        ("arith", "{verbosity_levels: [[1]]}", "verbosity_levels[0]=[1] is a list, not a number"),
        ("arith", "{max_digits: [1]}", "max_digits=[1] is a list, not an integer"),
        ("arith", "{slip_rate: [0.1]}", "slip_rate=[0.1] is a list, not a number"),
        ("arith", "{operators: 5}", "operators=5 is an integer, not text"),
        ("explore", "{trap_share: [0.1]}", "trap_share=[0.1] is a list, not a number"),
        ("explore", "{strategy_weights: 1}", "strategy_weights=1 is an integer, not a list"),
    ],
)
def test_a_task_option_of_the_wrong_type_names_the_option(tmp_path, task, options, named):
    """These ended in Python's words from inside the task ("'<=' not supported between
    instances of 'float' and 'list'", "'int' object is not iterable"), naming no option."""
    args = ["train", *tiny_overrides(tmp_path / "run"), f"data.task={task}"]
    error = error_line([*args, f"data.task_options={options}"])
    assert error.startswith("error: data.task_options: ") and named in error
    assert "not supported" not in error and "not iterable" not in error


def test_task_options_of_the_right_types_still_build_the_task():
    from dcrl.tasks import get_task

    task = get_task("arith", level=[1, 2], verbosity_levels=[0, 1], slip_rate=0, max_digits=1)
    assert task.levels == (1, 2)
    assert get_task("explore", strategy_weights=(1, 1, 1), trap_share=1).trap_share == 1.0


# -- 5: entropy-controller options ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "named"),
    [
        (
            ["algorithm.controller_options={foo: 1}"],
            "algorithm.controller_options.foo: the bang_bang controller has no setting 'foo'",
        ),
        (
            ["algorithm.controller=pi", "algorithm.controller_options={gain: 1}"],
            "algorithm.controller_options.gain: the pi controller has no setting 'gain' "
            "(it takes proportional_gain, integral_gain, entropy_smoothing, gain_reference, "
            "derivative_gain, weight_min, target_ramp, hold_gain, hold_integral, "
            "cooling_weight_max)",
        ),
        (
            ["algorithm.controller_options={target_entropy: 1}"],
            "algorithm.controller_options.target_entropy: set it as target_entropy",
        ),
        (
            ["algorithm.controller=pi", "algorithm.controller_options={proportional_gain: -1}"],
            "algorithm.controller_options.proportional_gain must be >= 0.0, got -1",
        ),
        (
            ["algorithm.controller=fixed", "algorithm.controller_options={weight: -1}"],
            "algorithm.controller_options.weight must be >= 0.0, got -1",
        ),
    ],
)
def test_a_bad_controller_option_is_keyed_where_the_user_set_it(tmp_path, options, named):
    """These printed a garbled key path: 'algorithm.bad arguments for entropy controller ...',
    'algorithm.dcrl.core.control.make_controller() got multiple values ...' or
    'algorithm.proportional_gain must be ...' (no such key: it is under controller_options)."""
    args = ["train", *tiny_overrides(tmp_path / "run", "dcpo"), *options]
    error = error_line(args)
    assert named in error
    assert "bad arguments" not in error and "make_controller" not in error
