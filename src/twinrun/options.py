"""How a script is run and recorded: options validated once, carried from the command line to the child.

``RunOptions`` is what ``twinrun run`` does in a process: which script with which arguments, where
the trace goes, what is recorded (``RecordOptions``), and what is applied before the script starts
(a seed, deterministic mode, a thread count, interventions). It is frozen and validated when made;
``to_argv()`` gives the ``twinrun run`` command line that ``from_argv()`` (and the CLI) parse back,
so a parent (``check``, ``doctor``) hands its options to a fresh child without re-spelling them.

>>> o = RunOptions.create("examples/nondeterminism/no_seed.py", max_steps=5, seed=0)   # doctest: +SKIP
>>> RunOptions.from_argv(o.to_argv()) == o                                               # doctest: +SKIP
True

Every value is checked in this module only: a bad one raises a one-line ``UsageError`` naming the
option both as the Python parameter and as the command-line flag (``max_steps (--max-steps)``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._errors import UsageError
from .seeding import seed_value
from .trace.events import PHASES, Phase

__all__ = ["MAX_RESAMPLES", "MAX_SEEDS", "MAX_THREADS", "MAX_TIMEOUT", "RecordOptions", "RunOptions",
           "add_nproc_argument", "add_record_arguments", "add_run_arguments", "add_script_argument", "check_lock",
           "check_script", "parse_capture", "positive_int", "seed_value", "timeout_seconds"]

# Upper bounds, each far above any real use and far below what breaks: 100,000 OpenMP threads crash
# PyTorch; a billion seeds or a trillion bootstrap resamples fill memory before anything runs; a
# timeout past ~10**9 s overflows the kernel's timer.
MAX_THREADS = 1024
MAX_SEEDS = 100_000
MAX_RESAMPLES = 1_000_000
MAX_TIMEOUT = 10_000_000.0


# --- single values ---------------------------------------------------------------------------------

def _label(name: str) -> str:
    return f"{name} (--{name.replace('_', '-')})"


def positive_int(name: str, value: Any, *, minimum: int = 1, allow_none: bool = True,
                 maximum: int | None = None) -> int | None:
    """``value`` (an int, or the text of one) as a whole number >= ``minimum`` (and <= ``maximum``), else a
    one-line UsageError."""
    if value is None and allow_none:
        return None
    v: int | None
    if isinstance(value, bool):
        v = None
    elif isinstance(value, int):
        v = value
    elif isinstance(value, str) and value.strip().lstrip("+").isdigit():
        v = int(value.strip())
    else:
        v = None
    if v is None or v < minimum:
        raise UsageError(f"{_label(name)} must be a whole number >= {minimum}, not {value!r}")
    if maximum is not None and v > maximum:
        raise UsageError(f"{_label(name)} must be a whole number from {minimum} to {maximum:,}, not {v:,}")
    return v


def timeout_seconds(value: Any, name: str = "timeout") -> float | None:
    """``value`` (a number, or its text) as a time limit in seconds: finite and > 0 (None: no limit).

    >>> timeout_seconds("2.5")
    2.5
    >>> timeout_seconds("nan")
    Traceback (most recent call last):
    ...
    twinrun._errors.UsageError: timeout (--timeout) must be a number of seconds > 0, not 'nan'
    """
    if value is None:
        return None
    try:
        v = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        v = math.nan
    if not math.isfinite(v) or v <= 0:
        raise UsageError(f"{_label(name)} must be a number of seconds > 0, not {value!r}")
    if v > MAX_TIMEOUT:
        raise UsageError(f"{_label(name)} must be at most {MAX_TIMEOUT:,.0f} seconds, not {value!r}; leave it out "
                         "for no limit")
    return v


def parse_capture(capture: str | Iterable[str] | None) -> tuple[Phase, ...]:
    """``"grad,param"``, a sequence of phases, None or ``"all"`` -> the phases to record, in trace order."""
    if capture is None:
        return PHASES
    items = capture.split(",") if isinstance(capture, str) else [str(c) for c in capture]
    items = [c.strip() for c in items if c.strip()]
    if not items:
        raise UsageError(f"capture (--capture) needs at least one phase; choose from {', '.join(PHASES)} or 'all'")
    if items == ["all"]:
        return PHASES
    bad = [c for c in items if c not in PHASES]
    if bad:
        raise UsageError(f"unknown phase {bad[0]!r} in capture (--capture); choose from {', '.join(PHASES)} or 'all'")
    return tuple(p for p in PHASES if p in items)


def check_lock(lock: str | os.PathLike[str]) -> Path:
    """The lock file's absolute path, or a one-line :class:`UsageError` when there is no such file."""
    p = Path(lock)
    if not p.is_file():
        what = "is a folder" if p.is_dir() else "does not exist"
        raise UsageError(f"lock (--lock) {str(lock)!r} {what}; give a uv.lock, pylock.toml or requirements.txt "
                         "(write one with: twinrun env freeze -o requirements.lock.txt)")
    return p.resolve()


