"""Recording PyTorch training with PyTorch's global hooks: no change to the user's code.

What is recorded, per step (a step ends at ``optimizer.step()``), in program order:

- ``init``: every parameter of a root model, at its first recorded forward in step 0;
- ``input``: the tensors passed to a root model (positional and keyword), digest per sample;
- ``forward``: every module's output, named by its path in the root model (``features.0``); a
  module called again in the same step gets a call index (``relu#1``, ``relu#2``);
- ``loss``: the tensor ``backward()`` is called on (``loss``, ``loss#1`` with accumulation);
- ``grad``: each parameter's ``.grad`` at the optimizer's step pre-hook, named by parameter path,
  in the order backward() finished them (last layer first), so the first differing gradient in
  the trace is the first one computed;
- ``param``: each parameter after the step; then the step ends (``recorder.end_step()``).

A *root* is a module called while no other module's forward runs. Its own output is named by its
class (``SmallCNN``); with several root models, the first keeps bare paths and the others are
prefixed by their label (``Discriminator.fc``). Parameter-free roots (loss modules) are recorded by
label only, without ``init``/``input``.

Evaluation passes are not recorded: a root call made with grad disabled (``torch.no_grad()``,
``inference_mode``) or with the root in ``eval()`` mode records nothing, and nothing inside it;
neither do forwards re-run during ``backward()`` (activation checkpointing). Only the thread and
process that installed the hooks record (DataLoader workers are not traced).
"""

from __future__ import annotations

import os
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch.nn.modules import module as _nn_module
from torch.optim import optimizer as _optim

__all__ = ["TorchTracer", "install", "unwatch", "watch"]

# A registry, documented: the models and optimizers the user limited recording to
# (twinrun.torch.watch); empty = everything.
_WATCHED_MODELS: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()
_WATCHED_OPTIMIZERS: weakref.WeakSet[torch.optim.Optimizer] = weakref.WeakSet()


def watch(*objects: Any) -> None:
    """Limit recording to these models and optimizers (any mix, any number of calls).

    Without ``watch`` every ``nn.Module`` called at the top level is a root model and every
    ``torch.optim`` optimizer ends a step. After ``watch(model, optimizer)``, only ``model`` (and
    modules it calls) is recorded, only ``optimizer.step()`` ends a step, and only the parameters of
    watched models appear in ``grad``/``param`` events.

    >>> with twinrun.record("run.trace"):          # doctest: +SKIP
    ...     twinrun.torch.watch(model, optimizer)
    ...     train(model, optimizer, teacher)        # the teacher's forwards are not recorded
    """
    from ..._errors import UsageError

    for obj in objects:
        if isinstance(obj, torch.nn.Module):
            _WATCHED_MODELS.add(obj)
        elif isinstance(obj, torch.optim.Optimizer):
            _WATCHED_OPTIMIZERS.add(obj)
        else:
            raise UsageError(
                f"twinrun.torch.watch() takes nn.Module and torch.optim.Optimizer objects, not "
                f"{type(obj).__name__}; pass the model and its optimizer")


def unwatch() -> None:
    """Forget every ``watch()``: record all models and optimizers again."""
    _WATCHED_MODELS.clear()
    _WATCHED_OPTIMIZERS.clear()


class _Root:
    """A root module: its label, its modules' paths and its parameters' names."""

    __slots__ = ("has_params", "initialised", "label", "modules", "prefix", "ref")

    def __init__(self, module: torch.nn.Module, label: str, prefix: str):
        self.ref = weakref.ref(module)
        self.label = label
        self.prefix = prefix
        self.has_params = next(iter(module.parameters()), None) is not None
        self.initialised = False
        self.modules: dict[int, str] = {}
        self.refresh()

    def refresh(self) -> None:
        module = self.ref()
        if module is not None:
            self.modules = {id(m): path for path, m in module.named_modules()}

    def name_of(self, module: torch.nn.Module) -> str:
        path = self.modules.get(id(module))
        if path is None:
            self.refresh()  # a module added after the first call
            path = self.modules.get(id(module))
        if path is None:
            # called inside the root's forward but not registered in it (e.g. a module kept in a list)
            return f"{self.prefix}?{type(module).__name__}"
        return self.label if path == "" else self.prefix + path


