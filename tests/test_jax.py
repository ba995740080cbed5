"""JAX: keys from named streams, XLA flags, the explicit Tracer, check on the JAX MLP example."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

import twinrun  # noqa: E402
import twinrun.jax  # noqa: E402
from helpers import run_twinrun  # noqa: E402
from twinrun.recording import record  # noqa: E402
from twinrun.trace import Trace  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MLP = ROOT / "examples" / "jax" / "mlp.py"


_twinrun = run_twinrun


def test_check_jax_mlp_repeats_and_records_tree_paths(tmp_path):
    out = _twinrun("check", "--json", "--max-steps", 3, "--keep-traces", tmp_path, MLP)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout)["identical"] is True
    with Trace.open(sorted(tmp_path.glob("*.trace"))[0]) as t:
        assert t.status == "stopped" and t.steps() == [0, 1, 2]   # --max-steps stopped the loop cleanly
        events = [(e.phase, e.name) for e in t.events(0)]
        batch = next(e for e in t.events(0) if e.name == "batch.0")
    assert events[:4] == [("init", "dense0.b"), ("init", "dense0.w"), ("init", "dense1.b"), ("init", "dense1.w")]
    assert events[4:7] == [("input", "batch.0"), ("input", "batch.1"), ("loss", "loss")]
    assert ("grad", "dense1.w") in events and events[-1] == ("param", "dense1.w")
    assert batch.shape == (64, 64) and len(batch.sample_digests) == 64


def test_check_jax_key_from_time_parts_at_init():
    out = _twinrun("check", "--json", "--max-steps", 1, MLP, "--", "--key-from-time")
    assert out.returncode == 1, out.stderr[-3000:]
    first = json.loads(out.stdout)["first_divergence"]
    assert (first["step"], first["phase"]) == (0, "init")


def test_check_jax_unseeded_shuffle_parts_at_input_in_another_order():
    out = _twinrun("check", "--json", "--max-steps", 1, MLP, "--", "--unseeded-shuffle")
    assert out.returncode == 1, out.stderr[-3000:]
    first = json.loads(out.stdout)["first_divergence"]
    assert (first["step"], first["phase"], first["before_identical"]) == (0, "input", True)


def test_seeds_jax_keys_repeat_and_differ_by_stream():
    seeds = twinrun.seed_everything(0, hash_seed="ignore")
    a = jax.random.normal(seeds.jax("init"), (3,))
    b = jax.random.normal(seeds.jax("init"), (3,))
    c = jax.random.normal(seeds.jax("dropout"), (3,))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_tracer_without_recorder_does_nothing_and_refuses_traced_values(tmp_path):
    tracer = twinrun.jax.Tracer()
    assert not tracer.active
    tracer.step(params={"w": jnp.ones(2)})    # no recorder: nothing happens, no error
    with record(tmp_path / "t.trace"):
        assert tracer.active
        with pytest.raises(twinrun.UsageError, match=r"traced value for 'w'.*outside the transformed function"):
            jax.jit(lambda p: tracer.step(params=p) or p)({"w": jnp.ones(2)})


def test_tracer_records_custom_events_and_every(tmp_path):
    tracer = twinrun.jax.Tracer()
    path = tmp_path / "every.trace"
    with record(path, every=2):
        params = {"w": jnp.arange(3.0)}
        tracer.init(params)
        for i in range(4):
            params = {"w": params["w"] + 1}
            tracer.step(params=params, loss=jnp.float32(i), lr=0.1)
    with Trace.open(path) as t:
        assert t.steps() == [0, 2]
        ev = t.events(2)
        assert [(e.phase, e.name) for e in ev] == [("loss", "loss"), ("param", "w"), ("custom", "lr")]
        np.testing.assert_array_equal(t.value(ev[1]), np.arange(3.0) + 3)


def test_tree_names_paths():
    names = [n for n, _ in twinrun.jax.tree_names({"b": [1, {"c": 2}], "a": (3,)})]
    assert names == ["a.0", "b.0", "b.1.c"]


def test_deterministic_sets_xla_flags_in_time_and_says_when_too_late():
    code = (
        "import os, jax, twinrun\n"
        "r = twinrun.deterministic(frameworks=['jax'])\n"
        "assert '--xla_gpu_deterministic_ops=true' in os.environ['XLA_FLAGS'], os.environ.get('XLA_FLAGS')\n"
        "assert not r.warnings, r.warnings\n"
        "r.restore()\n"
        "jax.numpy.ones(1).block_until_ready()\n"
        "r = twinrun.deterministic(frameworks=['jax'])\n"
        "print(r.warnings[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "XLA_FLAGS": ""})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "already started its backend" in out.stdout and "before the first JAX operation" in out.stdout


def test_xla_cpu_max_isa_flag_is_accepted_by_this_jax():
    # The portability probe's variable: XLA aborts on unknown flags, so this pins that the flag exists.
    from twinrun.frameworks.jax import JaxAdapter

    lowest = JaxAdapter.isa_variants({"sse4_2", "avx", "avx2", "fma"}, {})[0][-1]
    code = "import jax.numpy as jnp; print(float(jnp.tanh(jnp.linspace(-3, 3, 101)).sum()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **lowest.env})
    assert out.returncode == 0 and "Unknown flag" not in out.stderr, out.stderr[-2000:]
