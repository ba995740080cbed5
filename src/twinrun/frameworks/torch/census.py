"""The census of PyTorch ops that part run to run on CPU: which ran, where in the user's code, in
which pass, how often, and what their deterministic alternative costs.

``install()`` starts recording in this process and returns a function that stops it and returns the
uses. Two sources, both active for the whole script:

- a ``TorchDispatchMode`` sees every aten op below autograd. The ops of :data:`KNOWN` (found by
  experiment on CPU, torch 2.13, 2 threads: ``benchmarks/bench_census.py``) are counted with the
  user's call site (the first frame outside torch, twinrun and the standard library) and the pass:
  ``backward`` when autograd's engine is running a node (``torch._C._current_autograd_node()``),
  ``optimizer`` when the call comes from ``torch.optim``, ``forward`` otherwise. An op run by the
  backward of a forward call (``x[idx]``'s backward is ``index_put_`` with accumulate) gets the site
  of that forward call: a ``TorchFunctionMode`` tags the autograd node of each such call with it
  (``node.metadata``), and the backward reads it back from the running node.
- ``torch.use_deterministic_algorithms(True, warn_only=True)``: the ops that PyTorch itself knows to
  have no deterministic implementation warn, and each warning is counted with its site. On CPU this
  names few ops (``max_unpool``); the dispatch census is what finds the CPU ones. Deterministic mode
  changes kernels, never which ops run, so the census of uses is the same as in a default run.

Measured, not assumed (FACTS.md, and ``benchmarks/bench_census.py`` at 100k x 16 values into 64
rows): ``index_put_`` with accumulate (also the backward of ``x[idx]``), ``put_`` with accumulate,
and ``index_put_``/``index_copy_`` writing duplicate indices differ run to run on 2 threads;
``index_add_``, ``scatter_add_``, ``scatter_reduce_`` (sum, mean), ``index_reduce_``, ``gather``'s,
``index_select``'s, ``embedding``'s and ``embedding_bag``'s backward, ``bincount``, ``histc`` repeat,
so they are not counted.
"""

from __future__ import annotations

import linecache
import os
import re
import sys
import sysconfig
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["KNOWN", "MEASURED_WITH", "OpFact", "install", "rewrite"]

MEASURED_WITH = "python benchmarks/bench_census.py --rounds 15 --repeats 10 --cells 64"


@dataclass(frozen=True)
class OpFact:
    """What is known of a nondeterministic op on CPU: why it parts, and what to use instead at what cost."""

    op: str               # "index_put_ (accumulate=True)"
    why: str              # why it parts run to run
    deterministic: float  # time under use_deterministic_algorithms(True) / default time, at ``size``
    size: str             # the size measured (many values onto few rows: the contended case)
    spread: str           # the same ratio where the values spread over many rows
    replacement: str = ""                  # an op-level replacement that repeats without the global mode
    replacement_ratio: str | None = None   # its time / the default's, at both sizes

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "why": self.why, "deterministic_ratio": self.deterministic, "size": self.size,
                "spread": self.spread, "replacement": self.replacement, "replacement_ratio": self.replacement_ratio,
                "measured_with": MEASURED_WITH}


