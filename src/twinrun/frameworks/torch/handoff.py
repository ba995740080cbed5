"""How the PyTorch hooks hand a tensor to the recorder cheaply: a NumPy view of a CPU tensor whose dtype
NumPy has (no copy, none of the adapter's generic checks), and the process id without a system call.

Both run once or twice per recorded module call, where a step of an RNN has hundreds of calls.
"""

from __future__ import annotations

import os
from typing import Any

import torch

__all__ = ["numpy_view", "pid"]

# A cache: os.getpid() is a system call (about 1 us in a VM) and every hook asks whether it runs in the
# process that installed it; refreshed in a forked child (a DataLoader worker).
_PID = os.getpid()


def _refresh_pid() -> None:
    global _PID
    _PID = os.getpid()


os.register_at_fork(after_in_child=_refresh_pid)


def pid() -> int:
    """``os.getpid()``, cached."""
    return _PID


# The dtypes NumPy has; any other (bf16, complex, float8) goes through the adapter.
_NUMPY_DTYPES = frozenset({torch.float32, torch.float64, torch.float16, torch.int64, torch.int32, torch.int16,
                           torch.int8, torch.uint8, torch.bool})


def numpy_view(t: torch.Tensor) -> Any:
    """``t`` as a NumPy view of the same memory where that is free, else ``t`` itself (the recorder
    converts it through the adapter: another dtype or device, a subclass NumPy cannot view)."""
    if t.dtype in _NUMPY_DTYPES and not t.is_cuda:
        try:
            # force: detached (no autograd), conjugate or negative bits resolved (copied), as the
            # adapter does; a plain CPU tensor is a view. 0.2 us cheaper than detach().numpy().
            return t.numpy(force=True)
        except (RuntimeError, TypeError):
            return t
    return t