def check_script(script: str | os.PathLike[str]) -> Path:
    """The script's absolute path, or a one-line :class:`UsageError` when it is not a Python file."""
    p = Path(script)
    if not p.exists():
        raise UsageError(f"script {str(script)!r} does not exist; give the path of a Python training script")
    if p.is_dir():
        raise UsageError(f"{str(script)!r} is a folder, not a script; give the path of a .py file")
    if p.suffix != ".py":
        raise UsageError(f"{str(script)!r} is not a Python script (.py); give the path of a .py file")
    return p.resolve()


# --- what the recorder does ------------------------------------------------------------------------

@dataclass(frozen=True)
class RecordOptions:
    """What a recorder records: phases, every Nth step, where to stop, what to compare with live."""

    capture: tuple[Phase, ...] = PHASES
    every: int = 1
    max_steps: int | None = None
    against: str | None = None      # a reference trace, compared at every step end
    keep_going: bool = False        # with against: record to the end instead of stopping at the divergence

    def __post_init__(self) -> None:
        object.__setattr__(self, "capture", parse_capture(self.capture))
        object.__setattr__(self, "every", positive_int("every", self.every, allow_none=False))
        object.__setattr__(self, "max_steps", positive_int("max_steps", self.max_steps))
        if self.against is not None:
            object.__setattr__(self, "against", str(self.against))
        if self.keep_going and self.against is None:
            raise UsageError("keep_going (--keep-going) only applies with against (--against REF.trace): it records "
                             "past the first divergence from the reference; add --against or drop --keep-going")

    @classmethod
    def create(cls, *, capture: str | Iterable[str] | None = None, every: int | str = 1,
               max_steps: int | str | None = None, against: str | os.PathLike[str] | None = None,
               keep_going: bool = False) -> RecordOptions:
        """Options from Python values or command-line text (``"grad,param"``, ``"5"``)."""
        return cls(parse_capture(capture), every, max_steps,  # type: ignore[arg-type]
                   None if against is None else str(against), bool(keep_going))

    def to_dict(self) -> dict[str, Any]:
        return {"capture": [str(p) for p in self.capture], "every": self.every, "max_steps": self.max_steps,
                "keep_going": self.keep_going, "against": self.against}


# --- what a run does -----------------------------------------------------------------------------

