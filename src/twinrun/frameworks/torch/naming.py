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

__all__ = ["Root", "forward_parameters", "is_keras_layer", "param_path", "tensors"]

_KERAS_PARAMS = "_torch_params."


def is_keras_layer(module: Any) -> bool:
    """Whether ``module`` is a Keras 3 layer (on the torch backend every layer is an ``nn.Module``)."""
    layer = sys.modules.get("keras.src.layers.layer")
    return layer is not None and isinstance(module, layer.Layer)


def param_path(path: str) -> str:
    """A parameter's name without the wrappers a user never wrote: Keras on torch keeps a layer's
    variables in a ``ParameterDict`` keyed by their Keras path (``_functional._torch_params.cnn/conv/kernel``
    is ``cnn/conv/kernel``, the name Keras and twinrun's TensorFlow traces use).

    >>> param_path("Sequential._functional._torch_params.cnn/conv/kernel"), param_path("net.0.weight")
    ('cnn/conv/kernel', 'net.0.weight')
    """
    i = path.rfind(_KERAS_PARAMS)
    return path[i + len(_KERAS_PARAMS):] if i >= 0 else path

# Frames of these packages are not the user's call site.
_SKIP = (os.sep + "torch" + os.sep, os.sep + "twinrun" + os.sep, os.sep + "lightning" + os.sep,
         os.sep + "transformers" + os.sep, os.sep + "accelerate" + os.sep, os.sep + "keras" + os.sep)


class Root:
    """A root module: its label, its modules' paths and its parameters' names."""

    __slots__ = ("has_params", "initialised", "label", "modules", "prefix", "ref", "sites", "wrapper")

    def __init__(self, module: torch.nn.Module, label: str, prefix: str, wrapper: torch.nn.Module | None = None):
        # ``wrapper``: the module the user calls when it only wraps ``module`` (torch.compile's
        # OptimizedModule): it is named as the root itself, and ``module``'s paths are the names.
        self.wrapper = id(wrapper) if wrapper is not None else None
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
            if self.wrapper is not None:
                self.modules[self.wrapper] = ""

    def name_of(self, module: torch.nn.Module) -> str:
        path = self.modules.get(id(module))
        if path is None:
            self.refresh()  # a module added after the first call
            path = self.modules.get(id(module))
        if path is None and is_keras_layer(module):
            return str(module.name)    # Keras names its layers uniquely (conv, dense_1)
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
