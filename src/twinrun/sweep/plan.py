"""What a sweep runs: one run per (arm, seed), each changing only twinrun's seed variables.

``vary="all"`` varies ``TWINRUN_SEED``; ``vary=STREAM`` varies ``TWINRUN_SEED_<STREAM>`` with the rest
fixed at ``base_seed``; ``design="variance"`` makes three arms (vary init, vary data, vary nothing).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .._errors import UsageError
from ..options import MAX_SEEDS, check_script, positive_int
from ..redact import redact_argv
from ..seeding import ENV_ROOT, env_name

__all__ = ["DESIGNS", "VARIANCE_ARMS", "PlannedRun", "args_sha256", "plan", "script_identity"]

DESIGNS = ("single", "variance")
VARIANCE_ARMS = ("init", "data", "none")


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: its arm, its index in the arm, its seed and the seed variables it gets."""

    arm: str
    idx: int
    seed: int | None
    env: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"arm": self.arm, "idx": self.idx, "seed": self.seed, "env": dict(self.env)}


def _arm_env(arm: str, seed: int, base_seed: int) -> dict[str, str]:
    if arm == "all":
        return {ENV_ROOT: str(seed)}
    env = {ENV_ROOT: str(base_seed)}
    if arm != "none":
        env[env_name(arm)] = str(seed)
    return env


def plan(seeds: int, *, vary: str = "all", design: str = "single", base_seed: int = 0) -> list[PlannedRun]:
    """The runs of a sweep; run ``idx`` of an arm gets seed ``idx``.

    >>> [r.env for r in plan(2, vary="init")]
    [{'TWINRUN_SEED': '0', 'TWINRUN_SEED_INIT': '0'}, {'TWINRUN_SEED': '0', 'TWINRUN_SEED_INIT': '1'}]
    """
    # at most MAX_SEEDS: a billion would fill memory with planned runs before the first one starts
    seeds = positive_int("seeds", seeds, maximum=MAX_SEEDS, allow_none=False)  # type: ignore[assignment]
    if design not in DESIGNS:
        raise UsageError(f"unknown design {design!r}; use one of {', '.join(DESIGNS)}")
    if design == "single" and not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", vary or ""):
        raise UsageError(f"--vary {vary!r} is not a seed stream name; use all, init, data or a stream name")
    arms = VARIANCE_ARMS if design == "variance" else (vary,)
    return [PlannedRun(arm, i, None if arm == "none" else i, _arm_env(arm, i, base_seed))
            for arm in arms for i in range(seeds)]


def script_identity(script: str | os.PathLike[str], args: Sequence[Any] = ()) -> dict[str, Any]:
    """Path, sha256 of the source and arguments: what makes two sweeps comparable run by run.

    The arguments are kept redacted (``--api-key <redacted>``: the results file is shared) and
    compared on resume by ``args_sha256``, the SHA-256 of the real ones."""
    path = check_script(script)
    real = list(map(str, args))
    return {"script": str(path), "script_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "args": redact_argv(real), "args_sha256": args_sha256(real)}


def args_sha256(args: Sequence[str]) -> str:
    """The SHA-256 of a command line (as JSON), to compare arguments without storing them."""
    return hashlib.sha256(json.dumps(list(args)).encode()).hexdigest()
