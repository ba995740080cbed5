"""The small protocol every framework adapter implements.

Modules outside ``frameworks/`` only talk to adapters through this class; a framework is imported by
its adapter alone, and an adapter is created only when its framework is already in ``sys.modules``
(or the user asked for it by name).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

__all__ = ["Adapter", "Switch"]


@dataclass
class Switch:
    """One determinism setting: how to read it, how to set it, and the value twinrun wants.

    ``get`` returns the current value (JSON-ready); ``set`` applies a value previously returned by
    ``get`` or ``want``. ``note`` says, in one sentence, why the setting matters.
    """

    name: str
    get: Callable[[], Any]
    set: Callable[[Any], None]
    want: Any
    note: str = ""
    # Called after set(); returns a warning string when the setting comes too late to act
    # (e.g. CUBLAS_WORKSPACE_CONFIG after CUDA initialised), else None.
    too_late: Callable[[], str | None] | None = None
    restorable: bool = True
    extra: dict = field(default_factory=dict)


class Adapter:
    """Base class. Subclasses set ``name`` and ``module`` and override what applies."""

    name: str = ""      # twinrun's name for the framework: "numpy", "torch", "tensorflow", "jax"
    module: str = ""    # the top-level module whose presence in sys.modules activates the adapter

    # --- seeding -------------------------------------------------------------------------------
    def seed(self, seed: int) -> dict:
        """Seed the framework's global RNGs; return ``{what: value}`` of what was seeded."""
        return {}

    # --- determinism ---------------------------------------------------------------------------
    def switches(self, *, strict: bool, threads: int | None) -> list[Switch]:
        """The determinism switches of this framework."""
        return []

    # --- environment ---------------------------------------------------------------------------
    def environment(self) -> dict:
        """JSON-ready facts that can change this framework's numerics (versions, builds, flags)."""
        return {}

    # --- tensors -------------------------------------------------------------------------------
    def is_tensor(self, x: Any) -> bool:
        return False

    def to_numpy(self, x: Any) -> np.ndarray:
        """A host NumPy view (no copy when possible) of a tensor, with its dtype's raw bytes.

        Dtypes NumPy lacks (bfloat16) come back as a same-width integer view; ``dtype_name`` gives
        the real name for digests and traces.
        """
        raise TypeError(f"{self.name} adapter cannot convert {type(x).__name__}")

    def dtype_name(self, x: Any) -> str:
        return str(self.to_numpy(x).dtype)

    # --- recording -----------------------------------------------------------------------------
    def install(self, recorder) -> Callable[[], None]:
        """Hook the framework so that ``recorder`` sees its events; return the uninstall callable."""
        return lambda: None
