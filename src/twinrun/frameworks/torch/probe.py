"""PyTorch side of twinrun's probes: model calls under ``no_grad`` that keep every submodule's
output, a thread count for one call, and the probe-recording mode of ``twinrun probe SCRIPT``.

**Probe recording** (``ProbeRecorder``, installed through ``TorchAdapter.install_probe``): global
module hooks see every forward call; a *root* call (no other module's forward running in this
thread) of a module with parameters, made with gradients disabled (``torch.no_grad()``,
``inference_mode``), is recorded: its inputs and outputs as bits, its submodules' outputs (forward
hooks on that module's submodules for that call only) and a digest of its parameters and buffers.
The recorder hands each such call to a sink, which may call the model again through
``ProbeCall.run`` (those calls are not recorded, and the RNG state is restored once the sink is done,
so that the script draws what it would have drawn). Calls with
gradients are the training recorder's (``tracing.py``) and are left alone here.

Nothing here knows twinrun's probe checks; they live in ``twinrun.probes`` and see only bits
(NumPy arrays), so that they also serve Keras and JAX.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import xxhash
from torch.nn.modules import module as _nn_module

from ..base import Bits, LayerBits, ProbeSink

__all__ = ["ProbeRecorder", "RecordedCall", "batch_rows", "output_bits", "run_call", "slice_call", "tensor_bits",
           "with_threads"]

_INTS = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool)


def tensor_bits(t: torch.Tensor) -> Bits | None:
    """A tensor's bits: floats as unsigned integers of their width (kind "float"; bfloat16's 16-bit
    patterns as kind "bfloat16"), integers and bools as int64 ("int"); None for other dtypes."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    if t.is_floating_point():
        width = {2: torch.int16, 4: torch.int32, 8: torch.int64}.get(t.element_size())
        if width is None:
            return None
        bits = t.view(width).numpy()
        return bits.view(f"u{t.element_size()}").copy(), "bfloat16" if t.dtype == torch.bfloat16 else "float"
    if t.dtype in _INTS:
        return t.numpy().astype(np.int64), "int"
    return None


def _array_bits(arr: np.ndarray) -> Bits | None:
    if arr.dtype.kind == "f":
        return np.ascontiguousarray(arr).view(f"u{arr.dtype.itemsize}").copy(), "float"
    if arr.dtype.kind in "iub":
        return arr.astype(np.int64), "int"
    return None


def output_bits(out: Any, rows: int | None) -> list[Bits]:
    """The bits of every tensor (or array) in ``out`` whose first dimension is ``rows`` (any first
    dimension when None), in a fixed order: tuples and lists in order, dicts (transformers'
    ``ModelOutput`` included) by sorted key."""
    found: list[Bits] = []

    def walk(x: Any, depth: int) -> None:
        if isinstance(x, torch.Tensor):
            if x.dim() > 0 and (rows is None or x.shape[0] == rows):
                b = tensor_bits(x)
                if b is not None:
                    found.append(b)
        elif depth > 6:
            return
        elif isinstance(x, dict):
            for k in sorted(x, key=str):
                walk(x[k], depth + 1)
        elif isinstance(x, (tuple, list)):
            for v in x:
                walk(v, depth + 1)
        elif hasattr(x, "shape") and hasattr(x, "__array__"):
            arr = np.asarray(x)
            if arr.ndim and (rows is None or arr.shape[0] == rows):
                b = _array_bits(arr)
                if b is not None:
                    found.append(b)

    walk(out, 0)
    return found


