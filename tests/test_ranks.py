"""Ranks without launching any: rank trace names, a rank's place from its launcher's variables, the
replica check and the topology comparison on traces written directly, the lock in the header, the
options of --nproc. (Real torch.distributed runs: tests/test_distributed.py.)"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import twinrun
from twinrun import ranks
from twinrun._errors import UsageError
from twinrun.comparison import diff
from twinrun.comparison.replicas import replicas
from twinrun.options import RunOptions
from twinrun.trace import TraceWriter

RUN_ID = "5f0c8f3e-aaaa-bbbb-cccc-000000000000"


# --- names and places ---------------------------------------------------------------------------

def test_rank_trace_names_round_trip(tmp_path):
    assert ranks.rank_path("out.trace", 3) == "out.rank3.trace"
    assert ranks.rank_path("a/b/run", 0) == "a/b/run.rank0"
    assert ranks.split_rank_path("a/out.rank12.trace") == ("a/out.trace", 12)
    assert ranks.split_rank_path("out.trace") is None
    for r in (1, 0, 2):
        (tmp_path / f"out.rank{r}.trace").write_bytes(b"")
    (tmp_path / "outer.rank0.trace").write_bytes(b"")   # another run's, not this one's
    want = [str(tmp_path / f"out.rank{r}.trace") for r in range(3)]
    assert ranks.find_rank_traces(tmp_path / "out.trace") == want
    assert ranks.find_rank_traces(str(tmp_path / "out.rank1.trace")) == want
    with pytest.raises(UsageError, match=r"no rank traces .*none\.rank0\.trace"):
        ranks.find_rank_traces(tmp_path / "none.trace")


def test_a_rank_knows_its_place_from_the_launchers_variables():
    assert ranks.current({}) is None
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "0",
           "TORCHELASTIC_RUN_ID": RUN_ID}
    info = ranks.current(env)
    assert info is not None
    assert (info.rank, info.world_size, info.local_rank, info.run_id, info.launcher) == (1, 2, 1, RUN_ID, "torchrun")
    assert ranks.current({**env, ranks.ENV_LAUNCHER: "1"}).launcher == "twinrun --nproc"
    assert ranks.RankInfo.from_dict(info.to_dict()) == info
    with pytest.raises(UsageError, match="RANK=2 with WORLD_SIZE=2"):
        ranks.current({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(UsageError, match="RANK='x'"):
        ranks.current({"RANK": "x", "WORLD_SIZE": "2"})


def test_seeds_give_each_rank_its_own_stream_and_every_rank_the_same_init():
    s = twinrun.Seeds(0, overrides={})
    assert s.rank_stream("dropout", 0).entropy == s.rank_stream("dropout", 1).entropy == 0
    draws = {r: s.rank_stream("dropout", r).generate_state(2).tolist() for r in range(3)}
    assert len({tuple(v) for v in draws.values()}) == 3
    assert draws[1] == twinrun.Seeds(0, overrides={}).rank_stream("dropout", 1).generate_state(2).tolist()
    assert s.sequence("dropout", "rank", 1).generate_state(2).tolist() == draws[1]   # documented derivation
    with pytest.raises(UsageError, match="rank must be a non-negative integer"):
        s.rank_stream("dropout", -1)


# --- options --------------------------------------------------------------------------------------

def test_nproc_is_validated_once_and_travels_to_the_child(tmp_path):
    script = tmp_path / "t.py"
    script.write_text("pass\n")
    o = RunOptions.create(script, nproc="2")
    assert o.nproc == 2 and RunOptions.from_argv(o.to_argv()) == o
    with pytest.raises(UsageError, match=r"nproc \(--nproc\) must be a whole number >= 1"):
        RunOptions.create(script, nproc=0)
    with pytest.raises(UsageError, match=r"lock \(--lock\) .* does not exist"):
        RunOptions.create(script, lock=tmp_path / "nope.txt")
    r = subprocess.run([sys.executable, "-m", "twinrun", "run", "--nproc", "zero", str(script)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--nproc" in r.stderr


def test_nproc_under_a_launcher_is_refused_in_one_line(tmp_path):
    script = tmp_path / "t.py"
    script.write_text("pass\n")
    env = {**__import__("os").environ, "RANK": "0", "WORLD_SIZE": "1"}
    r = subprocess.run([sys.executable, "-m", "twinrun", "run", "--nproc", "2", "-o", str(tmp_path / "o.trace"),
                        str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2, r.stderr
    assert "already rank 0 of 1" in r.stderr and "Traceback" not in r.stderr


# --- the lock in the header -----------------------------------------------------------------------

def test_the_trace_header_carries_the_locks_sha256_and_env_diff_ranks_it(tmp_path):
    import hashlib

    from twinrun import env
    from twinrun.trace import Trace

    lock = tmp_path / "requirements.txt"
    lock.write_text("numpy==1.0\n")
    with twinrun.record(tmp_path / "a.trace", lock=lock):
        pass
    with Trace.open(tmp_path / "a.trace") as t:
        got = t.header["env"]["lock"]
    assert got["sha256"] == hashlib.sha256(lock.read_bytes()).hexdigest() and got["found"] is False
    other = dict(got, sha256="0" * 64, path="/elsewhere/requirements.txt")
    d = env.diff({"lock": got}, {"lock": other}, strict=False)
    assert [(x.key, x.rank) for x in d.differences] == [("lock.sha256", "possible"), ("lock.path", "none")]


# --- replicas, on traces written directly -------------------------------------------------------------

def write_rank(path, rank, world=2, run_id=RUN_ID, *, params, inputs=None, steps=3):
    """A rank trace: init then ``steps`` steps of input and param events; ``params(step, rank)`` gives
    ``{name: array}``, ``inputs(step, rank)`` a batch."""
    header = {"distributed": {"rank": rank, "world_size": world, "local_rank": rank, "local_world_size": world,
                              "node_rank": 0, "run_id": run_id, "launcher": "torchrun", "backend": None}}
    with TraceWriter(path, header) as w:
        for step in range(steps):
            if step == 0:
                for name, v in params(-1, rank).items():
                    w.add(0, "init", name, v)
            if inputs is not None:
                w.add(step, "input", "arg0", inputs(step, rank), per_sample=True)
            for name, v in params(step, rank).items():
                w.add(step, "param", name, v)
            w.commit_step(step)
    return str(path)


def base_params(step, rank):
    rng = np.random.default_rng(step + 1)
    return {"module.fc.weight": rng.standard_normal((4, 3)).astype(np.float32),
            "module.fc.bias": rng.standard_normal(4).astype(np.float32)}


def shard(step, rank):
    return np.arange(12, dtype=np.float32).reshape(4, 3) + 100 * (2 * step + rank)


def test_replicas_that_agree_and_data_split_by_rank(tmp_path):
    for r in range(2):
        write_rank(tmp_path / f"out.rank{r}.trace", r, params=base_params, inputs=shard)
    rep = replicas(tmp_path / "out.trace")
    assert rep.consistent is True and rep.ok and rep.first_divergence is None
    assert rep.steps_compared == 3 and rep.events_compared == 2 + 3 * 2
    assert rep.data is not None and not rep.data.identical_batches and rep.data.overlap == 0
    assert rep.data.samples == 2 * 3 * 4
    assert "hold the same parameters" in rep.sentence()


def test_a_rank_that_parts_is_named_with_the_step_parameter_and_ulps(tmp_path):
    def rogue(step, rank):
        p = base_params(step, rank)
        if rank == 1 and step >= 1:
            b = p["module.fc.bias"].copy()
            b[2] = np.nextafter(b[2], np.float32(np.inf), dtype=np.float32)   # one value, one ULP
            p["module.fc.bias"] = b
        return p

    paths = [write_rank(tmp_path / f"r.rank{r}.trace", r, params=rogue, inputs=shard) for r in range(2)]
    rep = replicas(paths)
    d = rep.first_divergence
    assert rep.consistent is False and not rep.ok
    assert (d.step, d.phase, d.name, d.rank, d.differing, d.max_ulp) == (1, "param", "module.fc.bias", 1, 1, 1)
    assert rep.parted == [{"step": 1, "differing": 1, "events": 2}, {"step": 2, "differing": 1, "events": 2}]
    assert "part at step 1" in rep.sentence() and "rank 1" in rep.sentence()
    doc = json.loads(json.dumps(rep.to_dict()))
    assert doc["first_divergence"]["ulps"] == 1 and doc["consistent"] is False


def test_identical_batches_and_overlapping_shards_are_found_from_the_inputs(tmp_path):
    for r in range(2):
        write_rank(tmp_path / f"same.rank{r}.trace", r, params=base_params, inputs=lambda s, r: shard(s, 0))
    rep = replicas(tmp_path / "same.trace")
    assert rep.consistent is True and not rep.ok and rep.data.identical_batches
    assert "same batches at all 3 steps" in rep.sentence()

    def overlapping(step, rank):   # rank 1 sees rank 0's samples of the step before
        return shard(step, 0) if rank == 0 else shard(step - 1, 0) if step else shard(7, 1)

    for r in range(2):
        write_rank(tmp_path / f"ov.rank{r}.trace", r, params=base_params, inputs=overlapping)
    rep = replicas(tmp_path / "ov.trace")
    assert rep.ok and rep.data.overlap == 8 and "seen by two ranks" in rep.sentence()


def test_bad_sets_of_rank_traces_are_refused_in_one_line(tmp_path):
    a = write_rank(tmp_path / "a.rank0.trace", 0, params=base_params)
    b = write_rank(tmp_path / "b.rank1.trace", 1, run_id="other", params=base_params)
    with pytest.raises(UsageError, match="different launches"):
        replicas([a, b])
    with pytest.raises(UsageError, match="only one rank trace"):
        replicas(a)
    with TraceWriter(tmp_path / "plain.trace", {}) as w:
        w.commit_step(0)
    with pytest.raises(UsageError, match="not the trace of a rank"):
        replicas([str(tmp_path / "plain.trace"), a])

    def sharded(step, rank):   # FSDP-like: each rank holds its own part
        return {"flat": np.ones(3 + rank, np.float32)}

    paths = [write_rank(tmp_path / f"s.rank{r}.trace", r, params=sharded) for r in range(2)]
    rep = replicas(paths)
    assert rep.consistent is None and rep.ok and "not replicas" in rep.sentence()


# --- across topologies --------------------------------------------------------------------------------

def test_a_single_process_and_a_rank_compare_by_parameters_in_the_last_bits(tmp_path):
    def single(step, rank):
        p = {k.removeprefix("module."): v for k, v in base_params(step, rank).items()}
        if step >= 0:
            w = p["fc.weight"].copy()
            w[0, 0] = np.nextafter(w[0, 0], np.float32(np.inf), dtype=np.float32)
            p["fc.weight"] = w
        return p

    with TraceWriter(tmp_path / "one.trace", {}) as w:
        for step in range(3):
            if step == 0:
                for name, v in single(-1, 0).items():
                    w.add(0, "init", name, v)
            w.add(step, "input", "x", np.zeros((8, 3), np.float32), per_sample=True)
            for name, v in single(step, 0).items():
                w.add(step, "param", name, v)
            w.commit_step(step)
    rank0 = write_rank(tmp_path / "ddp.rank0.trace", 0, params=base_params, inputs=shard)
    c = diff(tmp_path / "one.trace", rank0)
    topo = c.topology
    assert topo is not None and (topo.world_a, topo.world_b) == (1, 2)
    assert topo.verdict == "last-bits" and topo.first.step == 0 and topo.first.first_name == "fc.weight"
    assert [s.step for s in topo.steps] == [-1, 0, 1, 2] and topo.steps[0].differing_tensors == 0
    assert not c.identical and c.first_divergence.name == "fc.weight" and c.first_divergence.max_ulp == 1
    assert "in the last bits, as expected" in c.sentence()
    assert c.to_dict()["topology"]["verdict"] == "last-bits"
