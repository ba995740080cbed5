"""The contract every framework adapter fulfils, stated in one place.

An adapter is one package under ``twinrun/frameworks/`` whose ``Adapter`` subclass owns every fact
about its framework. Two halves:

- *class level*, usable without importing the framework (doctor runs in a parent that never imports
  it): its name, top-level module and pip extra; how fix sentences speak of it (``words``); the
  interventions it offers; the instruction-set and thread-count reruns that can show whether another
  machine would give other numbers; how to emulate another machine's environment.
- *instance level*, created only once the framework is imported (``frameworks.get``): seeding,
  determinism switches, environment facts, tensor conversion, recording hooks.

A subclass that leaves an abstract method out fails when it is defined, not later as a silent no-op.
Framework hooks talk to the recorder through the small ``RecorderLike`` protocol.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

if TYPE_CHECKING:
    from ..seeding import Seeds
    from ..trace.batch import Pending
    from ..trace.events import Event

__all__ = ["Adapter", "Bits", "EnvVar", "FixWords", "Intervention", "InterventionContext", "LayerBits", "ProbeCall",
           "ProbeSink", "RecorderLike", "Switch", "Variant"]


class RecorderLike(Protocol):
    """What framework hooks may call on a recorder (``twinrun.recording.Recorder`` implements it)."""

    step: int
    every: int
    capture: frozenset[Any]

    def wants(self, phase: str) -> bool: ...

    def event(self, phase: str, name: str, value: Any, *, per_sample: bool = False,
              same_as: Pending | Event | None = None) -> Pending | None:
        """Record ``value``; the handle returned may come back as ``same_as`` for the same, unchanged tensor."""

    def end_step(self) -> None: ...

    def add_step_listener(self, callback: Callable[[], None]) -> None:
        """``callback()`` runs as any step ends, before it is committed (to record what the step owes)."""

    def add_close_listener(self, callback: Callable[[], None]) -> None:
        """``callback()`` runs as the recording closes (to end a step still pending)."""

    def saw(self, what: str) -> None:
        """Count a hook that fired (``"backward"``, ``"optimizer step"``): what a run without steps reports."""

    def note(self, text: str) -> None:
        """Say something the user should know about this recording (once; kept in the trace)."""


@dataclass
class Switch:
    """One determinism setting: how to read it, how to set it, and the value twinrun wants.

    ``get`` returns the current value (JSON-ready); ``set`` applies a value previously returned by
    ``get`` or ``want``. ``note`` says, in one sentence, why the setting matters.
    """

    name: str
    get: Callable[[], Any]
    set: Callable[[Any], None]
    want: Any
    note: str = ""
    # Called after set(); returns a warning string when the setting comes too late to act
    # (e.g. CUBLAS_WORKSPACE_CONFIG after CUDA initialised), else None.
    too_late: Callable[[], str | None] | None = None
    restorable: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EnvVar:
    """Environment variables a framework reads (``pattern``: a name or a glob such as ``TF_*``), for the
    environment fingerprint's allow-list and its ranked diff. ``rank`` is ``numerics``, ``possible`` or
    ``none`` (recorded, harmless); ``excluded`` keeps matching names out of every fingerprint (another
    program's variables under the same prefix)."""

    pattern: str
    rank: str
    why: str


@dataclass(frozen=True)
class Variant:
    """A rerun in another setting that another machine may have: environment variables for the child,
    a thread count, interventions. ``name`` is what a user would set (``ATEN_CPU_CAPABILITY=avx2``);
    ``cause`` what a difference would mean (``cpu-isa``, ``thread-count``, ``environment``); ``advice``,
    for a setting that is not an instruction set, what to do when it gives other numbers."""

    name: str
    cause: str
    note: str
    env: Mapping[str, str] = field(default_factory=dict)
    threads: int | None = None
    interventions: tuple[str, ...] = ()
    advice: str = ""

    def shell(self) -> str:
        """The setting as a command-line prefix: ``ATEN_CPU_CAPABILITY=avx2 OMP_NUM_THREADS=2``."""
        parts = [f"{k}={v}" for k, v in self.env.items()]
        if self.threads is not None:
            parts.append(f"OMP_NUM_THREADS={self.threads}")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "cause": self.cause, "note": self.note, "env": dict(self.env),
                "threads": self.threads, "interventions": list(self.interventions)}


