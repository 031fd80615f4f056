"""Algorithms by name. Every one is GRPO (dcrl.algorithms.base: the algorithm, its settings and
the stage order of its targets) plus at most one fixed target, configured by one flat config (a
preset, dcrl.algorithms.base.Preset), or GRPO plus the list of targets its config names
(`composed`). Each name is a file, found by its name (`ALGORITHMS`, built on first use): a module
of this package other than `base` (and `_`-prefixed helpers), or a method module of
dcrl.targets (`dcrl.targets.TARGETS`) that defines a preset (`ALGORITHM`). Adding one is adding
its file; there is no list to edit. Where each name's config and `ALGORITHM` live:

    grpo, clip_higher              here, dcrl/algorithms/: GRPO's settings only (clip_higher:
                                   clip_high 0.28)
    clip_cov, kl_cov               here, dcrl/algorithms/: their policy loss (dcrl.core.losses)
    aepo, dcpo, icr                dcrl/targets/<name>.py, the whole method in one file: its
    lp_f, kimi, shorter_better     settings, its target, and the preset at the bottom
    entropy_adv, entropy_reg       (best_of_n is a target without a preset: no algorithm name)
    composed                       here, dcrl/algorithms/composed.py

>>> sorted(ALGORITHMS)[:3]
['aepo', 'clip_cov', 'clip_higher']
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from dcrl import targets
from dcrl._lazy import module_names
from dcrl.algorithms.base import Algorithm, AlgorithmConfig, own_name
from dcrl.step_data import StepContext, TrainBatch

# The modules of this package that are the contract, not an algorithm (names starting with "_"
# are helpers, never algorithms).
CONTRACT = ("base",)

# Built on first use (module `__getattr__` below); for type checkers:
ALGORITHMS: dict[str, str]


@functools.cache
def find_algorithms() -> dict[str, str]:
    """`ALGORITHMS`: name -> module holding its config and `ALGORITHM`, in name order. The
    modules of this package (other than the contract's and `_`-prefixed ones) by their file
    names, without importing them; and each method module of dcrl.targets that defines
    `ALGORITHM`, which takes importing the target modules (once, on the first use of this
    table). Cached; after changing a package's `__path__`, `find_algorithms.cache_clear()` (and
    `dcrl.targets.find_targets.cache_clear()` first).

    Raises:
        ValueError: naming the file, when a method module's preset is not an Algorithm named by
            the file's name, or a preset's name is also a module here.
    """
    found = {name: f"{__name__}.{name}" for name in module_names(__path__, CONTRACT)}
    for name, path in targets.find_targets().items():
        module = importlib.import_module(path)
        if getattr(module, "ALGORITHM", None) is None:
            continue  # a target without a preset (best_of_n)
        if name in found:
            raise ValueError(
                f"{_where(module)} defines a preset (ALGORITHM) named {name!r} by its file, and "
                f"{found[name]} is an algorithm of that name too; rename one of the files"
            )
        registered_algorithm(name, module)
        found[name] = path
    return dict(sorted(found.items()))


def __getattr__(name: str) -> Any:
    if name == "ALGORITHMS":
        return find_algorithms()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _where(module: Any) -> str:
    return getattr(module, "__file__", None) or module.__name__


def registered_algorithm(name: str, module: Any) -> type[Algorithm]:
    """The `ALGORITHM` of the registered module `module` (found under `name`), checked to be an
    Algorithm whose name and config's name are `name`.

    Raises:
        ValueError: naming the file, when it defines no `ALGORITHM`, one that is not an
            Algorithm subclass, or one named otherwise than the file.
    """
    where = _where(module)
    found = getattr(module, "ALGORITHM", None)
    if found is None:
        raise ValueError(
            f"{where} is algorithm {name!r} (a module of dcrl.algorithms is an algorithm, found "
            f"by its file name) but defines no ALGORITHM; add `ALGORITHM = <its Algorithm "
            f"subclass>` at its bottom, or start the file's name with '_' if it is not one"
        )
    if not (isinstance(found, type) and issubclass(found, Algorithm)):
        raise ValueError(
            f"{where}: ALGORITHM is {found!r}, not a subclass of dcrl.algorithms.Algorithm; set "
            f"it to the module's algorithm class"
        )
    config_name = own_name(found.config_class)
    if found.name != name or config_name != name:
        raise ValueError(
            f"{where}: its ALGORITHM {found.__name__} is named {found.name!r} (its config "
            f"{found.config_class.__name__}, {config_name!r}), but the file makes it algorithm "
            f"{name!r}; name both {name!r} or rename the file"
        )
    return found


def get_algorithm_class(name: str) -> type[Algorithm]:
    """The Algorithm subclass registered under `name`.

    Raises:
        ValueError: an unknown name, or a registered module without a well-named `ALGORITHM`.
    """
    registry = find_algorithms()
    if name not in registry:
        raise ValueError(f"unknown algorithm {name!r}; choose one of {', '.join(sorted(registry))}")
    return registered_algorithm(name, importlib.import_module(registry[name]))


def make_algorithm(config: AlgorithmConfig) -> Algorithm:
    """Instantiate the algorithm that `config` configures.

    Raises:
        ValueError: `config.name` is not the name its class configures (`DCPOConfig(name=
            "grpo")`), or the config is not of the class the named algorithm reads
            (`AlgorithmConfig(name="dcpo")`): either would build another method than asked.
    """
    algorithm_class = get_algorithm_class(config.name)
    expected = algorithm_class.config_class
    if not isinstance(config, expected) or own_name(type(config)) != config.name:
        given = type(config).__name__
        raise ValueError(
            f"{given}(name={config.name!r}) cannot build algorithm {config.name!r}: that "
            f"algorithm reads a {expected.__name__}, and a {given} configures "
            f"{own_name(type(config))!r}; build the config of the algorithm you mean "
            "(dcrl.algorithms.get_algorithm_class(name).config_class()) and leave its name as it is"
        )
    return algorithm_class(config)


__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "AlgorithmConfig",
    "StepContext",
    "TrainBatch",
    "find_algorithms",
    "get_algorithm_class",
    "make_algorithm",
    "registered_algorithm",
]