# Ratios measured with MEASURED_WITH (and --cells 16384 for ``spread``) on the 2-core AVX-512 EPYC, torch
# 2.13.0+cpu, 2 threads, medians of 15 interleaved rounds, twice each on a busy machine (ranges). On CPU
# the default accumulation adds with atomic compare-and-swap loops, which is why deterministic mode (sort
# the indices, then add in order) is much faster where many values land on few rows.
_ADDS = "adds the values of repeated indices in the order the threads reach them"
KNOWN: dict[str, OpFact] = {
    "index_put_acc": OpFact(
        "index_put_ (accumulate=True)", _ADDS, 0.02, "100,000 x 16 values into 64 rows",
        "0.7-1.2x into 16,384 rows", "`out.index_add_(0, idx, src)` (or `scatter_add_`)", "3.2-3.8x"),
    "put_acc": OpFact(
        "put_ (accumulate=True)", _ADDS, 0.03, "1,600,000 values into 1,024 cells", "0.7x into 262,144 cells",
        "`out.view(-1).index_add_(0, idx, src)` (or `scatter_add_`)", "0.02-0.33x"),
    "index_put_dup": OpFact(
        "index_put_ (accumulate=False, duplicate indices)",
        "writes several values to one place: which write lands last depends on the threads",
        0.03, "100,000 x 16 values into 64 rows", "1.4x into 16,384 rows"),
    "index_copy_dup": OpFact(
        "index_copy_ (duplicate indices)",
        "copies several rows to one place: which copy lands last depends on the threads",
        0.03, "100,000 x 16 values into 64 rows", "1.0x into 16,384 rows"),
}
# The backward of these forward calls runs one of KNOWN's ops: their forward call site is the one to name.
BACKWARD_OF = {"IndexBackward0": "x[idx]", "TakeBackward0": "torch.take", "IndexPutBackward0": "index_put"}
# The backward of x[idx], measured on the lookup of examples/nondeterminism/nondeterministic_kernel.py.
# (index_select's backward, index_add_, also repeats but costs 1.9-3.9x.)
LOOKUP_BACKWARD = OpFact(
    "index_put_ (accumulate=True)", "adds the gradient rows of repeated indices in the order the threads reach "
    "them", 0.4, "114,688 indices into 1,088 rows of 16", "",
    "`torch.nn.functional.embedding(idx, x)` (a row lookup of a 2-D `x`)", "0.55-0.69x")

_PUT = {"aten.index_put_.default", "aten.index_put.default", "aten._index_put_impl_.default",
        "aten._unsafe_index_put.default"}
_TAKE = {"aten.put_.default", "aten.put.default"}
_COPY = {"aten.index_copy_.default", "aten.index_copy.default"}
_WATCHED = _PUT | _TAKE | _COPY
_TAG = "twinrun.census.site"

_LIBRARY = tuple(sorted({os.path.realpath(p) + os.sep for k, p in sysconfig.get_paths().items()
                         if k in ("stdlib", "platstdlib")}))
_SKIP = tuple(os.sep + p + os.sep for p in ("twinrun", "torch", "importlib", "runpy.py"))
_OPTIM = os.sep + "torch" + os.sep + "optim" + os.sep


def _site(frame: FrameType | None) -> tuple[str, bool]:
    """``file:line`` of the first frame outside torch, twinrun and the standard library, and whether
    the call came through ``torch.optim``."""
    optim = False
    while frame is not None:
        name = frame.f_code.co_filename
        optim = optim or _OPTIM in name
        if not (name.startswith("<") or any(s in name for s in _SKIP) or name.endswith("runpy.py")):
            real = os.path.realpath(name)
            if not real.startswith(_LIBRARY):
                try:
                    shown = os.path.relpath(real)
                except ValueError:
                    shown = real
                return f"{real if shown.startswith('..') else shown}:{frame.f_lineno}", optim
        frame = frame.f_back
    return "", optim


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], i: int, name: str, default: Any) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


def _duplicates(index: Any, values: Any) -> bool:
    """Whether a write puts different values at one place twice (one integer index tensor; a scalar
    or a single value written many times cannot differ)."""
    if not isinstance(values, torch.Tensor) or values.numel() <= 1:
        return False
    if isinstance(index, (list, tuple)):
        given = [t for t in index if t is not None]
        if len(given) != 1:
            return False    # several index tensors (or none): not told here
        index = given[0]
    if not isinstance(index, torch.Tensor) or index.dtype == torch.bool or index.numel() < 2:
        return False
    return bool(torch.unique(index).numel() < index.numel())