@dataclass(frozen=True)
class FixWords:
    """How doctor's fix sentences speak of a framework (each a code snippet in backquotes)."""

    seed: str           # how to seed every RNG before the model is built ({script} is the script's name)
    fixed_seed: str     # a seed from a fixed number instead of the clock
    pin_threads: str    # how to pin the thread count ({n}: the count, {m}: n - 1)
    deterministic: str  # the framework's own deterministic-kernels switch
    content_tail: str = "."      # ends the fix for unseeded data content (torch: where workers draw)


class InterventionContext(Protocol):
    """What an intervention may use: report an act at the program's call site, draw seeds."""

    def note(self, name: str, what: str, api: str) -> None:
        """Report that intervention ``name`` acted at the caller's line of the user's program: ``what``
        happened ("random.Random() without a seed"), through ``api`` (the call to fix: "random.Random()")."""

    def draw(self, name: str, api: str, kind: str) -> None:
        """Report that the caller's line of the program drew through ``api`` (kind ``order``, ``content``
        or ``seed``) from an RNG the program left unseeded (``name``: the intervention that seeded it)."""

    def sequence(self, kind: str) -> np.random.SeedSequence:
        """The seed sequence for the next unseeded object of ``kind``: stable in program order."""

    def seeds(self) -> Seeds:
        """The Seeds interventions draw from (the active ones, else ``TWINRUN_SEED``, else 0)."""

    def fixed_sequence(self, label: str) -> np.random.SeedSequence:
        """The seed sequence named ``label`` (e.g. for a global RNG seeded once)."""

    def from_program(self, depth: int) -> bool:
        """Whether the frame ``depth`` levels above the caller is the user's program (not a library)."""


@dataclass(frozen=True)
class Intervention:
    """A small, named change to a program's unseeded randomness (or its CPUs), applied before the script.

    ``kind``: ``order`` (decides the order of samples), ``content`` (the values drawn), ``clock``,
    ``cpu``, ``reduction`` (the order a multi-process sum adds in). ``apply`` changes the process
    (patching constructors, seeding globals) and reports every new call site through the context.
    ``fix`` is the fix sentence when this intervention is the one that removed a divergence:
    ``{where}`` stands for the call sites (`` `api` at file:line``), ``{tail}`` for the framework's own
    advice (``FixWords.content_tail``); ``priority`` picks among several that acted (higher wins)."""

    name: str
    description: str
    kind: str
    apply: Callable[[InterventionContext], None]
    fix: str = ""
    priority: int = 0