def _tensors(x: Any, depth: int = 0) -> Iterator[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        yield x
    elif depth < 6 and isinstance(x, dict):
        for v in x.values():
            yield from _tensors(v, depth + 1)
    elif depth < 6 and isinstance(x, (tuple, list)):
        for v in x:
            yield from _tensors(v, depth + 1)


def batch_rows(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    """The batch size of a call: the first dimension of its first tensor argument (None: none)."""
    for t in _tensors((args, kwargs)):
        return int(t.shape[0]) if t.dim() > 0 else None
    return None


def slice_call(args: tuple[Any, ...], kwargs: dict[str, Any], rows: int, start: int,
               stop: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The call's arguments cut to rows ``[start, stop)``: every tensor whose first dimension is the
    batch is sliced (inside tuples, lists and dicts too); everything else passes unchanged."""

    def cut(x: Any, depth: int) -> Any:
        if isinstance(x, torch.Tensor):
            return x[start:stop] if x.dim() > 0 and x.shape[0] == rows else x
        if depth < 6 and isinstance(x, dict) and type(x) is dict:
            return {k: cut(v, depth + 1) for k, v in x.items()}
        if depth < 6 and isinstance(x, (tuple, list)) and type(x) in (tuple, list):
            return type(x)(cut(v, depth + 1) for v in x)
        return x

    return tuple(cut(a, 1) for a in args), {k: cut(v, 1) for k, v in kwargs.items()}


class _LayerHooks:
    """Forward hooks on every named submodule of ``module`` that keep its output bits, in the order
    outputs are produced (a module called again gets ``#k``). Copied at once: a later in-place op
    (``ReLU(inplace=True)``) would change them."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.layers: LayerBits = []
        self._calls: Counter[str] = Counter()
        self._handles = [m.register_forward_hook(self._hook(n)) for n, m in module.named_modules() if n]

    def _hook(self, name: str) -> Callable[..., None]:
        def keep(_mod: torch.nn.Module, _inp: Any, out: Any) -> None:
            self._calls[name] += 1
            key = name if self._calls[name] == 1 else f"{name}#{self._calls[name]}"
            self.layers.append((key, output_bits(out, None)))
        return keep

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def run_call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], rows: int, *,
             keep_layers: bool) -> tuple[list[Bits], LayerBits]:
    """``fn(*args, **kwargs)`` under ``no_grad``: the output bits of the batch's rows and, for a module
    with ``keep_layers``, its submodules' outputs."""
    hooks = _LayerHooks(fn) if keep_layers and isinstance(fn, torch.nn.Module) else None
    try:
        with torch.no_grad():
            out = fn(*args, **kwargs)
    finally:
        if hooks is not None:
            hooks.remove()
    return output_bits(out, rows), hooks.layers if hooks is not None else []


def rng_kept() -> contextlib.AbstractContextManager[Any]:
    """The global CPU RNG state restored at the end of the block: a probe's calls (a model left in
    training mode draws dropout masks) do not change what the program draws next."""
    return torch.random.fork_rng(devices=[])


def num_threads() -> int:
    return torch.get_num_threads()


@contextmanager
def with_threads(n: int) -> Iterator[None]:
    """PyTorch's intra-op thread count set to ``n`` for the block, then restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def is_module(fn: Any) -> bool:
    return isinstance(fn, torch.nn.Module)


def has_submodules(fn: Any) -> bool:
    return isinstance(fn, torch.nn.Module) and any(True for _ in fn.children())


def trains_differently(fn: Any) -> bool:
    """Whether ``fn`` is a module in training mode with submodules that compute otherwise in training
    (dropout draws, batch norm uses the batch's statistics and updates its running ones)."""
    if not isinstance(fn, torch.nn.Module) or not fn.training:
        return False
    kinds = (torch.nn.modules.dropout._DropoutNd, torch.nn.modules.batchnorm._BatchNorm)
    return any(isinstance(m, kinds) and m.training for m in fn.modules())


def state_digest(module: torch.nn.Module) -> str:
    """xxh3-128 of every parameter's and buffer's name, dtype, shape and bytes."""
    h = xxhash.xxh3_128()
    for name, t in [*module.named_parameters(), *module.named_buffers()]:
        b = tensor_bits(t)
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        if b is not None:
            h.update(np.ascontiguousarray(b[0]).tobytes())
    return h.hexdigest()


# --- probe recording ----------------------------------------------------------------------------

@dataclass
class RecordedCall:
    """One recorded no-grad root call (the ``ProbeCall`` protocol of ``frameworks.base``)."""

    index: int
    label: str
    rows: int
    threads: int | None
    training: bool
    state: str
    outputs: list[Bits]
    layers: LayerBits
    inputs: list[Bits]
    module: torch.nn.Module = field(repr=False)
    args: tuple[Any, ...] = field(repr=False)
    kwargs: dict[str, Any] = field(repr=False)
    recorder: ProbeRecorder | None = field(default=None, repr=False)

    def run(self, start: int, stop: int) -> tuple[list[Bits], LayerBits]:
        args, kwargs = slice_call(self.args, self.kwargs, self.rows, start, stop)
        if self.recorder is None:
            return run_call(self.module, args, kwargs, stop - start, keep_layers=True)
        with self.recorder.paused():
            return run_call(self.module, args, kwargs, stop - start, keep_layers=True)


class ProbeRecorder:
    """Global module hooks that hand each no-grad root call of a model to ``sink.record`` (see the
    module doc), at most ``max_calls`` of them; ``sink.skip`` hears of the others (beyond the limit,
    or with no batch dimension to probe). Only the thread and process that installed it record.
    ``threads`` sets PyTorch's thread count at installation (the probe's fresh process for the
    ``threads`` check)."""

    def __init__(self, sink: ProbeSink, *, max_calls: int, threads: int | None = None) -> None:
        self.sink = sink
        self.max_calls = max_calls
        self.threads = threads
        self.recorded = 0
        self._pid = os.getpid()
        self._thread = threading.get_ident()
        self._busy = 0
        # one frame per running module forward: (module, layer hooks of a recorded root call or None)
        self._stack: list[tuple[torch.nn.Module, _LayerHooks | None]] = []
        self._handles: list[Any] = []

    def install(self) -> Callable[[], None]:
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        self._handles = [
            _nn_module.register_module_forward_pre_hook(self._pre),
            _nn_module.register_module_forward_hook(self._post, with_kwargs=True, always_call=True),
        ]
        return self.uninstall

    def uninstall(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        for _, hooks in self._stack:
            if hooks is not None:
                hooks.remove()
        self._stack.clear()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Calls made inside (the probe's own reruns) are not recorded."""
        self._busy += 1
        try:
            yield
        finally:
            self._busy -= 1

    def _here(self) -> bool:
        return not self._busy and threading.get_ident() == self._thread and os.getpid() == self._pid

    def _pre(self, module: torch.nn.Module, args: Any) -> None:
        if not self._here():
            return
        hooks = None
        if not self._stack and not torch.is_grad_enabled() and next(iter(module.parameters()), None) is not None:
            if self.recorded < self.max_calls:
                hooks = _LayerHooks(module)
            else:
                self.sink.skip(f"{type(module).__name__}: beyond the first {self.max_calls} calls")
        self._stack.append((module, hooks))

    def _post(self, module: torch.nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        if not self._here() or not self._stack:
            return
        # an exception inside a forward may leave frames of inner modules behind: drop them
        while self._stack and self._stack[-1][0] is not module:
            _, inner = self._stack.pop()
            if inner is not None:
                inner.remove()
        if not self._stack:
            return
        _, hooks = self._stack.pop()
        if hooks is None:
            return
        hooks.remove()
        if output is None:
            return
        args, kwargs = tuple(args), dict(kwargs or {})
        rows = batch_rows(args, kwargs)
        if rows is None or rows == 0:
            self.sink.skip(f"{type(module).__name__}: no input tensor with a batch dimension")
            return
        outputs = output_bits(output, rows)
        if not outputs:
            self.sink.skip(f"{type(module).__name__}: no output tensor whose first dimension is the batch")
            return
        call = RecordedCall(
            index=self.recorded, label=type(module).__name__, rows=rows, threads=torch.get_num_threads(),
            training=trains_differently(module),
            state=state_digest(module), outputs=outputs, layers=hooks.layers,
            inputs=[b for t in _tensors((args, kwargs)) if (b := tensor_bits(t)) is not None],
            module=module, args=args, kwargs=kwargs, recorder=self)
        self.recorded += 1
        with self.paused(), rng_kept():
            self.sink.record(call)