class TorchTracer:
    """The installed hooks of one recorder. Use :func:`install`; call the returned function to remove."""

    def __init__(self, recorder):
        self.recorder = recorder
        self._pid = os.getpid()
        self._thread = threading.get_ident()
        # One frame per running module forward: (module, root or None, recording?)
        self._stack: list[tuple[torch.nn.Module, _Root | None, bool]] = []
        self._roots: dict[int, _Root] = {}
        self._labels: set[str] = set()
        self._first_model: _Root | None = None
        # id(param) -> (weakref, name): an id is reused once a model is freed (folds, ensembles), so an
        # entry counts only while its weakref still points at the very same parameter.
        self._param_names: dict[int, tuple[weakref.ref, str]] = {}
        self._in_backward = 0
        self._grad_order: dict[int, int] = {}   # id(param) -> when backward last accumulated its grad
        self._grad_seq = 0
        self._order_grads = True
        self._known: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()  # names known (names-only mode)
        self._seen: dict[int, tuple] = {}     # id(tensor) -> (weakref, version, Event), this step
        self._hooked_params: dict[int, weakref.ref] = {}
        self._handles: list = []
        self._orig_backward: Callable | None = None

    # --- life cycle ------------------------------------------------------------------------------
    def install(self) -> Callable[[], None]:
        capture = set(self.recorder.capture)
        self._order_grads = "grad" in capture
        if capture & {"init", "input", "forward"}:
            module_hooks = [
                _nn_module.register_module_forward_pre_hook(self._pre_forward),
                _nn_module.register_module_forward_hook(self._post_forward, always_call=True),
            ]
        else:
            # Only gradients/parameters wanted: one cheap pre-hook that learns the models' names.
            module_hooks = [_nn_module.register_module_forward_pre_hook(self._learn_names)]
        self._handles = [
            *module_hooks,
            _optim.register_optimizer_step_pre_hook(self._pre_step),
            _optim.register_optimizer_step_post_hook(self._post_step),
        ]
        if capture & {"loss", "init", "input", "forward"}:  # also marks forwards re-run in backward
            self._orig_backward = torch.autograd.backward
            self._patched_backward = self._backward  # one bound method, so uninstall can check it is ours
            torch.autograd.backward = self._patched_backward
        return self.uninstall

    def uninstall(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        if self._orig_backward is not None:
            if torch.autograd.backward is self._patched_backward:
                torch.autograd.backward = self._orig_backward
            self._orig_backward = None
        self._stack.clear()

    # --- helpers ---------------------------------------------------------------------------------
    def _here(self) -> bool:
        return threading.get_ident() == self._thread and os.getpid() == self._pid

    def _wants(self, phase: str) -> bool:
        return self.recorder.wants(phase)

    def _event(self, phase: str, name: str, value: Any, per_sample: bool = False) -> None:
        # The recorder adds the call index of a name repeated within a step (relu, relu#1, ...).
        # A container's output is its last child's tensor, an Identity's its input: those are
        # hashed once per step (same object, same version counter), then reused.
        same = self._same(value)
        ev = self.recorder.event(phase, name, value, per_sample=per_sample, same_as=same)
        if ev is not None and same is None:
            version = _version(value)
            if version is not None:
                if len(self._seen) > 4096:  # steps that never end (no optimizer): stay bounded
                    self._seen.clear()
                self._seen[id(value)] = (weakref.ref(value), version, ev)

    def _root_for(self, module: torch.nn.Module) -> _Root:
        root = self._roots.get(id(module))
        if root is not None and root.ref() is module:
            return root
        base = type(module).__name__
        label, k = base, 2
        while label in self._labels:
            label, k = f"{base}({k})", k + 1
        self._labels.add(label)
        has_params = next(iter(module.parameters()), None) is not None
        first = has_params and self._first_model is None
        root = _Root(module, label, "" if first else label + ".")
        if first:
            self._first_model = root
        self._roots[id(module)] = root
        if has_params:
            for path, p in module.named_parameters():
                if self._param_name(p) is None:
                    self._param_names[id(p)] = (weakref.ref(p), root.prefix + path)
                hooked = self._hooked_params.get(id(p))
                if self._order_grads and (hooked is None or hooked() is not p) and p.requires_grad:
                    self._hooked_params[id(p)] = weakref.ref(p)
                    self._handles.append(p.register_post_accumulate_grad_hook(self._accumulated))
        return root

    def _param_name(self, p) -> str | None:
        entry = self._param_names.get(id(p))
        return entry[1] if entry is not None and entry[0]() is p else None

    def _accumulated(self, p) -> None:
        if self._here():
            self._grad_seq += 1
            self._grad_order[id(p)] = self._grad_seq

    # --- module hooks ----------------------------------------------------------------------------
    def _pre_forward(self, module, args):
        if not self._here():
            return None
        stack = self._stack
        if stack and stack[-1][1] is not None:
            stack.append((module, stack[-1][1], stack[-1][2]))
            return None
        if _WATCHED_MODELS:
            eligible = module in _WATCHED_MODELS
        else:
            eligible = not stack
        if not eligible or self._in_backward:
            stack.append((module, None, False))
            return None
        recording = torch.is_grad_enabled() and module.training
        root = self._root_for(module) if recording else None
        stack.append((module, root, recording))
        if root is not None and root.has_params:
            self._on_root_call(module, root, args)
        return None

    def _learn_names(self, module, args):
        """Names-only pre-hook (no init/input/forward captured): the first module with parameters
        seen outside any known model becomes a root; its modules are known from then on."""
        if module in self._known or not self._here():
            return None
        if _WATCHED_MODELS and module not in _WATCHED_MODELS:
            return None
        self._known.update(module.modules())
        if next(iter(module.parameters()), None) is not None:
            self._root_for(module)
        return None

    def _on_root_call(self, module, root: _Root, args) -> None:
        rec = self.recorder
        if not root.initialised:
            root.initialised = True
            if rec.step == 0 and self._wants("init"):
                for path, p in module.named_parameters():
                    self._event("init", root.prefix + path, p)
        if not self._wants("input"):
            return
        # The global pre-hook gets no keyword arguments; read them from the calling frame
        # (Module._call_impl's inner()), which holds them as a local.
        kwargs: dict[str, Any] = {}
        try:
            kwargs = sys._getframe(2).f_locals.get("kwargs") or {}
        except (ValueError, AttributeError):  # pragma: no cover - other interpreters
            pass
        names = _arg_names(module)
        for i, a in enumerate(args):
            argname = names[i] if i < len(names) else f"arg{i}"
            self._record_inputs(root, argname, a)
        if isinstance(kwargs, dict):
            for k, v in kwargs.items():
                self._record_inputs(root, k, v)

    def _record_inputs(self, root: _Root, name: str, value) -> None:
        for suffix, t in _tensors(value):
            full = f"{root.prefix}{name}{suffix}"
            self._event("input", full, t, per_sample=t.dim() > 0)

    def _post_forward(self, module, args, output):
        if not self._here() or not self._stack:
            return None
        stack = self._stack
        # An exception inside a forward may leave frames of inner modules behind: drop them.
        while stack and stack[-1][0] is not module:
            stack.pop()
        if not stack:
            return None
        _, root, recording = stack.pop()
        if root is not None and recording and output is not None and self._wants("forward"):
            name = root.name_of(module)
            for suffix, t in _tensors(output):
                self._event("forward", name + suffix, t)
        return None

    def _same(self, t: torch.Tensor):
        """The event already recorded this step from this very tensor, if it has not changed since."""
        seen = self._seen.get(id(t))
        if seen is not None and seen[0]() is t and seen[1] == _version(t):
            return seen[2]
        return None

    # --- backward --------------------------------------------------------------------------------
    def _backward(self, tensors, *args, **kwargs):
        if self._here() and not self._in_backward and self._wants("loss"):
            t = tensors if isinstance(tensors, torch.Tensor) else next(
                (x for x in tensors if isinstance(x, torch.Tensor)), None)
            if t is not None:
                self._event("loss", "loss", t)
        self._in_backward += 1
        try:
            assert self._orig_backward is not None
            return self._orig_backward(tensors, *args, **kwargs)
        finally:
            self._in_backward -= 1

    # --- optimizer hooks -------------------------------------------------------------------------
    def _params_of(self, optimizer) -> list[tuple[str, torch.Tensor]]:
        out = []
        watched_params = None
        if _WATCHED_MODELS:
            watched_params = {id(p) for m in _WATCHED_MODELS for p in m.parameters()}
        for g, group in enumerate(optimizer.param_groups):
            for i, p in enumerate(group["params"]):
                if watched_params is not None and id(p) not in watched_params:
                    continue
                name = self._param_name(p)
                if name is None:
                    name = self._unnamed_param(optimizer, p, g, i)
                out.append((name, p))
        return out

    def _unnamed_param(self, optimizer, p, g: int, i: int) -> str:
        # A parameter of a model never called at the top level (or not yet): look it up in the
        # watched models, else name it by its place in the optimizer.
        for m in list(_WATCHED_MODELS):
            for path, q in m.named_parameters():
                if q is p:
                    return path
        return f"{type(optimizer).__name__}.param_groups.{g}.{i}"

    def _counts(self, optimizer) -> bool:
        if not self._here():
            return False
        return not _WATCHED_OPTIMIZERS or optimizer in _WATCHED_OPTIMIZERS

    def _pre_step(self, optimizer, args, kwargs):
        if not self._counts(optimizer) or not self._wants("grad"):
            return None
        params = self._params_of(optimizer)
        order, last = self._grad_order, 1 << 62
        # Sorted by when backward() finished each gradient; parameters it never reached keep their place.
        params = [x for _, _, x in sorted(
            (order.get(id(p), last), i, (name, p)) for i, (name, p) in enumerate(params))]
        for name, p in params:
            g = p.grad
            if g is not None:
                self._event("grad", name, g.to_dense() if g.is_sparse else g)
        return None

    def _post_step(self, optimizer, args, kwargs):
        if not self._counts(optimizer):
            return None
        if self._wants("param"):
            for name, p in self._params_of(optimizer):
                self._event("param", name, p)
        self._grad_order.clear()
        self._seen.clear()
        self.recorder.end_step()  # may raise StopRun (a BaseException): it ends the user's script
        return None


def _version(t: torch.Tensor) -> int | None:
    try:
        return t._version
    except RuntimeError:  # inference tensors have no version counter
        return None


def install(recorder) -> Callable[[], None]:
    """Hook PyTorch so that ``recorder`` sees every step; return the function that removes the hooks."""
    return TorchTracer(recorder).install()


_ARGNAMES: weakref.WeakKeyDictionary[type, list[str]] = weakref.WeakKeyDictionary()


def _arg_names(module) -> list[str]:
    """Names of ``module.forward``'s positional parameters, so inputs are named like ``x``."""
    cls = type(module)
    names = _ARGNAMES.get(cls)
    if names is None:
        import inspect

        try:
            params = inspect.signature(module.forward).parameters.values()
            names = [p.name for p in params
                     if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        except (TypeError, ValueError):
            names = []
        _ARGNAMES[cls] = names
    return names


def _tensors(value, suffix: str = "", depth: int = 0):
    """(suffix, tensor) for each tensor in a tensor, tuple, list or dict (``[0]``, ``[logits]``)."""
    if isinstance(value, torch.Tensor):
        yield suffix, value
    elif depth < 4 and isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            yield from _tensors(v, f"{suffix}[{i}]", depth + 1)
    elif depth < 4 and isinstance(value, dict):
        for k, v in value.items():
            yield from _tensors(v, f"{suffix}[{k}]", depth + 1)
