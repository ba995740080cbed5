"""twinrun's PyTorch helpers (importing this module imports torch).

>>> import twinrun.torch
>>> loader = DataLoader(ds, shuffle=True, num_workers=2, **twinrun.torch.loader_kwargs("data"))  # doctest: +SKIP
"""

from __future__ import annotations

from .frameworks.torch.data import loader_kwargs, worker_rng
from .frameworks.torch.tracing import unwatch, watch

__all__ = ["loader_kwargs", "unwatch", "watch", "worker_rng"]
