"""Recording PyTorch training with PyTorch's global hooks: no change to the user's code.

**Where a step ends**, whichever comes first: a ``torch.optim`` optimizer's ``step()`` (with or
without a closure); ``twinrun.step()``; or, when the program has no optimizer step, the first
in-place update of the recorded parameters after a backward pass (``p -= lr * p.grad`` under
``torch.no_grad()``, ``p.data.add_(...)``), noticed at the next forward of a root model, the next
backward, an explicit step or the end of the run.

What is recorded, per step, in program order:

- ``init``: every parameter of a root model, at its first recorded forward in step 0;
- ``input``: the tensors passed to a root model (positional, and keywords that are named parameters
  of its ``forward``: a trainer's extra keyword that only ``**kwargs`` takes is not an input),
  with a digest per sample;
- ``forward``: every module's output, named by its path in the root model (``features.0``); a
  module called again in the same step gets a call index (``relu#1``); a module built inside
  ``forward`` is named by its class and call site (``CrossEntropyLoss@model.py:31``);
- ``loss``: the tensor ``backward()`` is called on (``loss``, ``loss#1`` with accumulation);
- ``grad``: each parameter's gradient as soon as backward has accumulated it (a post-accumulate-grad
  hook), so the trace holds them in the order backward finishes them (last layer first) and a
  closure that runs backward inside ``optimizer.step(closure)`` records the same as a plain loop;
  with several backward passes per step (accumulation, LBFGS) each is recorded (``w``, ``w#1``);
  under DDP that is each rank's local gradient, before the all-reduce (the synchronised one is not
  recorded: the same step's ``param`` events show a rank-local change of it; docs/distributed.md);
- ``param``: each parameter after the update; then the step ends.

Roots and names: ``naming``. Evaluation passes are not recorded: a root call made with grad disabled
or with the root in ``eval()`` mode records nothing, and nothing inside it; neither do forwards re-run
during ``backward()`` (activation checkpointing). Only the thread and process that installed the
hooks record (DataLoader workers are not traced). A model wrapped by ``torch.compile`` runs as one
graph: its inputs, loss, gradients and parameters are recorded, its layers' outputs are not (said
once on stderr and in the trace).
"""

from __future__ import annotations

import sys
import threading
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch.nn.modules import module as _nn_module
from torch.optim import optimizer as _optim

from ..base import RecorderLike
from .handoff import numpy_view, pid
from .naming import Root, forward_parameters, is_keras_layer, param_path, tensors
from .watching import _OWNERS, _WATCHED_MODELS, _WATCHED_OPTIMIZERS, own, owner_of, unwatch, watch

__all__ = ["TorchTracer", "install", "own", "unwatch", "watch"]

_SAMPLE = 8   # elements per parameter compared to notice an update that bypasses the version counter


def _compiled(module: torch.nn.Module) -> bool:
    """torch.compile's wrapper: its ``_orig_mod`` (the user's model, with its class and paths) is the root."""
    return type(module).__name__ == "OptimizedModule" and hasattr(module, "_orig_mod")


