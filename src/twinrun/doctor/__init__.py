"""Doctor: name the cause of a divergence by experiment, and test portability across threads and CPUs.

``diagnose(script)`` runs the script twice as the user would (the baseline). When the runs part, it
changes one thing at a time, reruns twice, and names a cause only when the change that removes the
divergence was observed (or when the trace itself proves it: the same samples in another order):
``attribution``. When the baseline repeats, it reruns with another thread count and with each lower
CPU instruction set this CPU can emulate, and says where those part: ``portability``. With
``against=`` it compares a live run with a trace made on another machine and tries to reproduce that
trace here by emulating its environment: ``two_machines``. The runs themselves: ``experiments``.

>>> d = diagnose("train.py", max_steps=20)      # doctest: +SKIP
>>> d.verdict, d.cause, d.first_divergence.phase
('not-reproducible', 'unseeded-init', 'init')
>>> print(d.fix)
Seed every RNG before the model is built: ...
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .._errors import UsageError
from ..options import RunOptions, positive_int, timeout_seconds
from .attribution import attribute
from .census import explain_kernel
from .experiments import PARALLEL, ExperimentRunner, Plan
from .model import CAUSES, Act, Cause, Diagnosis, Experiment, Verdict, Where
from .portability import CHECKS, reproducible
from .two_machines import open_against, two_machines

__all__ = ["CAUSES", "Act", "Cause", "Diagnosis", "Experiment", "Plan", "Verdict", "Where", "diagnose"]


def diagnose(script: str | os.PathLike[str], args: Sequence[str] = (), *, max_steps: int = 20,
             against: str | os.PathLike[str] | None = None, portability: bool | Sequence[str] = True,
             parallel: int | None = None, timeout: float | None = None, keep: str | os.PathLike[str] | None = None,
             progress: Callable[[str], None] | None = None, nproc: int | None = None) -> Diagnosis:
    """Run the experiments on ``script`` and return a :class:`Diagnosis`.

    ``portability``: True (thread count and CPU ISA), False, or a subset of ``("thread-count",
    "cpu-isa")``. ``against``: a trace made elsewhere (two-machine mode). ``keep``: a folder to keep
    the traces in (default: a temporary folder, removed). A run that fails raises
    :class:`ScriptFailedError` naming the experiment; bad input raises :class:`UsageError`. ``nproc``: every
    run is that many ranks through torch.distributed, compared rank k against rank k, and the baseline's
    replicas are evidence (``doctor.ranks``).
    """
    options = RunOptions.create(script, args, max_steps=positive_int("max_steps", max_steps, allow_none=False),
                                nproc=nproc)
    timeout = timeout_seconds(timeout)
    if options.nproc is not None:
        parallel = 1   # each run is already N processes
    if portability is True:
        checks: tuple[str, ...] = CHECKS
    elif not portability:
        checks = ()
    else:
        checks = tuple(portability)
        bad = [c for c in checks if c not in CHECKS]
        if bad:
            raise UsageError(f"unknown portability check {bad[0]!r}; choose thread-count and/or cpu-isa")
    reference = open_against(str(against)) if against is not None else None
    say = progress or (lambda _m: None)
    t0 = time.perf_counter()
    workdir = str(keep) if keep else tempfile.mkdtemp(prefix="twinrun-doctor-")
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--keep-traces {workdir}: cannot make that folder ({e.strerror}); give a folder "
                         "you can write in") from None
    runner = ExperimentRunner(options, workdir, parallel or PARALLEL, timeout, say)
    path = Path(options.script)
    try:
        if reference is not None:
            d = two_machines(runner, path, reference)
        elif options.nproc is not None:
            d = _ranks(runner, path, checks)
        else:
            baseline = runner.pairs([Plan("baseline", "nothing: two runs as you run the script")])[0]
            d = (reproducible(runner, path, baseline, checks) if baseline.identical
                 else attribute(runner, path, baseline))
            explain_kernel(d, runner)   # deterministic kernels removed it: the census names the op (issue 11)
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    d.reruns, d.seconds, d.max_steps = runner.launched, time.perf_counter() - t0, max_steps
    return d


def _ranks(runner: ExperimentRunner, path: Path, checks: tuple[str, ...]) -> Diagnosis:
    """Under ``--nproc``: the baseline, its replica check (evidence without a rerun), then as usual."""
    from .ranks import replica_diagnosis, replica_evidence

    baseline = runner.pairs([Plan("baseline", f"nothing: two runs of {runner.options.nproc} ranks as you run the "
                                              "script")])[0]
    evidence, check = replica_evidence(baseline)
    d = replica_diagnosis(path, baseline, check, [baseline, evidence])
    if d is None:
        d = reproducible(runner, path, baseline, checks) if baseline.identical else attribute(runner, path, baseline)
        d.evidence.insert(1, evidence)
    d.nproc, d.replicas = runner.options.nproc, check.to_dict()
    return d
