"""``twinrun demo``: the whole story on a small digits CNN, in fresh processes.

1. Seeded twice: the traces are bitwise identical, every step and layer.
2. Seeded, 1 thread vs 2 threads: the runs part, and twinrun names the first step, phase and layer.
3. Unseeded twice: the runs part at ``init``.
4. Why? ``twinrun doctor`` on the unseeded script names the cause by intervention and the fix.

Returns plain data (``DemoResult.to_dict()``); the CLI renders it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SCRIPT", "DemoResult", "Scenario", "run_demo"]

SCRIPT = Path(__file__).with_name("_demo") / "digits_cnn.py"


@dataclass
class Scenario:
    title: str
    expect_identical: bool
    identical: bool
    sentence: str
    comparison: dict
    runs: list[dict]

    @property
    def as_expected(self) -> bool:
        return self.identical == self.expect_identical

    def to_dict(self) -> dict:
        return {**asdict(self), "as_expected": self.as_expected}


@dataclass
class DemoResult:
    seeds: dict
    determinism: dict
    environment: dict
    scenarios: list[Scenario] = field(default_factory=list)
    diagnosis: dict | None = None

    @property
    def ok(self) -> bool:
        return all(s.as_expected for s in self.scenarios) and (
            self.diagnosis is None or self.diagnosis.get("cause") == "unseeded-init")

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "seeds": self.seeds,
            "determinism": self.determinism,
            "environment": self.environment,
            "scenarios": [s.to_dict() for s in self.scenarios],
            "diagnosis": self.diagnosis,
        }


def _summary(fingerprint: dict) -> dict:
    """The few environment facts a reader of the demo wants first."""
    fw = fingerprint.get("frameworks", {})
    torch_env = fw.get("torch", {}) if isinstance(fw, dict) else {}
    cpu = fingerprint.get("cpu", {})
    return {
        "python": fingerprint.get("python", {}).get("version") if isinstance(fingerprint.get("python"), dict)
        else fingerprint.get("python"),
        "cpu": cpu.get("model") if isinstance(cpu, dict) else cpu,
        "torch": torch_env.get("version"),
        "torch_cpu_capability": torch_env.get("cpu_capability"),
        "torch_threads": torch_env.get("num_threads"),
        "blas": (torch_env.get("config") or {}).get("blas_info"),
    }


def run_demo(*, steps: int = 20, workdir: str | Path | None = None,
             progress: Callable[[str], None] = lambda _m: None) -> DemoResult:
    """Run the three scenarios and return what happened."""
    from . import determinism, env, frameworks, seeding

    frameworks.get("torch")   # the demo is a PyTorch demo: its reports cover torch
    from .comparison import diff
    from .runner import launch

    seeds = seeding.seed_everything(0, hash_seed="ignore")
    with determinism.deterministic(threads=1) as report:
        det = report.to_dict()
    fingerprint = env.capture()

    tmp = tempfile.TemporaryDirectory(prefix="twinrun-demo-") if workdir is None else None
    root = Path(workdir) if workdir is not None else Path(tmp.name if tmp else ".")
    root.mkdir(parents=True, exist_ok=True)
    args = ["--steps", str(steps)]
    plans: list[tuple[str, bool, list[dict[str, Any]]]] = [
        ("Seeded, twice, in fresh processes", True,
         [dict(tag="seeded-a", args=args), dict(tag="seeded-b", args=args)]),
        ("Seeded, 1 thread vs 2 threads", False,
         [dict(tag="threads-1", args=args, threads=1), dict(tag="threads-2", args=args, threads=2)]),
        ("Unseeded, twice", False,
         [dict(tag="unseeded-a", args=[*args, "--unseeded"]), dict(tag="unseeded-b", args=[*args, "--unseeded"])]),
    ]
    result = DemoResult(seeds=seeds.to_dict(), determinism=det, environment=_summary(fingerprint))
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            for title, expect, runs in plans:
                progress(f"demo: {title} ...")
                futures = [
                    pool.submit(launch, SCRIPT, r["args"], trace_path=root / f"{r['tag']}.trace",
                                threads=r.get("threads"))
                    for r in runs
                ]
                done = [f.result() for f in futures]
                for r, res in zip(runs, done):
                    if res.exit_code != 0:
                        from ._errors import ScriptFailedError

                        raise ScriptFailedError(f"demo run {r['tag']} failed (exit {res.exit_code}): "
                                                f"{res.stderr.strip().splitlines()[-1] if res.stderr.strip() else ''}")
                comparison = diff(done[0].trace_path, done[1].trace_path)
                result.scenarios.append(Scenario(
                    title=title, expect_identical=expect, identical=comparison.identical,
                    sentence=comparison.sentence(), comparison=comparison.to_dict(),
                    runs=[{"tag": r["tag"], "threads": r.get("threads"), "seconds": round(d.seconds, 2)}
                          for r, d in zip(runs, done)],
                ))
        progress("demo: twinrun doctor on the unseeded script ...")
        from .doctor import diagnose

        result.diagnosis = diagnose(SCRIPT, [*args, "--unseeded"], max_steps=min(steps, 5),
                                    portability=False, keep=root / "doctor").to_dict()
    finally:
        if tmp is not None:
            tmp.cleanup()
    return result
