"""``twinrun.huggingface.Callback``: see ``twinrun.frameworks.torch.trainers``.

The class is built on first use, so importing this module imports neither PyTorch nor the trainer.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Callback"]  # noqa: F822 (built by __getattr__ on first use)

_built: dict[str, type] = {}


def __getattr__(name: str) -> Any:
    if name == "Callback":
        if name not in _built:
            from .frameworks.torch.trainers import huggingface_callback

            _built[name] = huggingface_callback()
        return _built[name]
    raise AttributeError(f"module 'twinrun.huggingface' has no attribute {name!r}")


def __dir__() -> list[str]:
    return list(__all__)
