"""Finding consumers: a module of this package by its short name, or any dotted import path."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
from types import ModuleType

import consumers
from consumers.consumer import Consumer, check_unique
from consumers.errors import LoadError

# Modules of the runtime itself, never consumers; sub-packages are never consumers either.
_RUNTIME = frozenset(
    {
        "consumer",
        "dedupe",
        "errors",
        "event",
        "gathering",
        "loader",
        "patterns",
        "settings",
        "topology",
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
    """Every `Consumer` made by `module` and held at its top level, in definition order.

    One it imported from another module is that module's, and is not run again here.
    """
    found = [
        value
        for value in vars(module).values()
        if isinstance(value, Consumer) and _belongs_to(value, module)
    ]
    return list({id(consumer): consumer for consumer in found}.values())


def _belongs_to(consumer: Consumer, module: ModuleType) -> bool:
    if consumer.module in (module.__name__, None):
        return True
    # Made elsewhere: it is that module's own only if that module holds it too (an import);
    # one made by a helper function there belongs to the module that keeps it.
    home = sys.modules.get(consumer.module)
    return home is None or all(value is not consumer for value in vars(home).values())


def load(names: list[str]) -> list[tuple[str, Consumer]]:
    """Import each named module and collect its consumers; fail clearly if one is unusable."""
    found: list[tuple[str, Consumer]] = []
    for name in names:
        module = _import(name)
        defined = consumers_in(module)
        if not defined:
            raise LoadError(f"module {module.__name__!r} defines no Consumer at module level")
        found.extend(
            (module.__name__, consumer)
            for consumer in defined
            if all(consumer is not other for _, other in found)
        )
    check_unique([consumer for _, consumer in found])
    return found


def bundled() -> list[str]:
    """The example consumer modules that ship in this package."""
    return sorted(
        info.name
        for info in pkgutil.iter_modules(consumers.__path__)
        if not info.ispkg and info.name not in _RUNTIME and not info.name.startswith("_")
    )
