"""Old spellings kept for one release, each with a ``DeprecationWarning`` naming the new one."""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .comparison import Comparison
    from .trace import Trace

__all__ = ["compare"]


def compare(a: Trace | str | os.PathLike[str], b: Trace | str | os.PathLike[str]) -> Comparison:
    """Deprecated: ``twinrun.diff(a, b)`` (the command line's ``twinrun diff``); ``twinrun compare``
    compares sweeps (``twinrun.compare_sweeps``). Removed in twinrun 0.3."""
    from .comparison import diff

    warnings.warn("twinrun.compare(a, b) is renamed twinrun.diff(a, b), as the command `twinrun diff` "
                  "(`twinrun compare` compares sweeps: twinrun.compare_sweeps); twinrun.compare goes in 0.3",
                  DeprecationWarning, stacklevel=2)
    return diff(a, b)
