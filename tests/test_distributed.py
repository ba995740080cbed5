"""twinrun under real torch.distributed: gloo, 2 ranks, the digits MLP of tests/scripts/ddp, 3-4 steps.

Five 2-rank launches and one single process in all (two check runs, two doctor runs, one run under the
user's own torchrun, one single process), shared through module fixtures: about 2 minutes at this
machine's usual load (measured in docs/distributed.md). The facts these rest on: tests/scripts/ddp/README.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from twinrun.trace import Trace

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

DDP = Path(__file__).parent / "scripts" / "ddp"
ENV = {**os.environ, "COLUMNS": "200"}


def twinrun(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "twinrun", *args], capture_output=True, text=True, env=ENV,
                          cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    """``check --nproc 2`` of the seeded DDP script, traces kept."""
    folder = tmp_path_factory.mktemp("check")
    r = twinrun("check", "--nproc", "2", "--max-steps", "3", "--json", "--keep-traces", str(folder),
                str(DDP / "ddp_train.py"))
    return r, folder


@pytest.fixture(scope="module")
def doctored(tmp_path_factory):
    """``doctor --nproc 2`` of the script where rank 1 updates fc2.bias outside the all-reduce at step 2."""
    folder = tmp_path_factory.mktemp("doctor")
    r = twinrun("doctor", "--nproc", "2", "--max-steps", "4", "--no-portability", "--json", "--keep-traces",
                str(folder), str(DDP / "ddp_rogue_rank.py"))
    return r, folder


def test_a_seeded_ddp_script_passes_check_nproc_2_with_consistent_replicas(checked):
    r, folder = checked
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert doc["identical"] is True and doc["nproc"] == 2 and len(doc["ranks"]) == 2
    assert all(c["identical"] and c["steps_compared"] == 3 for c in doc["ranks"])
    rep = doc["replicas"]
    assert rep["consistent"] is True and rep["ok"] is True and rep["first_divergence"] is None
    assert [run["data"]["identical_batches"] for run in rep["runs"]] == [False, False]
    assert all(run["backend"] == "gloo" for run in rep["runs"])
    # one trace per rank, each header saying which rank of which launch
    with Trace.open(folder / "run-1.rank1.trace") as t:
        d = t.meta("distributed")
        assert (d["rank"], d["world_size"], d["backend"], d["launcher"]) == (1, 2, "gloo", "twinrun --nproc")
        assert t.header["distributed"]["run_id"] == d["run_id"] and t.status == "stopped" and t.steps() == [0, 1, 2]
    with Trace.open(folder / "run-1.rank0.trace") as t0, Trace.open(folder / "run-2.rank0.trace") as t2:
        assert t0.header["distributed"]["run_id"] != t2.header["distributed"]["run_id"]


def test_one_process_and_two_ranks_at_the_same_global_batch_part_in_the_last_bits(checked, tmp_path):
    _, folder = checked
    single = tmp_path / "single.trace"
    r = twinrun("run", "-q", "--threads", "1", "--max-steps", "3", "-o", str(single),
                str(DDP / "single_global_batch.py"))
    assert r.returncode == 0, r.stderr[-3000:]
    r = twinrun("diff", "--json", str(single), str(folder / "run-1.rank0.trace"))
    assert r.returncode == 1, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    topo = doc["topology"]
    assert (topo["world_a"], topo["world_b"], topo["verdict"]) == (1, 2, "last-bits")
    assert topo["steps"][0]["step"] == -1 and topo["steps"][0]["differing_tensors"] == 0   # the same init
    first = next(s for s in topo["steps"] if s["differing_tensors"])
    assert first["step"] == 0 and first["max_ulp"] > 0 and first["max_rel_to_scale"] < 2 ** -16
    assert doc["first_divergence"]["phase"] == "param" and not doc["first_divergence"]["name"].startswith("module.")
    assert "in the last bits, as expected" in doc["sentence"]
    r = twinrun("diff", str(single), str(folder / "run-1.rank0.trace"))
    assert "in the last bits" in r.stdout and "only the parameters" in r.stdout


def test_a_rank_updating_outside_the_all_reduce_is_caught_at_its_step_and_parameter(doctored):
    r, folder = doctored
    assert r.returncode == 1, r.stderr[-3000:]
    d = json.loads(r.stdout)
    assert d["cause"] == "replica-divergence" and d["nproc"] == 2
    assert d["evidence"][0]["identical"] is True          # the runs repeat each other ...
    fd = d["replicas"]["first_divergence"]                # ... but the replicas part
    assert (fd["step"], fd["phase"], fd["name"], fd["rank"]) == (2, "param", "module.fc2.bias", 1)
    assert fd["values"] and fd["ulps"] > 0 and fd["differing"] == 10
    # the gradients stay all-reduced, so only that parameter differs, from then on
    assert d["replicas"]["parted"] == [{"step": 2, "differing": 1, "events": 4},
                                       {"step": 3, "differing": 1, "events": 4}]
    # the same from the recorded traces, with the command
    r = twinrun("replicas", "--json", str(folder / "01-baseline-1.trace"))
    assert r.returncode == 1
    rep = json.loads(r.stdout)
    assert rep["first_divergence"]["name"] == "module.fc2.bias" and rep["first_divergence"]["step"] == 2
    r = twinrun("replicas", str(folder / "01-baseline-1.rank0.trace"))
    assert r.returncode == 1 and "The replicas part at step 2" in r.stdout and "rank 1" in r.stdout


def test_a_script_seeding_every_rank_the_same_for_sampling_is_caught_under_the_users_torchrun(tmp_path):
    out = tmp_path / "same.trace"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "twinrun", "run", "-q", "--max-steps", "3", "-o", str(out),
                        str(DDP / "ddp_same_data_seed.py")], capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    for k in (0, 1):
        with Trace.open(tmp_path / f"same.rank{k}.trace") as t:
            assert t.meta("distributed")["launcher"] == "torchrun" and t.status == "stopped"
    r = twinrun("replicas", "--json", str(out))
    assert r.returncode == 1
    rep = json.loads(r.stdout)
    assert rep["consistent"] is True and rep["ok"] is False          # the replicas agree; the data does not split
    assert rep["data"]["identical_batches"] and rep["data"]["identical_steps"] == [0, 1, 2]
    assert "Every rank trained on the same batches" in rep["sentence"]