class TorchTracer:
    """The installed hooks of one recorder. Use :func:`install`; call the returned function to remove."""

    def __init__(self, recorder: RecorderLike):
        self.recorder = recorder
        self._pid = pid()
        self._thread = threading.get_ident()
        # One frame per running module forward: (module, root or None, recording?)
        self._stack: list[tuple[torch.nn.Module, Root | None, bool]] = []
        self._roots: dict[int, Root] = {}
        self._labels: set[str] = set()
        self._first_model: Root | None = None
        # id(param) -> (weakref, name): an id is reused once a model is freed (folds, ensembles), so an
        # entry counts only while its weakref still points at the very same parameter.
        self._params: dict[int, tuple[weakref.ref[torch.Tensor], str]] = {}
        self._hooked: dict[int, weakref.ref[torch.Tensor]] = {}
        self._in_backward = 0
        self._known: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()  # names known (names-only mode)
        self._seen: dict[int, tuple[Any, ...]] = {}     # id(tensor) -> (weakref, version, Event), this step
        self._handles: list[Any] = []
        self._orig_backward: Callable[..., Any] | None = None
        self._patched_backward: Callable[..., Any] | None = None
        # The step model without an optimizer: a backward pass happened since the step began, and
        # the parameters as they were when it ended (version counter and a few elements each).
        self._backward_done = False
        # Strong references: a script whose model is local to main() frees it before the recording
        # closes, and the last update by hand is still noticed then. Dropped when the step ends.
        self._snapshot: dict[int, tuple[torch.Tensor, int | None, torch.Tensor | None]] = {}
        self._grads_this_step: set[int] = set()
        self._new_hooks: set[int] = set()    # parameters first hooked in this step (by the optimizer)
        self._in_optimizer_step = 0          # LBFGS updates parameters between closure calls
        self._optimizer_steps = 0            # once an optimizer ends steps, updates are its business
        self._compiled_noted: set[str] = set()
        self._init_done: set[int] = set()    # parameters whose init event is recorded

    # --- life cycle ------------------------------------------------------------------------------
    def install(self) -> Callable[[], None]:
        capture = set(self.recorder.capture)
        if capture & {"init", "input", "forward"}:
            module_hooks = [
                _nn_module.register_module_forward_pre_hook(self._pre_forward),
                _nn_module.register_module_forward_hook(self._post_forward, always_call=True),
            ]
        else:
            # Only gradients/parameters wanted: a cheaper pre-hook that learns the models' names.
            module_hooks = [_nn_module.register_module_forward_pre_hook(self._learn_names)]
        self._handles = [
            *module_hooks,
            _optim.register_optimizer_step_pre_hook(self._pre_step),
            _optim.register_optimizer_step_post_hook(self._post_step),
        ]
        # backward() is wrapped to record the loss and to notice a training loop without an optimizer.
        self._orig_backward = torch.autograd.backward
        self._patched_backward = self._backward  # one bound method, so uninstall can check it is ours
        torch.autograd.backward = self._patched_backward  # type: ignore[assignment]
        self._orig_grad, self._patched_grad = torch.autograd.grad, self._grad   # autograd.grad loops: the same
        torch.autograd.grad = self._patched_grad
        self.recorder.add_step_listener(self._before_step_end)
        self.recorder.add_close_listener(self._manual_step_end)
        return self.uninstall

    def uninstall(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        if self._orig_backward is not None:
            if torch.autograd.backward is self._patched_backward:
                torch.autograd.backward = self._orig_backward
            self._orig_backward = None
        if getattr(self, "_orig_grad", None) is not None and torch.autograd.grad is self._patched_grad:
            torch.autograd.grad = self._orig_grad
        self._stack.clear()

    # --- helpers ---------------------------------------------------------------------------------
    def _here(self) -> bool:
        return threading.get_ident() == self._thread and self._pid == pid()

    def _wants(self, phase: str) -> bool:
        return self.recorder.wants(phase)

    def _event(self, phase: str, name: str, value: Any, per_sample: bool = False) -> None:
        # The recorder adds the call index of a name repeated within a step (relu, relu#1, ...).
        # A container's output is its last child's tensor, an Identity's its input: those are
        # hashed once per step (same object, same version counter), then reused.
        same = self._same(value)
        ev = self.recorder.event(phase, name, numpy_view(value), per_sample=per_sample, same_as=same)
        if ev is not None and same is None:
            version = _version(value)
            if version is not None:
                if len(self._seen) > 4096:  # a step with very many tensors: stay bounded
                    self._seen.clear()
                self._seen[id(value)] = (weakref.ref(value), version, ev)

    def _same(self, t: torch.Tensor) -> Any:
        """The event already recorded this step from this very tensor, if it has not changed since."""
        seen = self._seen.get(id(t))
        if seen is not None and seen[0]() is t and seen[1] == _version(t):
            return seen[2]
        return None

    def _root_for(self, module: torch.nn.Module) -> Root:
        root = self._roots.get(id(module))
        if root is not None and (root.ref() is module or (root.wrapper == id(module) and root.ref() is not None)):
            return root
        target: torch.nn.Module = module._orig_mod if _compiled(module) else module  # type: ignore[assignment]
        base = type(target).__name__
        label, k = base, 2
        while label in self._labels:
            label, k = f"{base}({k})", k + 1
        self._labels.add(label)
        has_params = next(iter(target.parameters()), None) is not None
        keras = is_keras_layer(target)
        label = str(target.name) if keras else label  # Keras names are unique: no prefix needed
        first = has_params and self._first_model is None
        prefix = "" if first or keras else label + "."
        root = Root(target, label, prefix, wrapper=module if target is not module else None)
        if first:
            self._first_model = root
        self._roots[id(module)] = root
        if has_params:
            for path, p in target.named_parameters():
                if self._param_name(p) is None:
                    self._params[id(p)] = (weakref.ref(p), param_path(root.prefix + path))
                self._hook(p)
        if _compiled(module) and label not in self._compiled_noted:
            self._compiled_noted.add(label)
            self.recorder.note(f"`{label}` is compiled with torch.compile: its inputs, loss, gradients and "
                               "parameters are recorded; the outputs of its layers, inside the compiled graph, "
                               "are not")
        return root

    def _hook(self, p: torch.Tensor) -> bool:
        """Record ``p``'s gradient when backward accumulates it; True when newly hooked."""
        hooked = self._hooked.get(id(p))
        if (hooked is not None and hooked() is p) or not p.requires_grad:
            return False
        self._hooked[id(p)] = weakref.ref(p)
        self._handles.append(p.register_post_accumulate_grad_hook(self._accumulated))
        return True

    def _param_name(self, p: torch.Tensor) -> str | None:
        entry = self._params.get(id(p))
        return entry[1] if entry is not None and entry[0]() is p else None

    def _tracked(self) -> list[tuple[str, torch.Tensor]]:
        """The parameters of the root models, by name (the ones a step without an optimizer records)."""
        out = []
        for ref, name in list(self._params.values()):
            p = ref()
            if p is not None:
                out.append((name, p))
        return out

    # --- gradients, as backward produces them ----------------------------------------------------
    def _accumulated(self, p: torch.Tensor) -> None:
        if _compiling() or not self._here():
            return
        self._grads_this_step.add(id(p))
        if self._wants("grad") and p.grad is not None:
            name = self._param_name(p) or self._optimizer_name(p)
            g = p.grad
            self._event("grad", name, g.to_dense() if g.is_sparse else g)

    # --- module hooks ----------------------------------------------------------------------------
    def _pre_forward(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        if _compiling() or not self._here():
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
        if recording:
            self.recorder.saw("root forward")
            self._manual_step_end()   # the update of the step before, made without an optimizer
        root = self._root_for(owner_of(module) or module if _OWNERS else module) if recording else None
        stack.append((module, root, recording))
        if root is not None and root.has_params:
            self._on_root_call(module, root, args)
        return None

    def _learn_names(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        """Names-only pre-hook (no init/input/forward captured): the first module with parameters
        seen outside any known model becomes a root; its modules are known from then on."""
        if _compiling() or not self._here():
            return None
        if torch.is_grad_enabled() and module.training and not self._in_backward and not self._inside_known(module):
            self.recorder.saw("root forward")
            self._manual_step_end()
        if module in self._known:
            return None
        if _WATCHED_MODELS and module not in _WATCHED_MODELS:
            return None
        self._known.update(module.modules())
        if next(iter(module.parameters()), None) is not None:
            self._root_for(module)
        return None

    def _inside_known(self, module: torch.nn.Module) -> bool:
        root = self._roots.get(id(module))
        return module in self._known and (root is None or root.ref() is not module)

    def _on_root_call(self, module: torch.nn.Module, root: Root, args: tuple[Any, ...]) -> None:
        rec = self.recorder
        model = root.ref() or module   # the compiled model's own module, or the owner of the one called
        if root.wrapper == id(module):
            module = model             # a compiled model's inputs are named by its own forward
        if not root.initialised:
            root.initialised = True
            if rec.step == 0 and self._wants("init"):
                for _, p in model.named_parameters():
                    if id(p) not in self._init_done:   # a layer called alone first (Keras builds) and then its model
                        self._init_done.add(id(p))
                        self._event("init", self._param_name(p) or self._optimizer_name(p), p)
        if not self._wants("input"):
            return
        # The global pre-hook gets no keyword arguments; read them from the calling frame
        # (Module._call_impl's inner()), which holds them as a local.
        kwargs: Any = {}
        try:
            kwargs = sys._getframe(2).f_locals.get("kwargs") or {}
        except (ValueError, AttributeError):  # pragma: no cover - other interpreters
            pass
        positional, named = forward_parameters(module)
        for i, a in enumerate(args):
            self._record_inputs(root, positional[i] if i < len(positional) else f"arg{i}", a)
        if isinstance(kwargs, dict):
            for k, v in kwargs.items():
                if "*" in named or k in named:
                    self._record_inputs(root, k, v)

    def _record_inputs(self, root: Root, name: str, value: Any) -> None:
        for suffix, t in tensors(value):
            self._event("input", f"{root.prefix}{name}{suffix}", t, per_sample=t.dim() > 0)

    def _post_forward(self, module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if _compiling() or not self._here() or not self._stack:
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
            if type(output) is torch.Tensor:   # the usual case, without a generator
                self._event("forward", name, output)
                return None
            for suffix, t in tensors(output):
                self._event("forward", name + suffix, t)
        return None

    # --- backward --------------------------------------------------------------------------------
    def _backward_begins(self, tensors_: Any) -> None:
        self.recorder.saw("backward")
        self._manual_step_end()
        if self._wants("loss"):
            t = tensors_ if isinstance(tensors_, torch.Tensor) else next(
                (x for x in tensors_ if isinstance(x, torch.Tensor)), None)
            if t is not None:
                self._event("loss", "loss", t)

    def _grad(self, outputs: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        """``torch.autograd.grad`` with recorded parameters among ``inputs``: it writes no ``.grad`` and
        fires no post-accumulate hook, so the gradients it returns are recorded, and the update that
        follows ends the step as a backward pass's would."""
        seq = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
        names = [self._param_name(t) if isinstance(t, torch.Tensor) else None for t in seq]
        if not (self._here() and not self._in_backward and any(names)):
            return self._orig_grad(outputs, inputs, *args, **kwargs)
        self._backward_begins(outputs)
        self._in_backward += 1
        try:
            result = self._orig_grad(outputs, inputs, *args, **kwargs)
        finally:
            self._in_backward -= 1
        if self._wants("grad"):
            for name, g in zip(names, result):
                if name is not None and g is not None:
                    self._event("grad", name, g)
        self._backward_done = True
        self._take_snapshot()
        return result

    def _backward(self, tensors_: Any, *args: Any, **kwargs: Any) -> Any:
        outer = self._here() and not self._in_backward
        if outer:
            self._backward_begins(tensors_)
        self._in_backward += 1
        try:
            assert self._orig_backward is not None
            return self._orig_backward(tensors_, *args, **kwargs)
        finally:
            self._in_backward -= 1
            if outer:
                self._backward_done = True
                self._take_snapshot()

    # --- a step without an optimizer -------------------------------------------------------------
    def _take_snapshot(self) -> None:
        """The recorded parameters as backward left them: version counter and a few elements each
        (``p.data`` updates do not move the version counter)."""
        if self._optimizer_steps or self._in_optimizer_step:
            return
        snap = {}
        for _, p in self._tracked():
            snap[id(p)] = (p, _version(p), _sample(p))
        self._snapshot = snap

    def _updated(self) -> bool:
        for p, version, sample in self._snapshot.values():
            if _version(p) != version:
                return True
            now = _sample(p)
            if sample is not None and now is not None and not torch.equal(now, sample):
                return True
        return False

    def _manual_step_end(self) -> None:
        """End the step when, since the last backward, the parameters were updated without an optimizer
        (at the next root forward, the next backward, and when the recording closes)."""
        if self._optimizer_steps or self._in_optimizer_step or not self._backward_done:
            return
        if self._updated():
            self.recorder.saw("update without an optimizer")
            self.recorder.end_step()   # records the parameters first (_before_step_end); may raise StopRun

    def _before_step_end(self) -> None:
        """Called by the recorder as any step ends: a step that no optimizer ended (an update by hand,
        ``twinrun.step()``) records the parameters here."""
        if self._backward_done and self._wants("param"):
            for name, p in self._tracked():
                self._event("param", name, p)
        self._reset_step()

    def _reset_step(self) -> None:
        self._backward_done = False
        self._snapshot = {}
        self._grads_this_step.clear()
        self._new_hooks.clear()
        self._seen.clear()

    # --- optimizer hooks -------------------------------------------------------------------------
    def _params_of(self, optimizer: torch.optim.Optimizer) -> list[tuple[str, torch.Tensor]]:
        out = []
        watched = {id(p) for m in _WATCHED_MODELS for p in m.parameters()} if _WATCHED_MODELS else None
        for group in optimizer.param_groups:
            for p in group["params"]:
                if watched is not None and id(p) not in watched:
                    continue
                out.append((self._param_name(p) or self._optimizer_name(p, optimizer), p))
        return out

    def _optimizer_name(self, p: torch.Tensor, optimizer: torch.optim.Optimizer | None = None) -> str:
        # A parameter of a model never called at the top level (or not yet): look it up in the
        # watched models, else name it by its place in its optimizer.
        for m in list(_WATCHED_MODELS):
            for path, q in m.named_parameters():
                if q is p:
                    return path
        for opt in [optimizer] if optimizer is not None else []:
            for g, group in enumerate(opt.param_groups):
                for i, q in enumerate(group["params"]):
                    if q is p:
                        return f"{type(opt).__name__}.param_groups.{g}.{i}"
        return f"param@{id(p):x}"

    def _counts(self, optimizer: torch.optim.Optimizer) -> bool:
        if not self._here():
            return False
        return not _WATCHED_OPTIMIZERS or optimizer in _WATCHED_OPTIMIZERS

    def _pre_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if not self._counts(optimizer):
            return None
        self._in_optimizer_step += 1
        # Parameters no root model showed (used functionally): hook them now, so that a closure's
        # backward records them; this step's, computed before the hook, are read after the step.
        for _, p in self._params_of(optimizer):
            if self._hook(p):
                self._new_hooks.add(id(p))
        return None

    def _post_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if not self._counts(optimizer):
            return None
        self.recorder.saw("optimizer step")
        self._in_optimizer_step = max(0, self._in_optimizer_step - 1)
        self._optimizer_steps += 1
        params = self._params_of(optimizer)
        if self._wants("grad"):
            for name, p in params:
                if id(p) in self._new_hooks and id(p) not in self._grads_this_step and p.grad is not None:
                    g = p.grad
                    self._event("grad", name, g.to_dense() if g.is_sparse else g)
        if self._wants("param"):
            for name, p in params:
                self._event("param", name, p)
        self._backward_done = False   # the parameters are recorded: no listener records them again
        self.recorder.end_step()  # may raise StopRun (a BaseException): it ends the user's script
        return None


_compiling = torch.compiler.is_compiling   # while Dynamo traces; a hook returning on it traces as nothing


def _version(t: torch.Tensor) -> int | None:
    try:
        return int(t._version)
    except RuntimeError:  # inference tensors have no version counter
        return None


def _sample(p: torch.Tensor) -> torch.Tensor | None:
    """A few elements spread over ``p``, copied (to notice a ``p.data`` update)."""
    n = p.numel()
    if n == 0 or p.is_sparse:
        return None
    flat = p.detach().reshape(-1)
    step = max(1, n // _SAMPLE)
    return flat[::step][:_SAMPLE].clone()


def install(recorder: RecorderLike) -> Callable[[], None]:
    """Hook PyTorch so that ``recorder`` sees every step; return the function that removes the hooks."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about global hooks when compiled modules run
        return TorchTracer(recorder).install()
