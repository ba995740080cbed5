"""Facts of multi-process training that twinrun's ``--nproc`` work builds on, pinned with real
``torch.distributed`` (gloo, 2 ranks, launched with ``python -m torch.distributed.run``).

The scripts are in ``tests/scripts/ddp`` (README.md there has the numbers and the commands). Each
rank dumps, per step, the xxh3-128 digest of every parameter (``twinrun.trace.digest``'s formula)
and of its input batch; only digests are compared across ranks, as twinrun's replica check does.
The facts twinrun itself now shows (a rank updating outside the all-reduce, every rank on the same
batches, one process against rank 0 at the global batch) are pinned through twinrun, in
tests/test_distributed.py, and not launched twice here.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

DDP = Path(__file__).parent / "scripts" / "ddp"
sys.path.insert(0, str(DDP))

import ddp_harness as h  # noqa: E402 - found through the path above

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("this torch has no gloo backend", allow_module_level=True)

ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def train(folder: Path, name: str, *args: str, script: str = "ddp_train.py", env: dict | None = None,
          nproc: int = 2) -> dict[int, list[dict]]:
    h.torchrun(script, [*args, "--dump", str(folder / name)], nproc=nproc, env=env)
    return h.read_dump(folder / name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ddp")


@pytest.fixture(scope="module")
def seeded(runs) -> dict[int, list[dict]]:
    """The correct seeded DDP script, 2 ranks, 5 steps, parameter values kept."""
    return train(runs, "seeded", "--values")


# --- launching --------------------------------------------------------------------------------------------

def test_a_launched_rank_knows_its_place_before_init_process_group():
    r = h.run_again_on_exit_abort(h.torchrun_command(DDP / "ddp_probe.py", []), env={"OMP_NUM_THREADS": None})
    assert r.returncode == 0, r.stderr[-3000:]
    rows = sorted((json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")), key=lambda x: x["rank"])
    assert [x["rank"] for x in rows] == [0, 1]
    run_ids, ports = set(), set()
    for x in rows:
        env = x["env"]
        assert env["RANK"] == env["LOCAL_RANK"] == str(x["rank"])
        assert env["WORLD_SIZE"] == env["LOCAL_WORLD_SIZE"] == "2"
        assert env["MASTER_ADDR"] and int(env["MASTER_PORT"]) > 0
        run_ids.add(env["TORCHELASTIC_RUN_ID"])
        ports.add(env["MASTER_PORT"])
        assert x["initialized_before"] is False and x["initialized_after"] is True
        assert x["torchelastic_launched"] is True
        assert (x["world_size"], x["backend"]) == (2, "gloo")
        # torchrun sets OMP_NUM_THREADS=1 when the user has not: one thread per rank
        assert env["OMP_NUM_THREADS"] == "1" and x["threads"] == 1
    assert len(run_ids) == 1 and len(ports) == 1


def test_torchrun_runs_a_module_with_dash_m():
    # `torchrun -m twinrun run ...` works the same way: each rank runs `python -m MODULE args`
    env = {"PYTHONPATH": os.pathsep.join([str(DDP), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "ddp_probe", "--no-torch", "x"]
    r = h.run(cmd, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert sorted(x["env"]["RANK"] for x in rows) == ["0", "1"]
    assert all(x["argv"][1:] == ["--no-torch", "x"] for x in rows)


# --- the correct script --------------------------------------------------------------------------------------

def test_seeded_ddp_repeats_bitwise_and_its_replicas_agree(runs, seeded):
    again = train(runs, "seeded-again")
    for rank in (0, 1):
        assert all(h.params_equal(seeded[rank], again[rank])), f"rank {rank} did not repeat"
    assert len(seeded[0]) == 6  # init + 5 steps
    assert h.replica_divergence(seeded) is None
    assert seeded[0][0]["params"] == seeded[1][0]["params"]  # identical init
    assert h.same_inputs(seeded) == [False] * 5              # each rank its own shard


def test_the_dumped_digests_are_twinruns(seeded, runs):
    from twinrun.trace import digest

    values = h.read_values(runs / "seeded", 0)
    for row in seeded[0]:
        for name, d in row["params"].items():
            assert digest(values[f"step{row['step']}/{name}"]) == d


def test_ddp_hides_an_init_seeded_per_rank(runs, seeded):
    # DDP broadcasts rank 0's parameters at construction: an init seeded with seed + rank is rank 0's
    per_rank = train(runs, "init-per-rank", "--init-seed-per-rank")
    assert h.replica_divergence(per_rank) is None
    assert per_rank[0][0]["params"] == seeded[0][0]["params"]


def test_threads_per_rank_change_the_numbers(runs):
    one = train(runs, "threads-1", "--hidden", "2048", env={"OMP_NUM_THREADS": "1"})
    two = train(runs, "threads-2", "--hidden", "2048", env={"OMP_NUM_THREADS": "2"})
    assert one[0][1]["threads"] == 1 and two[0][1]["threads"] == 2  # the user's setting survives the launch
    assert h.replica_divergence(one) is None and h.replica_divergence(two) is None
    assert not all(h.params_equal(one[0], two[0]))  # each repeats (above), but not each other


def test_bucket_settings_change_nothing_on_2_ranks(runs, seeded):
    d = train(runs, "buckets", "--bucket-cap-mb", "0.001", "--static-graph", "--find-unused-parameters",
              "--gradient-as-bucket-view")
    for rank in (0, 1):
        assert all(h.params_equal(seeded[rank], d[rank]))


def test_gloo_allreduce_order_depends_on_placement_beyond_2_ranks():
    def placements(nproc: int) -> dict:
        r = h.torchrun("ddp_allreduce_order.py", [], nproc=nproc)
        return json.loads(r.stdout.strip().splitlines()[-1])

    # (on 2 ranks nothing can differ, a + b == b + a; measure.py --only allreduce shows it)
    four = placements(4)
    moved = [p for p in four["placements"] if p["offset"] or p["buffer"] != 4096]
    assert four["placements"][0]["differ_from_alone"] == 0  # the same placement repeats
    assert any(p["differ_from_alone"] > 0 for p in moved)   # another placement sums in another order


def test_a_sampler_seeded_per_rank_overlaps_and_misses_samples():
    from torch.utils.data import DistributedSampler, TensorDataset

    n = 1797  # the digits
    data = TensorDataset(torch.arange(n))

    def shards(seed_of_rank) -> list[set[int]]:
        return [set(DistributedSampler(data, num_replicas=2, rank=r, seed=seed_of_rank(r), drop_last=True))
                for r in (0, 1)]

    same = shards(lambda r: 0)
    assert not same[0] & same[1] and len(same[0] | same[1]) == n - 1
    per_rank = shards(lambda r: r)
    assert len(per_rank[0] & per_rank[1]) > 100 and len(per_rank[0] | per_rank[1]) < n - 100


# --- the buggy scripts ---------------------------------------------------------------------------------------

def test_an_update_after_the_optimizer_step_shows_in_the_next_steps_parameters(runs):
    # recorded at the optimizer's step post-hook (where twinrun records `param`), as the next step
    d = train(runs, "rogue-after", "--rogue-when", "after", script="ddp_rogue_rank.py")
    assert h.replica_divergence(d) == {"step": 3, "name": "fc2.bias", "rank": 1}


# --- a rank that leaves ------------------------------------------------------------------------------------------

def test_a_rank_that_leaves_early_fails_its_peer_instead_of_hanging():
    # os._exit(3): the rank's own code, without the exit-time abort that can turn a sys.exit into -6
    r = h.run(h.torchrun_command(DDP / "ddp_early_exit.py", ["--exit-rank", "1", "--exit-step", "1", "--code", "3"]),
              env={"EARLY_EXIT_HARD": "1"}, timeout=300)
    assert r.returncode == 1  # torchrun's own code: the rank's 3 is only in its log
    assert "exitcode  : 3" in r.stderr
    # the peer fails in its next all-reduce, or the launcher stops it first; gloo's own timeout
    # (30 minutes) is never what ends it
    assert "Connection closed by peer" in r.stderr or "SIGTERM" in r.stderr
    assert r.seconds < 240
