"""Recording a program: framework hooks hand tensors to a ``Recorder``, which writes them as trace events.

``record(path)`` opens a trace, installs the hooks of every framework the program imports (now or
later) and yields the ``Recorder``; hooks call ``recorder.event(phase, name, tensor)`` and
``recorder.end_step()`` (the ``RecorderLike`` protocol of ``twinrun.frameworks.base``). A step ends
where the framework's hooks say it does; ``end_step`` commits it, compares it live with a reference
trace (``against``) and raises :class:`StopRun` at ``max_steps`` or at the first divergence.

>>> with record("run.trace", max_steps=50):      # doctest: +SKIP
...     train()
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from . import _active, ranks
from ._errors import BadTraceError, UsageError
from ._format import to_jsonable
from .comparison import Divergence, Structural, captured_phases, first_divergence
from .options import RecordOptions
from .trace import DEFAULT_VALUE_BUDGET, DEFAULT_VALUE_THRESHOLD, PHASES, Event, Phase, Status, Trace, TraceWriter
from .trace.batch import Pending, StepBatch
from .trace.digest import dtype_name

__all__ = ["MAX_OPEN_EVENTS", "Recorder", "StopRun", "active_recorder", "build_header", "no_step_reason", "record",
           "step"]

# A step that never ends (a program whose training loop twinrun does not recognise) would grow one
# open transaction without bound: past this many events, its further events are dropped and counted.
MAX_OPEN_EVENTS = 1_000_000


class StopRun(BaseException):
    """Raised by ``Recorder.end_step`` to end the run cleanly: ``reason`` is "max-steps", "diverged", or
    "bad-reference" (the ``against`` trace could not be read; ``Recorder.reference_error`` says why).

    A BaseException, so that a user's ``except Exception`` does not swallow it.
    """

    def __init__(self, reason: str, message: str = ""):
        super().__init__(message or reason)
        self.reason = reason


def active_recorder() -> Recorder | None:
    """The Recorder of the innermost open recording, or None."""
    return _active.recorder()


class Recorder:
    """Turns a program's tensors into trace events, step by step.

    Options (``RecordOptions``, or the same names as keywords): ``capture`` (phases to record),
    ``every`` (record every Nth step; steps are still counted), ``max_steps`` (after step
    ``max_steps - 1`` is committed, raise ``StopRun("max-steps")``), ``against`` (a reference trace
    compared at every ``end_step``, raising ``StopRun("diverged")`` at the first difference unless
    ``keep_going``). ``value_threshold`` / ``value_budget`` override the writer's (``TraceWriter``).

    A repeated ``(phase, name)`` within a step gets a call index: ``features.0``, ``features.0#1``.
    Hooks therefore pass plain names. The recorder is ``active_recorder()`` until closed.

    The open step's events are held in a ``StepBatch`` (small float32 tensors copied at the call and
    digested all at once as the step ends) and handed to the writer at ``end_step``, or earlier, still
    uncommitted, once its small tensors pass ``batch.ARENA_LIMIT`` bytes.
    """

    def __init__(self, writer: TraceWriter, options: RecordOptions | None = None, *,
                 value_threshold: int | None = None, value_budget: int | None = None, **option_values: Any):
        reference, options = _reference_and_options(options, option_values)
        self.options = options
        self.writer = writer
        if value_threshold is not None:
            writer.value_threshold = int(value_threshold)
        if value_budget is not None:
            writer.value_budget = int(value_budget)
        self.capture: frozenset[Phase] = frozenset(options.capture)
        self.every = options.every
        self.max_steps = options.max_steps
        self.keep_going = options.keep_going
        self.against: Trace | None = reference or (Trace.open(options.against) if options.against else None)
        self._ref_steps = set(self.against.steps()) if self.against is not None else set()
        self._ref_capture = (captured_phases(self.against) or list(PHASES)) if self.against is not None else []
        self._before: set[str] = set()          # phases identical with the reference so far
        self.step = 0
        self.divergence: Divergence | Structural | None = None
        self.stop_reason: str | None = None
        self.reference_error: str | None = None   # the reference could not be read mid-run
        self.closed = False
        self._batch = StepBatch()
        self._handed: list[Event] = []        # events of the open step already with the writer (--against)
        self._open_events = 0
        self._calls: dict[tuple[str, str], int] = {}
        self._adapters: list[Any] = []
        self._converters: dict[type, Any] = {}   # tensor type -> its adapter
        self._uninstall: list[Callable[[], None]] = []
        self._hooked: set[str] = set()
        self._step_listeners: list[Callable[[], None]] = []
        self._close_listeners: list[Callable[[], None]] = []
        self.seen: Counter[str] = Counter()   # hooks that fired: what a run without a step reports
        self.notes: list[str] = []
        self.dropped = 0                      # events past MAX_OPEN_EVENTS in one step
        self._lock = threading.RLock()
        rank = ranks.current()
        # Under a multi-process launcher: the header's rank, completed with the backend once known.
        self.distributed: dict[str, Any] | None = None if rank is None else rank.to_dict()
        writer.set_meta("recorder", options.to_dict())
        _active.push_recorder(self)

    # --- events ---
    @property
    def recording(self) -> bool:
        """Whether this step is recorded (``every``)."""
        return self.step % self.every == 0

    def wants(self, phase: str) -> bool:
        """Whether an event of ``phase`` now would be recorded; hooks use it to skip work."""
        return not self.closed and phase in self.capture and self.step % self.every == 0

    def event(self, phase: str, name: str, value: Any, *, per_sample: bool = False,
              same_as: Pending | Event | None = None) -> Pending | None:
        """Record ``value`` (a tensor of any loaded framework, a NumPy array or a number) as an event.

        The event is written as the step ends. Returns its handle (None when not recorded): passed
        back as ``same_as`` for the very same, unchanged tensor later in this step, its digest and
        stats are reused (hooks use it for a container's output, which is its last child's).
        """
        if phase not in PHASES:
            raise UsageError(f"unknown trace phase {phase!r}; use one of {', '.join(PHASES)}")
        if not self.wants(phase):
            return None
        if self._open_events >= MAX_OPEN_EVENTS:
            self.dropped += 1
            if self.dropped == 1:
                self.note(f"step {self.step} passed {MAX_OPEN_EVENTS:,} events without ending: its further events "
                          "are dropped; end steps with twinrun.step() if twinrun does not see them end")
            return None
        array, dtype = self._convert(value, name)
        with self._lock:
            key = (phase, name)
            n = self._calls.get(key, 0)
            self._calls[key] = n + 1
            ev = self._batch.add(phase, name if n == 0 else f"{name}#{n}", array, dtype, per_sample=per_sample,
                                 same_as=same_as, step=self.step, keep_up_to=self.writer.value_threshold,
                                 budget_left=self.writer.value_budget - self.writer.value_bytes)
            self._open_events += 1
            if self._batch.full:
                self._hand_over(adopt=False)
        return ev

    def _hand_over(self, *, adopt: bool) -> None:
        """The open step's events so far to the writer (uncommitted until ``commit_step``)."""
        pending, arena = self._batch.take()
        self._handed += self.writer.append_step(self.step, pending, arena, want_events=self.against is not None,
                                                adopt=adopt)

    def _convert(self, value: Any, name: str) -> tuple[np.ndarray, str]:
        if isinstance(value, np.ndarray):
            return value, dtype_name(value.dtype)
        adapter = self._converters.get(type(value))
        if adapter is not None:
            return adapter.to_numpy(value), adapter.dtype_name(value)
        from . import frameworks

        for refresh in (False, True):
            if refresh or not self._adapters:
                self._adapters = [a for a in frameworks.loaded() if a.name != "numpy"]
            for adapter in self._adapters:
                if adapter.is_tensor(value):
                    self._converters[type(value)] = adapter
                    return adapter.to_numpy(value), adapter.dtype_name(value)
        if isinstance(value, (bool, int, float, np.generic)):
            arr = np.asarray(value)
            return arr, str(arr.dtype)
        raise UsageError(f"cannot record {name!r}: a {type(value).__name__} is not a tensor of a loaded "
                         "framework, a NumPy array or a number")

    # --- what hooks report ---
    def add_step_listener(self, callback: Callable[[], None]) -> None:
        self._step_listeners.append(callback)

    def add_close_listener(self, callback: Callable[[], None]) -> None:
        self._close_listeners.append(callback)

    def saw(self, what: str) -> None:
        self.seen[what] += 1

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            warnings.warn(f"twinrun: {text}", RuntimeWarning, stacklevel=3)

    # --- steps ---
    def end_step(self) -> None:
        """End the current step: commit it, compare it with ``against``, and count it.

        Raises ``StopRun("diverged")`` at the first divergence (unless ``keep_going``) and
        ``StopRun("max-steps")`` once ``max_steps`` steps have ended.
        """
        with self._lock:
            if self.closed:
                return
            for listener in self._step_listeners:
                listener()   # what the step still owes (the parameters of an update made by hand)
            step = self.step
            self._calls, self._open_events = {}, 0
            if self.recording:
                self._hand_over(adopt=True)   # the writer holds the step now: meta set below commits with it
            if self.distributed is not None and self.distributed.get("backend") is None:
                self._learn_backend()
            if self.recording:
                events, self._handed = self._handed, []
                self.writer.commit_step(step)
                if self.against is not None and self.divergence is None and step in self._ref_steps:
                    try:
                        found = self._compare_step(step, events)
                    except BadTraceError as e:
                        # Raised inside the script's loop, a script's `except Exception` could swallow it:
                        # end the run (StopRun is a BaseException) and let the caller report it.
                        self.reference_error, self.stop_reason = str(e), "bad-reference"
                        raise StopRun("bad-reference", str(e)) from None
                    if found is not None:
                        self.divergence = found
                        self.writer.set_meta("divergence", self.divergence_record())
                        self.writer.set_status(Status.DIVERGED)
                        if not self.keep_going:
                            self.stop_reason = "diverged"
                            raise StopRun("diverged", f"diverged from {self.against.path} at step {step}")
            self.step = step + 1
            if self.max_steps is not None and self.step >= self.max_steps:
                self.stop_reason = "max-steps"
                if self.writer.status == Status.RUNNING:
                    self.writer.set_status(Status.STOPPED)
                raise StopRun("max-steps", f"stopped after {self.step} steps (max_steps)")

    def _learn_backend(self) -> None:
        """The process group's backend, known only once the script has started the group (before its
        first step, in any DDP program): stored with the step as the trace meta ``distributed``."""
        from . import frameworks

        group = frameworks.process_group()
        if group is None or self.distributed is None:
            return
        self.distributed = {**self.distributed, "backend": group["backend"]}
        if (group["rank"], group["world_size"]) != (self.distributed["rank"], self.distributed["world_size"]):
            self.note(f"the process group says rank {group['rank']} of {group['world_size']}, the launcher's "
                      f"variables rank {self.distributed['rank']} of {self.distributed['world_size']}: the trace "
                      "is named by the launcher's")
        self.writer.set_meta("distributed", self.distributed)

    def divergence_record(self) -> dict[str, Any] | None:
        """The live first divergence as plain data: ``{"kind": "numeric" | "structural", ...}``."""
        if self.divergence is None:
            return None
        kind = "numeric" if isinstance(self.divergence, Divergence) else "structural"
        return {"kind": kind, **self.divergence.to_dict()}

    def _compare_step(self, step: int, events: list[Event]) -> Divergence | Structural | None:
        # Compare only the phases both runs capture, as diff() does.
        assert self.against is not None
        keep = self.capture & set(self._ref_capture)
        mine = [e for e in events if e.phase in keep]
        found = first_divergence(mine, [e for e in self.against.events(step) if e.phase in keep],
                                 self.writer.value, self.against.value, before=self._before)
        if found is None:
            self._before |= {e.phase for e in mine}
        return found

    # --- hooks ---
    def install_hooks(self) -> None:
        """Install the recording hooks of every loaded framework, and of frameworks imported later."""
        from . import frameworks

        for name in frameworks.NAMES:
            frameworks.when_imported(frameworks.module_of(name), functools.partial(self._on_import, name))

    def _on_import(self, name: str, _module: object) -> None:
        self._hook(name)

    def _hook(self, name: str) -> None:
        if self.closed or name in self._hooked:
            return
        from . import frameworks

        self._hooked.add(name)
        self._uninstall.append(frameworks.get(name).install(self))

    def close(self, status: str | None = None) -> None:
        """Uninstall hooks and close the trace.

        ``status`` defaults to "stopped" after ``max_steps``, "diverged" after a divergence from
        ``against`` (also with ``keep_going``), else "complete".
        """
        with self._lock:
            if self.closed:
                return
            for listener in self._close_listeners:   # a step still pending (the last update by hand)
                try:
                    listener()
                except StopRun:
                    pass
            self.closed = True
            while self._uninstall:
                self._uninstall.pop()()
            _active.remove_recorder(self)
            if status is None or status == Status.COMPLETE:
                if self.reference_error is not None:
                    status = Status.FAILED
                elif self.divergence is not None:
                    status = Status.DIVERGED
                elif self.stop_reason == "max-steps":
                    status = Status.STOPPED
                else:
                    status = Status.COMPLETE
            from . import frameworks

            self.writer.close(status, meta={"frameworks": frameworks.used(), "seen": dict(self.seen),
                                            "notes": list(self.notes), "dropped": self.dropped})


