"""How PyTorch events are named: root models, module paths, parameter names, input names.

A *root* is a module called while no other module's forward runs. Its own output is named by its
class (``SmallCNN``); with several root models, the first keeps bare paths and the others are
prefixed by their label (``Discriminator.fc``). A module called inside a root's forward but not
registered in it (a loss module built in ``forward``) is named by its class and call site
(``CrossEntropyLoss@model.py:31``), so two runs of one program name it alike.
"""

from __future__ import annotations

import inspect
import os
import sys
import weakref
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["Root", "forward_parameters", "tensors"]

# Frames of these packages are not the user's call site.
_SKIP = (os.sep + "torch" + os.sep, os.sep + "twinrun" + os.sep, os.sep + "lightning" + os.sep,
         os.sep + "transformers" + os.sep, os.sep + "accelerate" + os.sep, os.sep + "keras" + os.sep)


class Root:
    """A root module: its label, its modules' paths and its parameters' names."""

    __slots__ = ("has_params", "initialised", "label", "modules", "prefix", "ref", "sites")

    def __init__(self, module: torch.nn.Module, label: str, prefix: str):
        self.ref = weakref.ref(module)
        self.label = label
        self.prefix = prefix
        self.has_params = next(iter(module.parameters()), None) is not None
        self.initialised = False
        self.modules: dict[int, str] = {}
        self.sites: dict[int, str] = {}    # id(unregistered module) -> its call-site name
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
            # Called inside the root's forward but not registered in it: a loss module built in
            # forward, a module kept in a plain list. Its call site names it.
            name = self.sites.get(id(module))
            if name is None:
                if len(self.sites) > 1024:   # modules built anew each call: keep the map bounded
                    self.sites.clear()
                name = self.sites[id(module)] = f"{type(module).__name__}@{_call_site()}"
            return self.prefix + name
        return self.label if path == "" else self.prefix + path


def _call_site() -> str:
    """``file.py:line`` of the first frame outside torch, twinrun and the trainers: the user's call."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if not name.startswith("<") and not any(s in name for s in _SKIP):
            return f"{os.path.basename(name)}:{frame.f_lineno}"
        frame = frame.f_back   # type: ignore[assignment]
    return "?"


# A cache of forward signatures per module class.
_SIGNATURES: weakref.WeakKeyDictionary[type, tuple[list[str], set[str]]] = weakref.WeakKeyDictionary()


def forward_parameters(module: torch.nn.Module) -> tuple[list[str], set[str]]:
    """``module.forward``'s positional parameter names (so inputs are named like ``x``) and every
    named parameter. A keyword that only ``**kwargs`` absorbs (a trainer's ``num_items_in_batch``)
    is not a named parameter, and so not an input of the model."""
    cls = type(module)
    found = _SIGNATURES.get(cls)
    if found is None:
        try:
            params = list(inspect.signature(module.forward).parameters.values())
        except (TypeError, ValueError):
            params = []
        positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not named:   # no named parameter to go by (forward(*args, **kwargs)): every keyword counts
            named = {"*"}
        found = _SIGNATURES[cls] = (positional, named)
    return found


def tensors(value: Any, suffix: str = "", depth: int = 0) -> Iterator[tuple[str, torch.Tensor]]:
    """(suffix, tensor) for each tensor in a tensor, tuple, list or dict (``[0]``, ``[logits]``)."""
    if isinstance(value, torch.Tensor):
        yield suffix, value
    elif depth < 4 and isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            yield from tensors(v, f"{suffix}[{i}]", depth + 1)
    elif depth < 4 and isinstance(value, dict):
        for k, v in value.items():
            yield from tensors(v, f"{suffix}[{k}]", depth + 1)
