"""Where this process sits in a multi-process run, and the file names of the rank traces of one run.

A launcher such as ``torchrun`` (``python -m torch.distributed.run``) starts each rank with its place
in the environment, before anything is imported: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``, ``GROUP_RANK`` (the node) and ``TORCHELASTIC_RUN_ID`` (one id per launch, the
same on every rank). :func:`current` reads them; the backend is known only once the script has
started its process group, so the recorder adds it later (``Recorder``, trace meta ``distributed``).

One run of N ranks writes N traces: ``-o out.trace`` becomes ``out.rank0.trace``, ``out.rank1.trace``,
... (rank 0 too, so that a rank's trace is never mistaken for a single-process one).

>>> rank_path("runs/out.trace", 1)
'runs/out.rank1.trace'
>>> split_rank_path("runs/out.rank1.trace")
('runs/out.trace', 1)
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import UsageError

__all__ = ["ENV_LAUNCHER", "RankInfo", "current", "find_rank_traces", "rank_path", "split_rank_path"]

# Set by twinrun in the environment of the ranks it launches (``--nproc``): the ranks then report
# their outcome only through the report channel and leave their exit code to mean "the script ran".
ENV_LAUNCHER = "TWINRUN_LAUNCHER"
_RANK_FILE = re.compile(r"^(?P<stem>.+)\.rank(?P<rank>\d+)(?P<suffix>\.[A-Za-z0-9]+)?$")


@dataclass(frozen=True)
class RankInfo:
    """One rank of a multi-process run, as its launcher described it (the header's ``distributed``)."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node_rank: int
    run_id: str | None          # TORCHELASTIC_RUN_ID: ties the rank traces of one launch together
    launcher: str               # "twinrun --nproc", "torchrun", or "environment" (RANK/WORLD_SIZE set by hand)
    backend: str | None = None  # the process group's, once the script has started one

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "world_size": self.world_size, "local_rank": self.local_rank,
                "local_world_size": self.local_world_size, "node_rank": self.node_rank, "run_id": self.run_id,
                "launcher": self.launcher, "backend": self.backend}

    @classmethod
    def from_dict(cls, d: Any) -> RankInfo | None:
        """The rank a trace header (or meta) describes; None when it describes none or is malformed."""
        if not isinstance(d, dict):
            return None
        try:
            rank, world = int(d["rank"]), int(d["world_size"])
        except (KeyError, TypeError, ValueError):
            return None
        if world < 1 or not 0 <= rank < world:
            return None

        def num(key: str, default: int) -> int:
            v = d.get(key)
            return v if isinstance(v, int) and not isinstance(v, bool) else default

        run_id, backend = d.get("run_id"), d.get("backend")
        return cls(rank, world, num("local_rank", rank), num("local_world_size", world), num("node_rank", 0),
                   run_id if isinstance(run_id, str) else None, str(d.get("launcher") or "torchrun"),
                   backend if isinstance(backend, str) else None)


def current(environ: Mapping[str, str] | None = None) -> RankInfo | None:
    """This process's place in a multi-process run, from its launcher's variables; None in a plain run.

    ``RANK`` and ``WORLD_SIZE`` must both be set (torchrun sets them on every rank); a value that is
    not a whole number, or a rank outside the world, is a one-line ``UsageError``.
    """
    env = os.environ if environ is None else environ
    raw_rank, raw_world = env.get("RANK"), env.get("WORLD_SIZE")
    if raw_rank is None or raw_world is None:
        return None

    def whole(name: str, text: str | None, default: int) -> int:
        if text is None or not text.strip():
            return default
        if not text.strip().isdigit():
            raise UsageError(f"{name}={text!r} in the environment is not a whole number; a launcher such as "
                             "torchrun sets it, so run the script through one")
        return int(text)

    rank, world = whole("RANK", raw_rank, 0), whole("WORLD_SIZE", raw_world, 1)
    if world < 1 or rank >= world:
        raise UsageError(f"RANK={raw_rank} with WORLD_SIZE={raw_world} in the environment: the rank must be "
                         "below the world size; start the ranks with torchrun")
    run_id = env.get("TORCHELASTIC_RUN_ID") or None
    if env.get(ENV_LAUNCHER):
        launcher = "twinrun --nproc"
    elif run_id is not None:
        launcher = "torchrun"
    else:
        launcher = "environment"
    return RankInfo(rank, world, whole("LOCAL_RANK", env.get("LOCAL_RANK"), rank),
                    whole("LOCAL_WORLD_SIZE", env.get("LOCAL_WORLD_SIZE"), world),
                    whole("GROUP_RANK", env.get("GROUP_RANK"), 0), run_id, launcher)


def rank_path(path: str | os.PathLike[str], rank: int) -> str:
    """The trace of ``rank`` for the run written to ``path``: ``out.trace`` -> ``out.rank<rank>.trace``."""
    p = Path(path)
    if p.suffix:
        return str(p.with_name(f"{p.stem}.rank{rank}{p.suffix}"))
    return str(p.with_name(f"{p.name}.rank{rank}"))


def split_rank_path(path: str | os.PathLike[str]) -> tuple[str, int] | None:
    """``out.rank1.trace`` -> (``out.trace``, 1); None for a name that is not a rank trace's."""
    p = Path(path)
    m = _RANK_FILE.match(p.name)
    if m is None:
        return None
    return str(p.with_name(m.group("stem") + (m.group("suffix") or ""))), int(m.group("rank"))


def find_rank_traces(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    """The rank traces of one run, in rank order: from its base name (``out.trace``), one rank's trace
    (``out.rank0.trace``), or the list of them. A one-line ``UsageError`` when none is found."""
    if not isinstance(paths, (str, os.PathLike)):
        listed = [str(p) for p in paths]
        if len(listed) == 1:
            return find_rank_traces(listed[0])
        if not listed:
            raise UsageError("no trace given; give the base name of a run (out.trace) or its rank traces")
        return listed
    p = Path(paths)
    split = split_rank_path(p)
    base = Path(split[0]) if split is not None else p
    found: dict[int, str] = {}
    stem, suffix = (base.stem, base.suffix) if base.suffix else (base.name, "")
    for cand in base.parent.glob(f"{glob_escape(stem)}.rank*{suffix}"):
        s = split_rank_path(cand)
        if s is not None and Path(s[0]).name == base.name:
            found[s[1]] = str(cand)
    if not found:
        if p.exists() and split is None:
            return [str(p)]   # a single trace: the reader says whether it is a rank's
        raise UsageError(f"no rank traces {rank_path(base, 0)}, {rank_path(base, 1)}, ... next to {base}; give the "
                         "-o path of a run made with --nproc (or under torchrun), or list its rank traces")
    return [found[r] for r in sorted(found)]


def glob_escape(text: str) -> str:
    """``text`` with glob's special characters taken literally."""
    return re.sub(r"([*?\[])", r"[\1]", text)
