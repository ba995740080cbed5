"""twinrun's PyTorch helpers (importing this module imports torch).

>>> import twinrun.torch
>>> loader = DataLoader(ds, shuffle=True, num_workers=2, **twinrun.torch.loader_kwargs("data"))  # doctest: +SKIP
>>> with twinrun.torch.batch_invariant(), torch.no_grad():        # also twinrun.batch_invariant  # doctest: +SKIP
...     logits = model(x)
"""

from __future__ import annotations

from .frameworks.torch.batch_invariant import batch_invariant
from .frameworks.torch.data import loader_kwargs, worker_rng
from .frameworks.torch.tracing import unwatch, watch

__all__ = ["batch_invariant", "loader_kwargs", "unwatch", "watch", "worker_rng"]
