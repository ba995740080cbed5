"""Interventions: small, named changes to a program's unseeded randomness, for ``twinrun doctor``.

``twinrun run --intervene NAME[,NAME...]`` (and ``RunOptions(interventions=...)``) calls :func:`apply`
in the child before the user's script starts. Each intervention gives a seed, drawn from twinrun's
``data`` stream, to randomness the program left unseeded, and changes nothing else; doctor then
reruns the script twice and sees whether the runs still part. The framework ones live with their
adapters (``seed-loaders``, ``seed-torch``: PyTorch; ``seed-numpy``, ``seed-random``: NumPy and Python;
``seed-tf-data``, ``seed-tf-random``: TensorFlow; ``ddp-small-buckets``, another all-reduce layout for doctor under
``--nproc`` on 3+ ranks: PyTorch); the process-level ones here (``fixed-clock``, ``later-clock``, ``one-cpu``).

Every time an intervention acts at a new place of the program, it reports the act to the parent
(``twinrun._channel``: ``{"kind": "intervention", "name", "what", "api", "site"}``) and prints one line
on stderr for a person running it by hand::

    twinrun intervention seed-numpy: numpy.random.default_rng() without a seed at train.py:31

>>> import twinrun.interventions as iv
>>> iv.NAMES[-3:]
('fixed-clock', 'one-cpu', 'ddp-small-buckets')
>>> iv.DATA_NAMES
('seed-loaders', 'seed-torch', 'seed-numpy', 'seed-random', 'seed-tf-data', 'seed-tf-random')
"""

from __future__ import annotations

from collections.abc import Iterable

from .._errors import UsageError
from ..frameworks.base import Intervention
from .context import CONTEXT, STREAM
from .process import INTERVENTIONS as _PROCESS

__all__ = [
    "DATA_NAMES",
    "DESCRIPTIONS",
    "NAMES",
    "ORDER_NAMES",
    "STREAM",
    "apply",
    "check_names",
    "registry",
]

# The vocabulary of --intervene, in the order documented and listed: the data-order and data-content
# seeding first, then the clock, then the CPUs. A framework that brings a new intervention adds its
# name here (a test checks that this list and the implementations agree).
NAMES = ("seed-loaders", "seed-torch", "seed-numpy", "seed-random", "seed-tf-data", "seed-tf-random", "fixed-clock",
         "later-clock", "one-cpu", "ddp-small-buckets")


def registry() -> dict[str, Intervention]:
    """Every intervention, by name, in ``NAMES`` order (the frameworks' and the process-level ones)."""
    from .. import frameworks

    found = {**frameworks.interventions(), **{iv.name: iv for iv in _PROCESS}}
    return {name: found[name] for name in NAMES}


_REGISTRY = registry()
DESCRIPTIONS = {name: iv.description for name, iv in _REGISTRY.items()}
# The ones that seed data randomness (doctor's "data" experiment); "order" ones decide the sample order.
DATA_NAMES = tuple(n for n, iv in _REGISTRY.items() if iv.kind in ("order", "content"))
ORDER_NAMES = tuple(n for n, iv in _REGISTRY.items() if iv.kind == "order")


def check_names(names: Iterable[str] | str) -> list[str]:
    """The names as a list (a comma-separated string is split); an unknown one is a one-line UsageError."""
    if isinstance(names, str):
        names = names.split(",")
    out = [n.strip() for n in names if n and n.strip()]
    bad = [n for n in out if n not in _REGISTRY]
    if bad:
        raise UsageError(f"unknown intervention {bad[0]!r}; choose from {', '.join(NAMES)}")
    return out


def apply(names: Iterable[str] | str) -> list[str]:
    """Apply the named interventions (a list, or one comma-separated string); returns their names.

    Unknown names raise :class:`UsageError` before anything is changed. Applying one twice is a no-op.

    >>> apply(["seed-random"])            # doctest: +SKIP
    ['seed-random']
    """
    names = check_names(names)
    for name in names:
        CONTEXT.run(_REGISTRY[name])
    return names