# What Recorder.saw() counts, in words: (one, many).
_SEEN_WORDS = {
    "root forward": ("forward call of a model", "forward calls of a model"),
    "backward": ("backward pass", "backward passes"),
    "optimizer step": ("optimizer step", "optimizer steps"),
    "update without an optimizer": ("update of the parameters", "updates of the parameters"),
    "twinrun.step()": ("twinrun.step() call", "twinrun.step() calls"),
    "keras batch": ("Keras training batch", "Keras training batches"),
    "tracer step": ("tracer step", "tracer steps"),
}


def no_step_reason(seen: dict[str, int]) -> str:
    """Why a run recorded no step, from the hooks that fired, and what to do; one sentence."""
    parts = []
    for what, n in sorted(seen.items()):
        one, many = _SEEN_WORDS.get(what, (what, what))
        if n:
            parts.append(f"{n:,} {one if n == 1 else many}")
    fired = "; it saw " + ", ".join(parts) if parts else "; no hook of a framework fired"
    return ("no training step was recorded: twinrun saw no optimizer step, Keras training batch, tracer step or "
            "update of the parameters after a backward pass" + fired + ". End each step with "
            "`twinrun.step()` (or use a torch.optim optimizer, Keras fit or twinrun.keras.Callback, "
            "twinrun.jax.Tracer)")


