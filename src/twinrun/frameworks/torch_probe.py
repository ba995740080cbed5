"""PyTorch side of ``twinrun.probe``: calls under ``no_grad``, forward hooks that keep every
submodule's output during the probe, and a thread count set for one call and restored."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..probe import LayerOutputs, Leaf, _Runner, call

__all__ = ["TorchRunner", "tensor_leaf"]


def tensor_leaf(t: torch.Tensor) -> Leaf | None:
    """A tensor's bits as a Leaf (bfloat16 and float16 through their 16-bit patterns)."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    if t.is_floating_point():
        width = {2: torch.int16, 4: torch.int32, 8: torch.int64}.get(t.element_size())
        if width is None:
            return None
        bits = t.view(width).numpy()
        return Leaf(bits.view(f"u{t.element_size()}").copy(), "float")
    if t.dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool):
        return Leaf(t.numpy().astype(np.int64), "int")
    return None


def _tensor_leaves(out: Any, rows: int | None) -> list[Leaf]:
    found: list[Leaf] = []

    def walk(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            if x.dim() > 0 and (rows is None or x.shape[0] == rows):
                leaf = tensor_leaf(x)
                if leaf is not None:
                    found.append(leaf)
        elif isinstance(x, dict):  # includes transformers' ModelOutput
            for k in sorted(x, key=str):
                walk(x[k])
        elif isinstance(x, (tuple, list)):
            for v in x:
                walk(v)
        elif hasattr(x, "shape") and hasattr(x, "__array__"):
            arr = np.asarray(x)
            if arr.ndim and (rows is None or arr.shape[0] == rows):
                from ..probe import as_leaf
                leaf = as_leaf(arr)
                if leaf is not None:
                    found.append(leaf)
    walk(out)
    return found


class TorchRunner(_Runner):
    framework = "torch"

    def __init__(self, fn: Callable[..., Any]) -> None:
        super().__init__(fn)
        self.module = fn if isinstance(fn, torch.nn.Module) else None
        if self.module is None:
            self.layers_note = "pass the torch.nn.Module itself (not a function) to have the first layer named"
        elif not any(True for _ in self.module.children()):
            self.layers_note = "the model has no submodules to name"
        else:
            self.layers_note = None

    def run(self, batch: Any, rows: int) -> tuple[list[Leaf], LayerOutputs]:
        layers: LayerOutputs = []
        handles = []
        if self.module is not None:
            calls: Counter[str] = Counter()

            def hook(name: str) -> Callable[..., None]:
                def keep(_mod: torch.nn.Module, _inp: Any, out: Any) -> None:
                    calls[name] += 1
                    key = name if calls[name] == 1 else f"{name}#{calls[name]}"
                    # copied now: a later in-place op (ReLU(inplace=True)) would change it
                    layers.append((key, _tensor_leaves(out, None)))
                return keep

            handles = [m.register_forward_hook(hook(n)) for n, m in self.module.named_modules() if n]
        try:
            with torch.no_grad():
                out = call(self.fn, batch)
        finally:
            for h in handles:
                h.remove()
        return _tensor_leaves(out, rows), layers

    def threads(self) -> int | None:
        return torch.get_num_threads()

    def with_threads(self, n: int, batch: Any, rows: int) -> tuple[list[Leaf], LayerOutputs] | None:
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            return self.run(batch, rows)
        finally:
            torch.set_num_threads(before)