def _classify(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """The KNOWN key of a watched aten call, or None when this call cannot part run to run."""
    if name in _PUT:
        if _arg(args, kwargs, 3, "accumulate", False):
            return "index_put_acc"
        return "index_put_dup" if _duplicates(_arg(args, kwargs, 1, "indices", None),
                                              _arg(args, kwargs, 2, "values", None)) else None
    if name in _TAKE:
        return "put_acc" if _arg(args, kwargs, 3, "accumulate", False) else None
    if name in _COPY:
        return "index_copy_dup" if _duplicates(_arg(args, kwargs, 2, "index", None),
                                               _arg(args, kwargs, 3, "source", None)) else None
    return None


# The op-level replacement written for the user's own line: (pattern of the call, the replacement). Used
# only when every call at that site had the shapes the replacement needs (``_simple``) and the line holds
# exactly one such call.
_NAME = r"[A-Za-z_][\w.]*"
_REWRITES = {
    "index_put_acc": (re.compile(rf"(?P<obj>{_NAME})\.index_put_\(\s*\(\s*(?P<idx>[^,()]+?)\s*,?\s*\)\s*,\s*"
                                 r"(?P<src>.+?)\s*,\s*accumulate\s*=\s*True\s*\)"),
                      "{obj}.index_add_(0, {idx}, {src})"),
    "put_acc": (re.compile(rf"(?P<obj>{_NAME})\.put_\(\s*(?P<idx>[^,]+?)\s*,\s*(?P<src>.+?)\s*,\s*"
                           r"accumulate\s*=\s*True\s*\)"), "{obj}.index_add_(0, {idx}, {src})"),
    "x[idx]": (re.compile(rf"(?P<obj>{_NAME})\[(?P<idx>{_NAME})\]"), "torch.nn.functional.embedding({idx}, {obj})"),
}


def rewrite(kind: str, site: str) -> dict[str, Any] | None:
    """The replacement of the one call of ``kind`` on the line at ``site`` (``file:line``), or None."""
    path, _, line = site.rpartition(":")
    if kind not in _REWRITES or not line.isdigit():
        return None
    code = linecache.getline(os.path.realpath(path), int(line)).split("#", 1)[0]
    pattern, template = _REWRITES[kind]
    found = list(pattern.finditer(code))
    if len(found) != 1:
        return None
    return {"site": site, "before": found[0].group(0), "after": template.format(**found[0].groupdict())}


def _simple(key: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether this call has the shapes its op-level replacement needs (one 1-D index into dim 0)."""
    self = args[0] if args else None
    if not isinstance(self, torch.Tensor):
        return False
    if key == "index_put_acc":
        given = [t for t in (_arg(args, kwargs, 1, "indices", None) or []) if t is not None]
        values = _arg(args, kwargs, 2, "values", None)
        return (len(given) == 1 and given[0].dtype in (torch.long, torch.int) and given[0].dim() == 1
                and isinstance(values, torch.Tensor) and tuple(values.shape) == (given[0].shape[0], *self.shape[1:]))
    if key == "put_acc":
        idx, src = _arg(args, kwargs, 1, "index", None), _arg(args, kwargs, 2, "source", None)
        return (self.dim() == 1 and isinstance(idx, torch.Tensor) and idx.dim() == 1
                and isinstance(src, torch.Tensor) and src.shape == idx.shape)
    return False


class _Uses:
    """The counted uses: (key, phase, site, backward of) -> [count, first step, every call simple]."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, str, str], list[int]] = {}
        self.warned: dict[tuple[str, str, str], int] = {}   # PyTorch's own warnings: (op, pass, site)

    def add(self, key: str, phase: str, site: str, of: str, simple: bool) -> None:
        entry = self.counts.setdefault((key, phase, site, of), [0, _step(), 1])
        entry[0] += 1
        entry[2] &= int(simple)

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for (key, phase, site, of), (count, step, simple) in self.counts.items():
            fact = LOOKUP_BACKWARD if of == "x[idx]" else KNOWN[key]
            op = fact.op if phase != "backward" else f"{fact.op}, backward of {of or 'an autograd node'}"
            kind = of if phase == "backward" else key
            out.append({"key": key, "op": fact.op, "phase": phase, "backward_of": of or None, "site": site,
                        "count": count, "first_step": step, "label": op, "fact": fact.to_dict(),
                        "rewrite": rewrite(kind, site) if simple else None})
        for (op, phase, site), count in self.warned.items():
            out.append({"key": "warned", "op": op, "phase": phase, "backward_of": None, "site": site,
                        "count": count, "first_step": None, "label": op,
                        "fact": {"op": op, "why": "has no deterministic implementation in PyTorch",
                                 "deterministic_ratio": None, "size": "", "spread": "", "replacement": "",
                                 "replacement_ratio": None, "measured_with": ""}})
        return out


def _step() -> int:
    """The recorder's current step (0 when no recorder is open)."""
    from ... import _active

    rec = _active.recorder()
    return int(rec.step) if rec is not None else 0


class _Dispatch(TorchDispatchMode):
    def __init__(self, uses: _Uses) -> None:
        super().__init__()
        self.uses = uses

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        name = str(func)
        if name in _WATCHED:
            key = _classify(name, args, kwargs)
            if key is not None:
                node = torch._C._current_autograd_node()
                site, optim = _site(sys._getframe(1))
                if node is not None:
                    meta = getattr(node, "metadata", {})
                    site = str(meta.get(_TAG, "")) or site   # the forward call's site, else backward()'s
                    self.uses.add(key, "backward", site, BACKWARD_OF.get(type(node).__name__, node.name()),
                                  bool(meta.get(_TAG + ".simple")))
                else:
                    self.uses.add(key, "optimizer" if optim else "forward", site, "", _simple(key, args, kwargs))
        return func(*args, **kwargs)


class _Function(TorchFunctionMode):
    """Tags the autograd node of each forward call whose backward runs a watched op with its call site."""

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor):
            fn = out.grad_fn
            if fn is not None and type(fn).__name__ in BACKWARD_OF:
                meta: dict[str, Any] = fn.metadata   # type: ignore[assignment]  # a dict (stubs: a method)
                if _TAG not in meta:
                    meta[_TAG] = _site(sys._getframe(1))[0]
                    # x[idx] of a 2-D table by one integer tensor is a row lookup: embedding(idx, x)
                    index = args[1] if len(args) > 1 else None
                    meta[_TAG + ".simple"] = bool(
                        type(fn).__name__ == "IndexBackward0" and isinstance(args[0], torch.Tensor)
                        and args[0].dim() == 2 and isinstance(index, torch.Tensor)
                        and index.dtype in (torch.long, torch.int))
        return out


_WARNED = re.compile(r"^(\S+) does not have a deterministic implementation")


def install() -> Callable[[], list[dict[str, Any]]]:
    """Start the census here; the returned function stops it and returns the uses (plain dicts)."""
    uses = _Uses()
    was = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(True, warn_only=True)
    fill = torch.utils.deterministic.fill_uninitialized_memory   # type: ignore[attr-defined]
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]  # the script's own
    show = warnings.showwarning

    def showwarning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                    file: Any = None, line: str | None = None) -> None:
        m = _WARNED.match(str(message))
        if m:
            site, optim = _site(sys._getframe(1))
            phase = "backward" if torch._C._current_autograd_node() is not None else (
                "optimizer" if optim else "forward")
            key = (m.group(1), phase, site)
            uses.warned[key] = uses.warned.get(key, 0) + 1
            return
        show(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning
    warnings.filterwarnings("always", message=r".* does not have a deterministic implementation")
    function, dispatch = _Function(), _Dispatch(uses)
    function.__enter__()
    dispatch.__enter__()

    def finish() -> list[dict[str, Any]]:
        dispatch.__exit__(None, None, None)
        function.__exit__(None, None, None)
        warnings.showwarning = show
        torch.use_deterministic_algorithms(was[0], warn_only=was[1])
        torch.utils.deterministic.fill_uninitialized_memory = fill  # type: ignore[attr-defined]
        return uses.rows()

    return finish