def step() -> None:
    """End the current training step of the active recording (nothing without one).

    For a training loop twinrun does not recognise on its own (no ``torch.optim`` optimizer, no Keras
    ``fit``, no tracer): call it once at the end of each step. Under ``--max-steps N`` the N-th call
    ends the script cleanly (``StopRun``).

    >>> for x, y in batches:            # doctest: +SKIP
    ...     update(model, x, y)
    ...     twinrun.step()
    """
    rec = _active.recorder()
    if rec is not None:
        rec.saw("twinrun.step()")
        rec.end_step()


def _reference_and_options(options: RecordOptions | None,
                           values: dict[str, Any]) -> tuple[Trace | None, RecordOptions]:
    """The reference trace when ``against`` is an open ``Trace``, and the validated options."""
    against = values.get("against")
    reference = against if isinstance(against, Trace) else None
    if options is None:
        options = RecordOptions.create(**{**values, "against": reference.path if reference else against})
    elif set(values) - {"against"}:
        raise UsageError(f"give the recorder options= or keywords, not both ({', '.join(values)})")
    return reference, options


def build_header(extra: dict[str, Any] | None = None, *, lock: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The trace header: twinrun's version, the command, seeds, determinism settings, environment (with
    the sha256 of the environment's lock: ``lock``, else the one found next to the script), and under a
    multi-process launcher the rank (``distributed``).

    Secrets are redacted by value as well as by name (``twinrun.redact``): the command line and the
    script's arguments (``--api-key X``), URL passwords and signed-URL signatures in variables.
    """
    from . import __version__, determinism, env, ranks
    from .lock import lock_fingerprint
    from .redact import redact_json

    seeds = _active.current_seeds()
    environment = env.capture()
    script = (extra or {}).get("script")
    found = lock_fingerprint(lock, script=script if isinstance(script, str) else None)
    environment["lock"] = None if found is None else found.to_dict()
    header: dict[str, Any] = {
        "twinrun": __version__,
        "command": list(sys.argv),
        "cwd": os.getcwd(),
        "python": sys.version.split()[0],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seeds": None if seeds is None else to_jsonable(seeds.to_dict()),
        "determinism": to_jsonable(determinism.current_settings()),
        "env": to_jsonable(environment),
    }
    rank = ranks.current()
    if rank is not None:
        header["distributed"] = rank.to_dict()
    if extra:
        header.update(to_jsonable(extra))
    return redact_json(header)  # type: ignore[no-any-return]


@contextlib.contextmanager
def record(path: str | os.PathLike[str], *, header: dict[str, Any] | None = None,
           value_threshold: int = DEFAULT_VALUE_THRESHOLD, value_budget: int = DEFAULT_VALUE_BUDGET,
           options: RecordOptions | None = None, lock: str | os.PathLike[str] | None = None,
           protected: Iterable[tuple[str, str | os.PathLike[str] | None]] = (),
           **option_values: Any) -> Iterator[Recorder]:
    """Record everything the program computes inside the block into the trace at ``path``.

    Hooks the frameworks already imported and those imported inside the block. ``max_steps`` and
    ``against`` end the block early and cleanly (``StopRun`` is caught here). The other options
    are ``Recorder``'s. ``lock``: the environment's lock file, whose sha256 the header carries (default:
    the one found next to the script). Yields the Recorder. ``path`` must be new, empty or a trace (never
    another file, the ``against`` reference or a ``protected`` ``(label, path)``: a one-line ``UsageError``).

    >>> with record("run.trace", max_steps=50):      # doctest: +SKIP
    ...     train()
    """
    reference, options = _reference_and_options(options, option_values)   # bad options: before the file
    keep = [*protected, ("the --against reference", reference.path if reference else options.against)]
    writer = TraceWriter(path, build_header(header, lock=lock), value_threshold=value_threshold,
                         value_budget=value_budget, protected=keep)
    try:
        recorder = Recorder(writer, options, against=reference) if reference else Recorder(writer, options)
    except BaseException:
        writer.close(Status.FAILED)
        raise
    try:
        recorder.install_hooks()
        yield recorder
    except StopRun:
        recorder.close()
        if recorder.reference_error is not None:
            raise BadTraceError(recorder.reference_error) from None
    except BaseException:
        recorder.close(Status.FAILED)
        raise
    else:
        recorder.close()
