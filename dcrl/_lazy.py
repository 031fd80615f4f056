"""Lazy package exports: a package's public names are imported on first use, so importing the
package (as the CLI does for every command) stays cheap."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module-level `__getattr__` that imports `exports[name]` (a module path) on first use."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    return __getattr__


def module_names(path: Iterable[str], skip: tuple[str, ...]) -> list[str]:
    """The names of the modules in a package's `path` (its `__path__`), sorted, without importing
    them: all but those in `skip` and the `_`-prefixed helpers."""
    return sorted(
        module.name
        for module in pkgutil.iter_modules(path)
        if module.name not in skip and not module.name.startswith("_")
    )


def import_subclass(
    spec: str, base: type, *, what: str, base_name: str, hint: str, error: type[Exception]
) -> type:
    """The class a user names as 'package.module:Class', checked to subclass `base`.

    Raises `error` with one message naming the spec: the module cannot be imported (anything it
    raises while importing), or the attribute is missing or not a subclass of `base_name`
    (followed by `hint`, the fix)."""
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or anything the module raises while importing
        raise error(
            f"cannot import module {module_name!r} of {what} {spec!r} ({exc}); check the "
            "spelling and that the module is on PYTHONPATH"
        ) from exc
    found = getattr(module, attribute, None)
    if not (isinstance(found, type) and issubclass(found, base)):
        raise error(
            f"{spec!r} is {'missing' if found is None else repr(found)}, not a subclass of "
            f"{base_name}; {hint}"
        )
    return found