class Adapter(ABC):
    """Base class of the framework adapters; see the module docstring."""

    name: ClassVar[str]            # twinrun's name for the framework: "numpy", "torch", "tensorflow", "jax"
    module: ClassVar[str]          # the top-level module whose presence in sys.modules activates the adapter
    extra: ClassVar[str | None]    # the pip extra that installs it: pip install 'twinrun[extra]'
    words: ClassVar[FixWords]
    env_vars: ClassVar[tuple[EnvVar, ...]] = ()   # the environment variables it reads

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        missing = [n for n in _ABSTRACT if getattr(getattr(cls, n, None), "__isabstractmethod__", False)]
        missing += [a for a in ("name", "module", "extra", "words") if not hasattr(cls, a)]
        if missing:
            raise TypeError(f"framework adapter {cls.__name__} does not define {', '.join(missing)}")

    # --- class level: no framework import ---------------------------------------------------------
    @classmethod
    @abstractmethod
    def interventions(cls) -> list[Intervention]:
        """The interventions this framework offers doctor (possibly none)."""

    @classmethod
    @abstractmethod
    def isa_variants(cls, flags: set[str], environ: Mapping[str, str]) -> tuple[list[Variant], list[str]]:
        """Reruns at each lower instruction set this CPU (``flags``) can hold the framework to, and one
        line per setting that cannot be tried here, saying why. Never above the CPU's own level (SIGILL)."""

    @classmethod
    @abstractmethod
    def thread_variant(cls, count: int) -> Variant | str | None:
        """A rerun with ``count`` threads for this framework's kernels, a sentence saying why there can
        be none here, or None when the framework has no threads of its own to set."""

    @classmethod
    def default_threads(cls) -> int | None:
        """The thread count the framework's kernels use by default here (None: unknown without importing)."""
        return None

    @classmethod
    def emulations(cls, other_env: Mapping[str, Any]) -> list[Variant]:
        """Reruns that make this machine compute like the one whose environment fingerprint is
        ``other_env`` (two-machine mode); none by default."""
        return []

    # --- instance level: the framework is imported ---------------------------------------------
    @abstractmethod
    def seed(self, seed: int) -> dict[str, Any]:
        """Seed the framework's global RNGs; return ``{what: value}`` of what was seeded."""

    @abstractmethod
    def switches(self, *, strict: bool, threads: int | None) -> list[Switch]:
        """The determinism switches of this framework."""

    @abstractmethod
    def environment(self) -> dict[str, Any]:
        """JSON-ready facts that can change this framework's numerics (versions, builds, flags)."""

    @abstractmethod
    def is_tensor(self, x: Any) -> bool:
        """Whether ``x`` is one of this framework's tensors."""

    @abstractmethod
    def to_numpy(self, x: Any) -> np.ndarray:
        """A host NumPy view (no copy when possible) of a tensor, with its dtype's raw bytes.

        Dtypes NumPy lacks (bfloat16) come back as a same-width integer view; ``dtype_name`` gives
        the real name for digests and traces.
        """

    @abstractmethod
    def dtype_name(self, x: Any) -> str:
        """The tensor's dtype as traces name it (``float32``, ``bfloat16``)."""

    @abstractmethod
    def install(self, recorder: RecorderLike) -> Callable[[], None]:
        """Hook the framework so that ``recorder`` sees its events; return the uninstall callable."""

    def in_use(self) -> bool:
        """Whether the program has used the framework (imported is not always used: Keras imports JAX)."""
        return True

    # --- multi-process runs: none by default ---------------------------------------------------
    @classmethod
    def launcher(cls, nproc: int) -> list[str] | None:
        """The command that starts ``nproc`` ranks of a Python module on this machine, up to (not with)
        ``-m MODULE ARGS``; None when the framework has no launcher. Never imports the framework."""
        return None

    def process_group(self) -> dict[str, Any] | None:
        """``{"backend", "rank", "world_size"}`` of this process's started process group, or None."""
        return None

    def end_process_group(self) -> bool:
        """Shut down a process group the script left started (after it ended); True when there was one."""
        return False

    def install_probe(self, sink: ProbeSink, *, max_calls: int,
                      threads: int | None = None) -> Callable[[], None] | None:
        """Probe-recording mode (``twinrun probe SCRIPT``): hand ``sink.record`` each forward call of a
        root model made without gradients, up to ``max_calls`` of them, as a :class:`ProbeCall` (and
        ``sink.skip`` a line for each such call it does not record); set the framework's thread count
        to ``threads`` first. Return the uninstall callable, or None where the framework has no
        zero-code probe (Keras and JAX: ``twinrun.probe(fn, batch)``)."""
        return None


# An output array as bits: (the values as unsigned integers of the float's width, "float", or
# "bfloat16" for its 16-bit patterns) or (int64 values, "int"); the first dimension is the batch.
Bits = tuple[np.ndarray, str]
# (a submodule's name, with "#k" for its k-th call; its output arrays), in the order produced.
LayerBits = list[tuple[str, list[Bits]]]


class ProbeCall(Protocol):
    """One recorded no-grad forward call of a root model, as the probe-recording mode hands it over.

    ``outputs``/``layers`` are the bits of the script's own call; ``run(start, stop)`` calls the
    model again on rows ``[start, stop)`` of the same inputs (no gradients, the RNG state restored
    after), with its submodules' outputs. ``inputs`` are the input arrays' bits and ``state`` a digest
    of the parameters and buffers, so that calls recorded in other processes can be matched.
    ``training``: the model is in training mode with submodules that compute otherwise then
    (dropout, batch norm)."""

    index: int
    label: str
    rows: int
    threads: int | None           # the framework's thread count at the call
    training: bool
    state: str
    outputs: list[Bits]
    layers: LayerBits
    inputs: list[Bits]

    def run(self, start: int, stop: int) -> tuple[list[Bits], LayerBits]: ...


class ProbeSink(Protocol):
    """What the probe-recording mode hands its calls to (``twinrun.probes.child`` implements it)."""

    def record(self, call: ProbeCall) -> None: ...

    def skip(self, what: str) -> None: ...


_ABSTRACT = sorted(name for name, value in inspect.getmembers(Adapter)
                   if getattr(value, "__isabstractmethod__", False))
