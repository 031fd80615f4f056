"""The recipes that ship with dcrl: the YAML run configs in the package's `recipes/` folder
(package data, so a wheel has them too), found by name: `dcrl train -c explore-dcpo` is
`dcrl/recipes/explore-dcpo.yaml`. `dcrl recipes` lists them; `dcrl demo` runs four of them.

A `--config` value that names an existing file is that file. Otherwise a bare name (no path
separator, no `.yaml` / `.yml` suffix) is a packaged recipe, and an unknown one is an error that
lists the known names; anything else is a path, and load_run_config says it is missing.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from dcrl.errors import UserError

FOLDER = "recipes"  # inside the dcrl package
SUFFIXES = (".yaml", ".yml")


class UnknownRecipe(UserError):
    """A bare name given as a config that is neither a file nor a packaged recipe."""


def recipe_dir() -> Path:
    """The folder of the packaged recipes. dcrl is installed as files (its model assets are read
    from disk too), so the resource is a real path."""
    return Path(str(resources.files("dcrl").joinpath(FOLDER)))


def recipe_names() -> list[str]:
    """The names of the packaged recipes, sorted."""
    return sorted(path.stem for path in recipe_dir().glob("*.yaml"))


def summary(name: str) -> str:
    """The first comment line of a recipe, without its `#`."""
    for line in recipe_path(name).read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return ""


def is_recipe_name(text: str) -> bool:
    """Whether `text` reads as a recipe's name rather than a path."""
    separators = {"/", os.sep, *([os.altsep] if os.altsep else [])}
    return (
        text not in {"", ".", ".."}
        and not any(sep in text for sep in separators)
        and not text.lower().endswith(SUFFIXES)
    )


def recipe_path(name: str) -> Path:
    """The file of the packaged recipe `name`; UnknownRecipe listing the known names if none."""
    path = recipe_dir() / f"{name}.yaml"
    if not is_recipe_name(name) or not path.is_file():
        known = ", ".join(recipe_names()) or "none (the package's recipes/ folder is empty)"
        raise UnknownRecipe(
            f"--config {name}: no such file and no packaged recipe of that name; "
            f"the recipes are: {known} (`dcrl recipes` lists them)"
        )
    return path


def resolve_config(config: str | Path | None) -> Path | None:
    """What a `--config` value names: an existing file or folder as it is (load_run_config
    judges it), else a packaged recipe for a bare name, else the path as given."""
    if config is None:
        return None
    path = Path(config)
    if path.exists() or not is_recipe_name(str(config)):
        return path
    return recipe_path(str(config))