@dataclass(frozen=True)
class RunOptions:
    """One run of a script under twinrun: what ``twinrun run`` does in a (fresh) process."""

    script: str                                   # absolute path of a .py file
    args: tuple[str, ...] = ()
    output: str | None = None                     # the trace file; None: the caller picks one
    record: RecordOptions = field(default_factory=RecordOptions)
    seed: int | None = None                       # seed_everything(seed) before the script
    deterministic: bool = False                   # twinrun.deterministic() before the script
    threads: int | None = None                    # twinrun.deterministic(threads=N) before the script
    interventions: tuple[str, ...] = ()           # twinrun.interventions applied before the script
    nproc: int | None = None                      # launch N ranks through torch.distributed (--nproc)
    lock: str | None = None                       # the environment lock whose sha256 the trace header carries
    timeout: float | None = None                  # end the script (exit 3) after this many seconds

    def __post_init__(self) -> None:
        object.__setattr__(self, "script", str(check_script(self.script)))
        object.__setattr__(self, "args", tuple(str(a) for a in self.args))
        if self.output is not None:
            object.__setattr__(self, "output", str(self.output))
        if self.seed is not None:
            object.__setattr__(self, "seed", seed_value(self.seed))
        object.__setattr__(self, "threads", positive_int("threads", self.threads, maximum=MAX_THREADS))
        object.__setattr__(self, "interventions", _intervention_names(self.interventions))
        object.__setattr__(self, "nproc", positive_int("nproc", self.nproc))
        if self.lock is not None:
            object.__setattr__(self, "lock", str(check_lock(self.lock)))
        object.__setattr__(self, "timeout", timeout_seconds(self.timeout))

    @classmethod
    def create(cls, script: str | os.PathLike[str], args: Sequence[Any] = (), *,
               output: str | os.PathLike[str] | None = None, capture: str | Iterable[str] | None = None,
               every: int | str = 1, max_steps: int | str | None = None,
               against: str | os.PathLike[str] | None = None, keep_going: bool = False,
               seed: int | str | None = None, deterministic: bool = False, threads: int | str | None = None,
               interventions: str | Iterable[str] = (), nproc: int | str | None = None,
               lock: str | os.PathLike[str] | None = None, timeout: float | str | None = None) -> RunOptions:
        """Options from Python values or command-line text, validated (one-line ``UsageError``)."""
        rec = RecordOptions.create(capture=capture, every=every, max_steps=max_steps, against=against,
                                   keep_going=keep_going)
        names = interventions.split(",") if isinstance(interventions, str) else list(interventions)
        return cls(str(script), tuple(map(str, args)), None if output is None else str(output), rec,
                   None if seed is None else seed_value(seed), bool(deterministic),
                   positive_int("threads", threads, maximum=MAX_THREADS), tuple(names), positive_int("nproc", nproc),
                   None if lock is None else str(lock), timeout_seconds(timeout))

    def replace(self, **changes: Any) -> RunOptions:
        """A copy with some fields changed (``record`` fields by name too: ``max_steps=3``)."""
        rec_fields = {f.name for f in dataclasses.fields(RecordOptions)}
        rec_changes = {k: changes.pop(k) for k in list(changes) if k in rec_fields}
        if rec_changes:
            changes["record"] = dataclasses.replace(self.record, **rec_changes)
        return dataclasses.replace(self, **changes)

    # --- the command line, both ways ---
    def to_argv(self) -> list[str]:
        """The ``twinrun run`` arguments (after ``run``) that reproduce these options."""
        r = self.record
        argv: list[str] = []
        if self.output is not None:
            argv += ["-o", self.output]
        argv += ["--every", str(r.every)]
        if r.capture != PHASES:
            argv += ["--capture", ",".join(r.capture)]
        if r.max_steps is not None:
            argv += ["--max-steps", str(r.max_steps)]
        if self.seed is not None:
            argv += ["--seed", str(self.seed)]
        if self.deterministic:
            argv.append("--deterministic")
        if self.threads is not None:
            argv += ["--threads", str(self.threads)]
        if r.against is not None:
            argv += ["--against", r.against]
        if r.keep_going:
            argv.append("--keep-going")
        if self.interventions:
            argv += ["--intervene", ",".join(self.interventions)]
        if self.nproc is not None:
            argv += ["--nproc", str(self.nproc)]
        if self.lock is not None:
            argv += ["--lock", self.lock]
        if self.timeout is not None:
            argv += ["--timeout", repr(self.timeout)]
        return [*argv, self.script, "--", *self.args]

    @classmethod
    def from_argv(cls, argv: Sequence[str]) -> RunOptions:
        """Parse what :meth:`to_argv` wrote (a ``twinrun run`` command line without ``run``)."""
        parser = _Parser(prog="twinrun run", add_help=False)
        parser.add_argument("-o", "--output", default=None)
        add_run_arguments(parser)
        add_script_argument(parser)
        return cls.from_namespace(parser.parse_args(list(argv)))

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace, **overrides: Any) -> RunOptions:
        """Options from a command's parsed arguments (the flags of :func:`add_run_arguments`)."""
        values: dict[str, Any] = dict(
            output=getattr(ns, "output", None), capture=ns.capture, every=ns.every, max_steps=ns.max_steps,
            against=ns.against, keep_going=ns.keep_going, seed=ns.seed, deterministic=ns.deterministic,
            threads=ns.threads, interventions=ns.intervene or (), nproc=getattr(ns, "nproc", None),
            lock=getattr(ns, "lock", None), timeout=getattr(ns, "timeout", None))
        values.update(overrides)
        return cls.create(ns.script, ns.script_args, **values)

    def to_dict(self) -> dict[str, Any]:
        return {"script": self.script, "args": list(self.args), "output": self.output,
                "record": self.record.to_dict(), "seed": self.seed, "deterministic": self.deterministic,
                "threads": self.threads, "interventions": list(self.interventions), "nproc": self.nproc,
                "lock": self.lock, "timeout": self.timeout}


