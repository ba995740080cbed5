"""Measure the multi-process facts of README.md on this machine and print them (one JSON document).

    python tests/scripts/ddp/measure.py [--only launch,repeat,threads,buckets,topology,replicas,exit,twinrun-exit]
                                        [--repeats 3] [--out facts.json]

Every training launch is 2 ranks of gloo on CPU (4 where named), 5 steps of a tiny MLP on digits.
Launch times are medians of ``--repeats`` runs, interleaved, on a machine shared with others: read
them as ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ddp_harness as h

SECTIONS = ("launch", "repeat", "threads", "buckets", "allreduce", "topology", "replicas", "exit", "twinrun-exit")


def launch_facts(folder: Path, repeats: int) -> dict:
    probe = str(h.HERE / "ddp_probe.py")
    cases = {
        "torchrun_no_torch": h.torchrun_command(probe, ["--no-torch"]),
        "python_no_torch": [sys.executable, probe, "--no-torch"],
        "torchrun_init_gloo": h.torchrun_command(probe, []),
        "torchrun_ddp_train_5_steps": h.torchrun_command(h.HERE / "ddp_train.py", []),
        "python_single_global_batch_5_steps": [sys.executable, str(h.HERE / "single_global_batch.py")],
        # what `check --nproc 2` runs twice: twinrun run as the launched program, one trace per rank
        "torchrun_twinrun_run_5_steps": [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "--no-python",
            "bash", "-c", (f"exec {sys.executable} -m twinrun run -q -o {folder}/out.rank$RANK.trace "
                          f"{h.HERE / 'ddp_train.py'}")],
    }
    src = str(h.HERE.parents[2] / "src")  # twinrun from this checkout
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    times: dict[str, list[float]] = {k: [] for k in cases}
    rows = []
    for _ in range(repeats):
        for name, cmd in cases.items():
            r = h.run(cmd, env=env)
            assert r.returncode == 0, r.stderr[-2000:]
            times[name].append(r.seconds)
            if name == "torchrun_init_gloo":
                rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    # a single process of the probe that runs init_process_group needs the variables torchrun sets
    one = h.run([sys.executable, probe], env={"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                                              "MASTER_PORT": "29533"})
    return {"seconds_median": {k: round(statistics.median(v), 2) for k, v in times.items()},
            "seconds_all": {k: [round(x, 2) for x in v] for k, v in times.items()},
            "ranks": sorted(rows, key=lambda r: r["rank"]),
            "single_process_group_of_one": json.loads(one.stdout.splitlines()[-1]) if one.returncode == 0
            else one.stderr[-500:]}


def _train(folder: Path, name: str, args: list[str], nproc: int = 2, threads: int | None = None,
           script: str = "ddp_train.py") -> dict[int, list[dict]]:
    out = folder / name
    env = {"OMP_NUM_THREADS": str(threads)} if threads else None
    h.torchrun(script, [*args, "--dump", str(out)], nproc=nproc, env=env)
    return h.read_dump(out)


def _same(a: dict[int, list[dict]], b: dict[int, list[dict]]) -> bool:
    return all(all(h.params_equal(a[r], b[r])) for r in a)


def repeat_facts(folder: Path) -> dict:
    out = {}
    for hidden in (32, 2048):
        for threads in (1, 2):
            args = ["--hidden", str(hidden)]
            a = _train(folder, f"rep-{hidden}-{threads}-a", args, threads=threads)
            b = _train(folder, f"rep-{hidden}-{threads}-b", args, threads=threads)
            out[f"hidden{hidden}_threads{threads}"] = {
                "bitwise_repeat": _same(a, b), "replicas_consistent": h.replica_divergence(a) is None,
                "threads_seen": a[0][1]["threads"]}
    return out


def thread_facts(folder: Path) -> dict:
    out = {}
    for hidden in (32, 2048):
        one = _train(folder, f"thr-{hidden}-1", ["--hidden", str(hidden), "--values"], threads=1)
        two = _train(folder, f"thr-{hidden}-2", ["--hidden", str(hidden), "--values"], threads=2)
        dist = h.value_distance(h.read_values(folder / f"thr-{hidden}-1", 0),
                                h.read_values(folder / f"thr-{hidden}-2", 0))
        out[f"hidden{hidden}"] = {"identical": _same(one, two),
                                  "first_difference": h.first_param_difference(one[0], two[0]),
                                  "per_step": dist}
    return out


BUCKET_VARIANTS = {
    "bucket_cap_mb_0.001": ["--bucket-cap-mb", "0.001"],
    "bucket_cap_mb_0.1": ["--bucket-cap-mb", "0.1"],
    "gradient_as_bucket_view": ["--gradient-as-bucket-view"],
    "static_graph": ["--static-graph"],
    "find_unused_parameters": ["--find-unused-parameters"],
}


def bucket_facts(folder: Path) -> dict:
    out = {}
    for nproc in (2, 4):
        for hidden in (32, 2048):
            base_args = ["--hidden", str(hidden)]
            base = _train(folder, f"bkt-{nproc}-{hidden}-default", base_args, nproc=nproc)
            res = {}
            for name, extra in BUCKET_VARIANTS.items():
                d = _train(folder, f"bkt-{nproc}-{hidden}-{name}", [*base_args, *extra], nproc=nproc)
                res[name] = {"identical_to_default": _same(base, d),
                             "first_difference": h.first_param_difference(base[0], d[0]),
                             "replicas_consistent": h.replica_divergence(d) is None}
            out[f"nproc{nproc}_hidden{hidden}"] = res
    return out


def allreduce_facts(folder: Path) -> dict:
    out = {}
    for nproc in (2, 3, 4):
        r = h.torchrun("ddp_allreduce_order.py", [], nproc=nproc)
        out[f"nproc{nproc}"] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def topology_facts(folder: Path) -> dict:
    out = {}
    for nproc in (2, 4):
        ddp = _train(folder, f"top-ddp-{nproc}", ["--values"], nproc=nproc)
        for threads in (1, 2):
            name = f"top-single-{nproc}-{threads}"
            h.single("single_global_batch.py", ["--world", str(nproc), "--values", "--dump", str(folder / name)],
                     env={"OMP_NUM_THREADS": str(threads)})
            one = h.read_dump(folder / name)[0]
            out[f"nproc{nproc}_vs_single_threads{threads}"] = {
                "params_equal_per_step": h.params_equal(one, ddp[0]),
                "first_difference": h.first_param_difference(one, ddp[0]),
                "per_step": h.value_distance(h.read_values(folder / name, 0),
                                             h.read_values(folder / f"top-ddp-{nproc}", 0)),
                "loss_single": [r["loss"] for r in one], "loss_rank0": [r["loss"] for r in ddp[0]]}
    return out


def replica_facts(folder: Path) -> dict[str, Any]:
    def differing(d: dict[int, list[dict]]) -> list[list[str]]:
        return [[n for n, v in d[0][i]["params"].items() if any(d[r][i]["params"][n] != v for r in d)]
                for i in range(len(d[0]))]

    out: dict[str, Any] = {}
    ok = _train(folder, "rep-ok", [])
    out["ddp_train"] = {"first_divergence": h.replica_divergence(ok), "same_inputs": h.same_inputs(ok)}
    for when in ("before", "after"):
        d = _train(folder, f"rogue-{when}", ["--rogue-when", when], script="ddp_rogue_rank.py")
        out[f"rogue_{when}"] = {"first_divergence": h.replica_divergence(d),
                                "differing_per_step(from -1)": differing(d)}
    s = _train(folder, "same-seed", [], script="ddp_same_data_seed.py")
    out["same_data_seed"] = {"first_divergence": h.replica_divergence(s), "same_inputs": h.same_inputs(s)}
    p = _train(folder, "init-per-rank", ["--init-seed-per-rank"])
    out["init_seed_per_rank"] = {"first_divergence": h.replica_divergence(p),
                                 "init_equal_to_seeded": p[0][0]["params"] == ok[0][0]["params"]}
    return out


def exit_facts() -> dict:
    script = h.HERE / "ddp_early_exit.py"
    out = {}
    for name, args in {"one_rank_exit0": ["--code", "0"], "one_rank_exit3": ["--code", "3"],
                       "one_rank_raises": ["--code", "raise"],
                       "all_ranks_exit0_destroy_first": ["--exit-rank", "-1", "--destroy-first"],
                       "all_ranks_exit0_no_destroy": ["--exit-rank", "-1"],
                       "normal_end_no_destroy": ["--exit-step", "99", "--no-destroy"]}.items():
        codes = []
        for _ in range(3):
            r = h.run(h.torchrun_command(script, args), timeout=300)
            codes.append({"torchrun_exit": r.returncode, "seconds": round(r.seconds, 1),
                          "abort": "terminate called" in r.stderr,
                          "peer_closed": "Connection closed by peer" in r.stderr})
        out[name] = codes
    return out


def twinrun_exit_facts(repeats: int) -> dict:
    """How often a rank aborts at interpreter exit: the script ending without destroy_process_group()
    under plain torchrun, against the same script under `twinrun run --nproc 2` (which destroys the
    group and leaves by os._exit after the atexit handlers), interleaved."""
    script = h.HERE / "ddp_early_exit.py"
    args = ["--steps", "2", "--exit-step", "99", "--no-destroy"]
    src = str(h.HERE.parents[2] / "src")
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    cases = {"torchrun_no_destroy": h.torchrun_command(script, args),
             "twinrun_nproc_2": [sys.executable, "-m", "twinrun", "run", "-q", "--nproc", "2", "-o",
                                 str(Path(tempfile.mkdtemp()) / "x.trace"),
                                 str(script), "--", *args]}
    out: dict[str, dict[str, int]] = {k: {"launches": 0, "aborts": 0, "failed": 0} for k in cases}
    for _ in range(repeats):
        for name, cmd in cases.items():
            r = h.run(cmd, env=env, timeout=300)
            out[name]["launches"] += 1
            out[name]["aborts"] += h.EXIT_ABORT in r.stderr
            out[name]["failed"] += r.returncode != 0
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--only", default=",".join(SECTIONS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out")
    args = p.parse_args()
    only = args.only.split(",")
    bad = [n for n in only if n not in SECTIONS]
    if bad:
        raise SystemExit(f"unknown section {bad[0]!r}; use some of {', '.join(SECTIONS)}")
    out = Path(args.out) if args.out else None
    # sections already in --out are kept: a long measurement can be resumed section by section
    facts: dict = json.loads(out.read_text(encoding="utf-8")) if out and out.exists() else {}
    measure = {"launch": lambda f: launch_facts(f, args.repeats), "repeat": repeat_facts,
               "threads": thread_facts, "buckets": bucket_facts, "allreduce": allreduce_facts,
               "topology": topology_facts, "replicas": replica_facts, "exit": lambda f: exit_facts(),
               "twinrun-exit": lambda f: twinrun_exit_facts(4 * args.repeats)}
    with tempfile.TemporaryDirectory(prefix="ddp-facts-") as tmp:
        for name in only:
            print(f"measuring {name} ...", file=sys.stderr, flush=True)
            facts[name] = measure[name](Path(tmp))
            if out:
                out.write_text(json.dumps(facts, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: facts[k] for k in only}, indent=1))

if __name__ == "__main__":
    main()
