"""Finding consumers: a module of this package by its short name, or any dotted import path."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from types import ModuleType

import consumers
from consumers.consumer import Consumer, check_unique
from consumers.errors import LoadError

# Modules of the runtime itself, never consumers.
_RUNTIME = frozenset(
    {
        "consumer",
        "dead",
        "errors",
        "event",
        "loader",
        "metrics",
        "patterns",
        "settings",
        "topology",
        "worker",
    }
)


def _import(name: str) -> ModuleType:
    candidates = [name] if "." in name else [f"consumers.{name.replace('-', '_')}", name]
    for candidate in candidates:
        try:
            if importlib.util.find_spec(candidate) is None:
                continue
        except ModuleNotFoundError:
            continue
        return importlib.import_module(candidate)
    raise LoadError(f"no module named {name!r} (looked for {' and '.join(candidates)})")


def consumers_in(module: ModuleType) -> list[Consumer]:
    """Every `Consumer` defined at module level, in definition order."""
    return [value for value in vars(module).values() if isinstance(value, Consumer)]


def load(names: list[str]) -> list[tuple[str, Consumer]]:
    """Import each named module and collect its consumers; fail clearly if one is unusable."""
    found: list[tuple[str, Consumer]] = []
    for name in names:
        module = _import(name)
        defined = consumers_in(module)
        if not defined:
            raise LoadError(f"module {module.__name__!r} defines no Consumer at module level")
        found.extend((module.__name__, consumer) for consumer in defined)
    check_unique([consumer for _, consumer in found])
    return found


def bundled() -> list[str]:
    """The example consumer modules that ship in this package."""
    return sorted(
        info.name
        for info in pkgutil.iter_modules(consumers.__path__)
        if info.name not in _RUNTIME and not info.name.startswith("_")
    )
