"""Inference probes (issue 14): does a model give each input row the same bits on a second call,
inside batches of other sizes, with another thread count, on a lower CPU instruction set?

- ``probe(fn, batch)`` (``twinrun.probe``): in this process, for PyTorch modules, Keras models, JAX
  and NumPy functions (``api.py``);
- ``twinrun probe SCRIPT``: an unchanged inference script in fresh processes; the child records the
  root model's no-grad forward calls through the framework adapter's probe-recording mode
  (``child.py``) and the parent compares the processes (``session.py``).

Both name the first layer where the rows part and the largest ULP distance at the output
(``bits.py``, ``checks.py``).
"""

from __future__ import annotations

from .api import ProbeReport, probe
from .bits import Leaf, compare_leaves, first_layer, load_outputs, row_ulps, save_outputs
from .checks import CHECKS, CheckResult

__all__ = ["CHECKS", "CheckResult", "Leaf", "ProbeReport", "compare_leaves", "first_layer", "load_outputs", "probe",
           "row_ulps", "save_outputs"]
