"""``twinrun.lightning.Callback`` (a ``lightning.pytorch.Callback``): see ``twinrun.frameworks.torch.trainers``.

The class is built on first use, so importing this module imports neither PyTorch nor the trainer.
"""

from __future__ import annotations

from ._lazy import lazy_classes

__all__ = ["Callback"]  # noqa: F822 (built by __getattr__ on first use)


def _build() -> type:
    from .frameworks.torch.trainers import lightning_callback

    return lightning_callback()


__getattr__, __dir__ = lazy_classes(__name__, {"Callback": _build})
