"""The packaged recipes (dcrl/recipes/, package data): found by name (`dcrl train -c explore-dcpo`),
listed by `dcrl recipes`, used by `dcrl demo`; every one loads. scripts/wheel-check.sh shows the
same from an installed wheel outside a clone."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dcrl import demo
from dcrl.cli import app
from dcrl.train.config import load_run_config
from dcrl.train.recipes import (
    UnknownRecipe,
    is_recipe_name,
    recipe_dir,
    recipe_names,
    recipe_path,
    resolve_config,
    summary,
)

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted(path.stem for path in (REPO / "dcrl" / "recipes").glob("*.yaml"))


def test_the_recipes_are_the_package_folder():
    assert recipe_dir() == REPO / "dcrl" / "recipes"
    assert recipe_names() == RECIPES
    assert {f"explore-{name}" for name in demo.DEMO_ALGORITHMS} <= set(RECIPES)
    assert {"tiny-grpo", "qwen3-4b-icr", "smollm2-135m-addition"} <= set(RECIPES)


def test_the_recipes_are_package_data():
    """The wheel carries what the lookup reads: pyproject's package data covers dcrl/recipes."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["dcrl"]
    assert all(any(Path(f"recipes/{n}.yaml").match(p) for p in patterns) for n in RECIPES)


@pytest.mark.parametrize("name", RECIPES)
def test_every_packaged_recipe_loads_and_says_what_it_is(name, tmp_path):
    config = load_run_config(recipe_path(name), [f"log.output_dir={tmp_path}"])
    assert config.algorithm.name
    line = summary(name)
    assert line and len(line) <= 100, line  # one line of `dcrl recipes`
    assert "configs/" not in recipe_path(name).read_text()  # how to run it: by name


def test_a_bare_name_is_a_packaged_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_config("explore-dcpo") == recipe_dir() / "explore-dcpo.yaml"
    assert resolve_config(None) is None


def test_an_existing_file_wins_over_a_recipe_of_the_same_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("explore-dcpo").write_text("train:\n  steps: 3\n")
    assert resolve_config("explore-dcpo") == Path("explore-dcpo")


@pytest.mark.parametrize("text", ["mine.yaml", "mine.YML", "./tiny-grpo", "sub/tiny-grpo", ".."])
def test_a_path_stays_a_path(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not is_recipe_name(text)
    assert resolve_config(text) == Path(text)  # load_run_config says it is missing


def test_an_unknown_name_lists_the_known_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnknownRecipe) as error:
        resolve_config("explore-dcpoo")
    message = str(error.value)
    assert message.startswith("--config explore-dcpoo: no such file and no packaged recipe")
    assert all(name in message for name in RECIPES)


def test_train_takes_a_recipe_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["train", "-c", "tiny-dcpo", "--print-config"])
    assert result.exit_code == 0, result.output
    assert "name: dcpo" in result.output
    assert "name: tiny-overthink" in result.output


def test_train_with_an_unknown_recipe_is_one_error_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["train", "-c", "tiny-dcpoo"])
    assert result.exit_code == 2, result.output
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: --config tiny-dcpoo: "), errors
    assert "tiny-dcpo, tiny-dcpo-icr" in errors[0]


def test_recipes_command_lists_each_with_its_first_comment_line():
    result = CliRunner().invoke(app, ["recipes"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == RECIPES
    for name, line in zip(RECIPES, lines[:-1], strict=True):
        assert line.split(maxsplit=1)[1] == summary(name)
    assert str(recipe_dir()) in lines[-1]
    first = (recipe_dir() / "explore-dcpo.yaml").read_text().splitlines()[0]
    assert first.startswith("# DCPO on the exploration testbed")
    assert any(re.fullmatch(rf"explore-dcpo +{re.escape(first[2:])}", line) for line in lines)


def test_the_demo_trains_the_packaged_recipes():
    for algorithm in demo.DEMO_ALGORITHMS:
        assert demo.recipe_path(algorithm) == recipe_dir() / f"explore-{algorithm}.yaml"


def test_a_bad_demo_override_is_one_error_line(tmp_path):
    result = CliRunner().invoke(
        app, ["demo", "--out", str(tmp_path / "demo"), "--steps", "2", "train.lr=nan"]
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        "error: train.lr: expected a finite number, got nan"
    ]
    assert "Traceback" not in result.output