def _intervention_names(names: Iterable[str]) -> tuple[str, ...]:
    from .interventions import check_names

    return tuple(check_names([n for n in names if n and n.strip()]))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse API: a UsageError instead of exiting
        raise UsageError(f"bad twinrun run arguments: {message}")


def add_record_arguments(parser: argparse.ArgumentParser) -> None:
    """The recording flags of ``run`` and ``check`` (values are validated by ``RunOptions``)."""
    g = parser.add_argument_group("recording")
    g.add_argument("--capture", metavar="PHASES", default=None,
                   help="comma list of phases to record: " + ",".join(PHASES) + " (default: all)")
    g.add_argument("--every", metavar="N", default="1", help="record every Nth step (default 1)")
    g.add_argument("--max-steps", metavar="N", default=None,
                   help="end the script cleanly after N optimizer steps")
    g.add_argument("--against", metavar="REF.trace", default=None,
                   help="compare with this trace while running; stop at the first divergence")
    g.add_argument("--keep-going", action="store_true",
                   help="with --against: do not stop at the first divergence")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Every flag of :class:`RunOptions` but ``-o`` and the script: recording, seed, determinism, interventions."""
    add_record_arguments(parser)
    g = parser.add_argument_group("before the script starts")
    g.add_argument("--seed", metavar="S", default=None,
                   help="call twinrun.seed_everything(S) before the script")
    g.add_argument("--deterministic", action="store_true",
                   help="call twinrun.deterministic() before the script")
    g.add_argument("--threads", metavar="N", default=None,
                   help="call twinrun.deterministic(threads=N) before the script")
    g.add_argument("--intervene", metavar="NAMES", default=None,
                   help="apply these twinrun.interventions (comma list) before the script")
    g.add_argument("--timeout", metavar="SECONDS", default=None,
                   help="end a run that takes longer than this (exit 3; its trace is kept)")
    g.add_argument("--lock", metavar="FILE", default=None,
                   help="the environment lock the run was installed from (its sha256 goes into the trace header; "
                        "default: uv.lock, pylock.toml or requirements*.txt found next to the script)")
    add_nproc_argument(parser)


def add_nproc_argument(parser: argparse.ArgumentParser) -> None:
    """``--nproc N``: run the script as N ranks through torch.distributed, one trace per rank."""
    parser.add_argument("--nproc", metavar="N", default=None,
                        help="launch N ranks through torch.distributed (as torchrun --nproc-per-node N): one trace "
                             "per rank, out.rank<R>.trace")


def add_script_argument(parser: argparse.ArgumentParser, help: str = "the Python script to run") -> None:
    """Add SCRIPT and collect the script's own arguments (after ``--``) into ``args.script_args``.

    twinrun's options may stand before or after SCRIPT; everything after the first ``--`` goes to the
    script untouched. An option twinrun does not know, before ``--``, is an error that says where it
    belongs, so that ``twinrun check train.py --max-steps 5`` never hands ``--max-steps`` to the script
    and a script's own option is never silently dropped. (argparse alone cannot mix options after a
    positional with a free tail on Python 3.11, hence the split at ``--``.)
    """
    parser.add_argument("script", metavar="SCRIPT", help=help)
    parser.set_defaults(script_args=[])
    parser.epilog = ((parser.epilog + "\n") if parser.epilog else "") + \
        f"Arguments for the script go after --: {parser.prog} [options] SCRIPT -- [script args]"
    original = parser.parse_known_args

    def parse_known_args(args: Sequence[str] | None = None,
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        argv = list(args or [])
        tail: list[str] = []
        if "--" in argv:
            cut = argv.index("--")
            argv, tail = argv[:cut], argv[cut + 1:]
        ns, extras = original(argv, namespace)
        if extras:
            parser.error(f"unrecognized arguments: {' '.join(extras)}; arguments for the script go after --, "
                         f"as in: {parser.prog} [options] SCRIPT -- {' '.join(extras)}")
        ns.script_args = tail
        return ns, []

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign, assignment]
