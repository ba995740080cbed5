"""A public namespace whose classes are built on first use (``twinrun.lightning.Callback``).

Building the class imports its trainer; doing it on first attribute access keeps ``import twinrun.X``
free of that import, so no trainer is a dependency of twinrun.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def lazy_classes(module: str, builders: dict[str, Callable[[], type]]) -> tuple[Callable[[str], Any],
                                                                               Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``module``: each name built once by its builder."""
    built: dict[str, type] = {}

    def __getattr__(name: str) -> Any:
        builder = builders.get(name)
        if builder is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        if name not in built:
            built[name] = builder()
        return built[name]

    def __dir__() -> list[str]:
        return sorted(builders)

    return __getattr__, __dir__
