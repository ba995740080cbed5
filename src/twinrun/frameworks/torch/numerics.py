"""PyTorch tensors in and out of ``twinrun.numerics``: imported only when a tensor is passed.

Tensors are read on the CPU without autograd history; bfloat16 has no NumPy dtype, so its values are
widened to float32 (exact: a bfloat16 is the top half of a float32) and the result is narrowed back
from a float32 that already holds a bfloat16 value exactly.
"""

from __future__ import annotations

import numpy as np
import torch

from ..._errors import UsageError

__all__ = ["from_numpy", "to_numpy"]

_NAMES = {
    torch.float64: "float64",
    torch.float32: "float32",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.int64: "int64",
    torch.int32: "int32",
    torch.int16: "int16",
    torch.int8: "int8",
    torch.uint8: "uint8",
    torch.bool: "bool",
}
_DTYPES = {name: dtype for dtype, name in _NAMES.items()}


def to_numpy(t: torch.Tensor) -> tuple[np.ndarray, str]:
    """The tensor's values as a NumPy array (no copy when it is already on the CPU), and its dtype name."""
    name = _NAMES.get(t.dtype)
    if name is None:
        raise UsageError(f"tensors of dtype {t.dtype} are not supported; use float64, float32, float16, "
                         "bfloat16, integer or bool tensors")
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.dtype == torch.bfloat16:
        # The bits of a bfloat16 followed by 16 zero bits are the same value as a float32.
        bits = t.contiguous().view(torch.int16).numpy().astype(np.int32) << 16
        return bits.view(np.float32), name
    if t.is_conj() or t.is_neg():
        t = t.resolve_conj().resolve_neg()
    return t.numpy(), name


def from_numpy(a: np.ndarray, name: str, like: torch.Tensor) -> torch.Tensor:
    """A tensor of dtype ``name`` on ``like``'s device. Values are exact in that dtype already, so
    the conversion (float32 -> bfloat16 included) rounds nothing."""
    out = torch.from_numpy(np.array(a, order="C", copy=True)).to(_DTYPES[name])
    return out.to(like.device) if like.device.type != "cpu" else out
