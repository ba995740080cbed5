"""Trace storage, digests, stats and the Recorder's step logic (NumPy events; one torch test)."""

from __future__ import annotations

import json
import math
import signal
import sqlite3
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest
import xxhash

from twinrun import BadTraceError, UsageError
from twinrun import trace as T
from twinrun.recording import Recorder, StopRun, active_recorder, record
from twinrun.trace import PHASES, Trace, TraceWriter, digest, stats


def rng(seed=0):
    return np.random.default_rng(seed)


# --- digests ---------------------------------------------------------------------------------------

def test_digest_is_xxh3_128_of_dtype_shape_and_bytes():
    a = rng().standard_normal((3, 5)).astype(np.float32)
    want = xxhash.xxh3_128(b"float32[3,5]" + a.tobytes()).hexdigest()
    assert digest(a) == want
    assert len(digest(a)) == 32


def test_digest_sees_dtype_shape_and_every_bit():
    a = np.zeros(6, np.float32)
    assert digest(a) != digest(a.reshape(2, 3))
    assert digest(a) != digest(a.view(np.int32))
    assert digest(a, "float32") != digest(a, "bfloat16")
    b = a.copy()
    b[4] = -0.0  # only the sign bit differs
    assert digest(a) != digest(b)
    c = a.copy()
    c.view(np.uint32)[5] = 1  # the smallest subnormal
    assert digest(a) != digest(c)


def test_digest_of_non_contiguous_and_big_endian_equals_contiguous_copy():
    a = rng().standard_normal((8, 8))
    assert digest(a[:, ::2]) == digest(np.ascontiguousarray(a[:, ::2]))
    assert digest(a.T) == digest(np.ascontiguousarray(a.T))
    assert digest(a.astype(">f8")) == digest(a)


def test_digest_of_empty_scalar_and_bool():
    assert digest(np.zeros((0, 3), np.float32)) != digest(np.zeros((3, 0), np.float32))
    assert digest(np.float32(1.5)) == digest(np.array(1.5, np.float32))
    assert digest(np.array([True, False])) != digest(np.array([False, True]))


def test_digest_hashes_without_copying_the_tensor():
    a = np.ones(4_000_000, np.float32)  # 16 MB
    tracemalloc.start()
    try:
        digest(a)
        stats(a)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, f"digest+stats allocated {peak} bytes for a {a.nbytes}-byte tensor"


# --- stats -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int8, np.int32, np.int64, np.uint8])
def test_stats_match_float64_reference(dtype):
    x = (rng(1).standard_normal(200_000) * 20).astype(dtype)  # > one chunk
    ref = x.astype(np.float64)
    l2, mean, maxabs, nonfinite = stats(x)
    assert l2 == pytest.approx(np.sqrt(np.sum(ref * ref)), rel=1e-12)
    assert mean == pytest.approx(ref.mean(), rel=1e-9, abs=1e-12)
    assert maxabs == np.abs(ref).max()
    assert nonfinite == 0


def test_stats_accumulate_in_float64_not_in_float32_blocks():
    # Half the values are 1 + 2**-23: every float64 partial sum is exact, but float32 partial sums
    # (even of 8 values) round the 2**-23 parts away.
    x = np.ones(1 << 20, np.float32)
    x[::2] = 1 + 2**-23
    assert float(np.add.reduce(x)) / x.size != 1 + 2**-24  # float32 accumulation is off ...
    l2, mean, maxabs, nonfinite = stats(x)
    assert mean == 1 + 2**-24  # ... float64 is exact here
    ref = x.astype(np.float64)
    assert l2 == pytest.approx(math.sqrt(math.fsum(ref * ref)), rel=1e-13)  # float32 sums: ~1e-7
    assert (maxabs, nonfinite) == (1 + 2**-23, 0)


@pytest.mark.parametrize("n", [1, 4095, 4096, 4097, 65536, 65537, 300_001])
def test_stats_of_any_length_match_exact_sums(n):
    x = (rng(n).standard_normal(n) * 3 + 1).astype(np.float32)  # rows, chunks and their tails
    ref = x.astype(np.float64)
    l2, mean, maxabs, nonfinite = stats(x)
    assert l2 == pytest.approx(math.sqrt(math.fsum(ref * ref)), rel=1e-13)
    assert mean == pytest.approx(math.fsum(ref) / n, rel=1e-12, abs=1e-15)
    assert maxabs == np.abs(ref).max() and nonfinite == 0
    assert stats(x[::-1].copy())[0] == pytest.approx(l2, rel=1e-13)


@pytest.mark.parametrize("where", [0, 4095, 4096, 65535, 65536, 99_999])
def test_stats_find_a_single_non_finite_value_anywhere(where):
    x = rng().standard_normal(100_000).astype(np.float32)
    for bad in (np.nan, np.inf, -np.inf):
        y = x.copy()
        y[where] = bad
        rest = np.delete(x, where).astype(np.float64)
        l2, mean, maxabs, nonfinite = stats(y)
        assert nonfinite == 1
        assert l2 == pytest.approx(math.sqrt(math.fsum(rest * rest)), rel=1e-12)
        assert mean == pytest.approx(rest.mean(), rel=1e-9, abs=1e-12)
        assert maxabs == np.abs(rest).max()


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64", "int64", "bool", "bfloat16", "complex64"])
@pytest.mark.parametrize("n", [0, 5, 70_000])
def test_writer_events_carry_exactly_digest_and_stats(tmp_path, dtype, n):
    # TraceWriter.add reads a tensor once for both; the result must be the public functions' own.
    x = rng(n).standard_normal(n) * 4
    if dtype == "bfloat16":
        arr = (x.astype(np.float32).view(np.int32) >> 16).astype(np.int16)
    elif dtype == "bool":
        arr = x > 0
    else:
        arr = x.astype(dtype)
    if n and dtype.startswith("float"):
        arr[n // 2] = np.nan
    w = TraceWriter(tmp_path / "a.trace", {})
    e = w.add(0, "forward", "x", arr, dtype=dtype)
    w.close()
    got = (e.l2, e.mean, e.maxabs, e.nonfinite)
    assert e.digest == digest(arr, dtype) and got == stats(arr, dtype)


def test_stats_count_non_finite_and_describe_the_finite_rest():
    x = np.array([3.0, np.nan, 4.0, np.inf, -np.inf], np.float32)
    l2, mean, maxabs, nonfinite = stats(x)
    assert (l2, mean, maxabs, nonfinite) == (5.0, 3.5, 4.0, 3)
    assert stats(np.array([np.nan, np.nan])) == (0.0, 0.0, 0.0, 2)
    # float64 squares that overflow are still finite values
    big = np.array([1e200, -1e200])
    l2, _, maxabs, nonfinite = stats(big)
    assert nonfinite == 0 and maxabs == 1e200 and l2 == pytest.approx(math.sqrt(2) * 1e200)


def test_stats_of_bfloat16_bits_decode_the_values():
    f = np.array([1.0, -2.5, 0.15625], np.float32)
    bits = (f.view(np.int32) >> 16).astype(np.int16)  # exact in bf16
    l2, _, maxabs, nonfinite = stats(bits, "bfloat16")
    assert l2 == pytest.approx(float(np.linalg.norm(f.astype(np.float64))))
    assert maxabs == 2.5 and nonfinite == 0


# --- writing and reading ---------------------------------------------------------------------------

def write_simple(path, steps=3, **opts):
    header = {"command": ["train.py", "--lr", "0.1"], "seeds": {"root": 7}}
    w = TraceWriter(path, header, **opts)
    for s in range(steps):
        w.add(s, "input", "x", np.arange(12, dtype=np.float32).reshape(4, 3) + s, per_sample=True)
        w.add(s, "param", "w", np.full((5,), s, np.float64))
        w.add(s, "param", "big", np.zeros(100, np.float32))
        w.commit_step(s)
    w.close("complete")
    return header


def test_round_trip_of_header_steps_events_and_values(tmp_path):
    path = tmp_path / "a.trace"
    header = write_simple(path, value_threshold=50)
    t = Trace.open(path)
    assert t.header == header and t.status == "complete" and t.schema_version == T.SCHEMA_VERSION
    assert t.steps() == [0, 1, 2]
    evs = t.events(1)
    assert [(e.step, e.index, e.phase, e.name) for e in evs] == [(1, 0, "input", "x"), (1, 1, "param", "w"),
                                                               (1, 2, "param", "big")]
    x = np.arange(12, dtype=np.float32).reshape(4, 3) + 1
    e = evs[0]
    assert e.shape == (4, 3) and e.dtype == "float32" and e.digest == digest(x)
    assert (e.l2, e.mean, e.maxabs, e.nonfinite) == pytest.approx(stats(x))
    assert e.sample_digests == [digest(row) for row in x]
    np.testing.assert_array_equal(t.value(e), x)
    assert not t.value(e).flags.writeable
    assert evs[2].has_value is False and t.value(evs[2]) is None  # 100 elements > threshold 50
    assert len(t.events()) == 9
    d = e.to_dict()
    assert json.loads(json.dumps(d)) == d and d["shape"] == [4, 3]
    assert list(tmp_path.iterdir()) == [path]  # a closed trace is one self-contained file


def test_value_budget_stops_keeping_values(tmp_path):
    w = TraceWriter(tmp_path / "b.trace", {}, value_threshold=1000, value_budget=4 * 250)
    kept = []
    for s in range(4):
        kept.append(w.add(s, "param", "w", np.ones(100, np.float32)).has_value)  # 400 bytes each
        w.commit_step(s)
    w.close()
    assert kept == [True, True, False, False]
    assert [e.has_value for e in Trace.open(tmp_path / "b.trace").events()] == kept


ALLOWED = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
           "float16", "float32", "float64", "complex64", "complex128"]


@pytest.mark.parametrize("name", ALLOWED)
def test_every_allowed_dtype_round_trips_bit_for_bit(tmp_path, name):
    x = (rng(2).standard_normal((3, 4)) * 50).astype(name)
    w = TraceWriter(tmp_path / "d.trace", {})
    w.add(0, "custom", "x", x)
    w.commit_step(0)
    w.close()
    t = Trace.open(tmp_path / "d.trace")
    (e,) = t.events()
    v = t.value(e)
    assert e.dtype == name and v.dtype == np.dtype(name) and v.tobytes() == x.tobytes()


def test_unknown_phase_status_and_step_order_are_usage_errors(tmp_path):
    w = TraceWriter(tmp_path / "e.trace", {})
    with pytest.raises(UsageError, match="phase"):
        w.add(0, "backward", "x", np.zeros(1))
    w.add(0, "custom", "x", np.zeros(1))
    with pytest.raises(UsageError, match="commit_step"):
        w.add(1, "custom", "x", np.zeros(1))
    with pytest.raises(UsageError, match="status"):
        w.close("done")
    w.close("complete")
    with pytest.raises(UsageError, match="closed"):
        w.add(1, "custom", "x", np.zeros(1))


def test_header_must_be_json_ready(tmp_path):
    with pytest.raises(UsageError, match="JSON"):
        TraceWriter(tmp_path / "h.trace", {"bad": float("nan")})


def test_uncommitted_step_is_dropped_on_close(tmp_path):
    w = TraceWriter(tmp_path / "u.trace", {})
    w.add(0, "custom", "x", np.zeros(1))
    w.commit_step(0)
    w.add(1, "custom", "x", np.zeros(1))
    w.close("failed")
    t = Trace.open(tmp_path / "u.trace")
    assert t.steps() == [0] and len(t.events()) == 1 and t.status == "failed"


# --- bad files -------------------------------------------------------------------------------------

def test_bad_files_raise_one_line_errors_naming_file_and_fix(tmp_path):
    good = tmp_path / "good.trace"
    write_simple(good, steps=30)
    cases = {}
    cases["missing"] = (tmp_path / "nope.trace", "no such file")
    (tmp_path / "empty.trace").write_bytes(b"")
    cases["empty"] = (tmp_path / "empty.trace", "empty")
    (tmp_path / "text.trace").write_text("hello\n")
    cases["text"] = (tmp_path / "text.trace", "not a twinrun trace")
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    cases["sqlite"] = (other, "not a twinrun trace")
    data = good.read_bytes()
    (tmp_path / "trunc.trace").write_bytes(data[: len(data) // 2])
    cases["truncated"] = (tmp_path / "trunc.trace", "truncated")
    (tmp_path / "head.trace").write_bytes(data[:200])
    cases["truncated-header"] = (tmp_path / "head.trace", "truncated")
    newer = tmp_path / "newer.trace"
    newer.write_bytes(data)
    with sqlite3.connect(newer) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(T.SCHEMA_VERSION + 1),))
    cases["newer"] = (newer, "upgrade twinrun")
    cases["folder"] = (tmp_path, "folder")
    for label, (path, words) in cases.items():
        with pytest.raises(BadTraceError) as info:
            Trace.open(path)
        msg = str(info.value)
        assert words in msg, (label, msg)
        assert str(path) in msg and "\n" not in msg, (label, msg)


def test_values_of_a_forged_dtype_are_refused_not_interpreted(tmp_path):
    path = tmp_path / "f.trace"
    write_simple(path, steps=1)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE events SET dtype = 'object' WHERE name = 'w'")
    t = Trace.open(path)
    e = next(e for e in t.events() if e.name == "w")
    with pytest.raises(BadTraceError, match="does not read"):
        t.value(e)


# --- crash safety ----------------------------------------------------------------------------------

KILLED_SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np
    from twinrun.recording import record
    with record(sys.argv[1], header={"purpose": "sigkill test"}) as rec:
        for step in range(10_000):
            rec.event("input", "x", np.full((4, 3), step, np.float32), per_sample=True)
            rec.event("param", "w", np.arange(1000, dtype=np.float32) * step)
            rec.end_step()
            print(step, flush=True)
            time.sleep(0.01)
""")


def test_sigkill_leaves_a_trace_readable_up_to_the_last_committed_step(tmp_path):
    path = tmp_path / "killed.trace"
    script = tmp_path / "killed.py"
    script.write_text(KILLED_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True)
    try:
        last = -1
        for line in proc.stdout:
            last = int(line)
            if last >= 5:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert last >= 5
    assert path.with_name(path.name + "-wal").exists()  # the last steps live in the log: recovery is tested
    t = Trace.open(path)
    assert t.status == "running"
    assert t.header["purpose"] == "sigkill test"
    steps = t.steps()
    assert steps == list(range(len(steps))) and len(steps) > last  # every printed step was committed
    for s in steps:
        evs = t.events(s)
        assert [e.name for e in evs] == ["x", "w"]
        np.testing.assert_array_equal(t.value(evs[1]), np.arange(1000, dtype=np.float32) * s)


# --- the Recorder ----------------------------------------------------------------------------------

def run_steps(rec, n, *, change_at=None):
    """A fake training loop: an input batch, a loss, a gradient and the parameters, per step."""
    w = np.linspace(-1, 1, 64, dtype=np.float32)
    for s in range(n):
        x = np.full((4, 2), s, np.float32)
        rec.event("input", "x", x, per_sample=True)
        rec.event("forward", "layer", x * 2)
        rec.event("forward", "layer", x * 3)  # called twice
        g = w * np.float32(0.1)
        if change_at is not None and s >= change_at:
            g = np.nextafter(g, np.float32(np.inf))
        rec.event("grad", "w", g)
        w = w - g
        rec.event("param", "w", w)
        rec.end_step()


def test_recorder_names_repeated_calls_and_numbers_steps(tmp_path):
    path = tmp_path / "r.trace"
    w = TraceWriter(path, {})
    rec = Recorder(w)
    assert active_recorder() is rec
    rec.event("init", "w", np.zeros(3, np.float32))
    run_steps(rec, 3)
    assert rec.step == 3
    rec.close()
    assert active_recorder() is None
    t = Trace.open(path)
    assert t.status == "complete" and t.steps() == [0, 1, 2]
    assert [(e.phase, e.name) for e in t.events(0)] == [
        ("init", "w"), ("input", "x"), ("forward", "layer"), ("forward", "layer#1"), ("grad", "w"), ("param", "w")]
    assert t.meta("recorder")["capture"] == list(PHASES)


def test_capture_and_every_choose_what_is_recorded(tmp_path):
    path = tmp_path / "c.trace"
    rec = Recorder(TraceWriter(path, {}), capture=("param", "grad"), every=3)
    run_steps(rec, 7)
    assert rec.step == 7
    rec.close()
    t = Trace.open(path)
    assert t.steps() == [0, 3, 6]
    assert {e.phase for e in t.events()} == {"param", "grad"}


def test_max_steps_raises_stoprun_and_marks_the_trace_stopped(tmp_path):
    path = tmp_path / "m.trace"
    rec = Recorder(TraceWriter(path, {}), max_steps=2)
    with pytest.raises(StopRun) as info:
        run_steps(rec, 10)
    assert info.value.reason == "max-steps" and rec.step == 2
    assert not isinstance(info.value, Exception)  # user code's `except Exception` cannot swallow it
    assert Trace.open(path).status == "stopped"  # durable before close
    rec.close()
    t = Trace.open(path)
    assert t.status == "stopped" and t.steps() == [0, 1]


@pytest.mark.parametrize("kwargs, words", [
    ({"every": 0}, "every"), ({"every": 1.5}, "every"), ({"max_steps": 0}, "max_steps"),
    ({"max_steps": -3}, "max_steps"), ({"capture": ("params",)}, "phase"),
])
def test_bad_recorder_options_are_usage_errors(tmp_path, kwargs, words):
    with pytest.raises(UsageError, match=words):
        Recorder(TraceWriter(tmp_path / "o.trace", {}), **kwargs)


def test_against_an_identical_reference_runs_to_the_end(tmp_path):
    ref = tmp_path / "ref.trace"
    with record(ref) as rec:
        run_steps(rec, 5)
    with record(tmp_path / "live.trace", against=ref) as rec:
        run_steps(rec, 5)
    assert rec.divergence is None
    assert Trace.open(tmp_path / "live.trace").status == "complete"


def test_against_stops_at_the_first_divergence_and_records_it(tmp_path):
    ref = tmp_path / "ref.trace"
    with record(ref) as rec:
        run_steps(rec, 8)
    live = tmp_path / "live.trace"
    after = []
    with record(live, against=ref) as rec:
        run_steps(rec, 8, change_at=2)  # StopRun leaves the loop; record() catches it
        after.append("not reached")
    assert after == []
    assert rec.stop_reason == "diverged" and rec.step == 2
    t = Trace.open(live)
    assert t.status == "diverged" and t.steps() == [0, 1, 2]
    d = t.meta("divergence")
    assert d["kind"] == "numeric" and (d["step"], d["phase"], d["name"]) == (2, "grad", "w")
    assert d["differing"] == 64 and d["max_ulp"] == 1


def test_against_compares_only_the_phases_both_capture(tmp_path):
    ref = tmp_path / "ref.trace"
    with record(ref) as rec:
        run_steps(rec, 5)
    live = tmp_path / "live.trace"
    with record(live, against=ref, capture=("param",)) as rec:
        run_steps(rec, 5)
    assert rec.divergence is None and Trace.open(live).status == "complete"
    with record(live, against=ref, capture=("param",)) as rec:
        run_steps(rec, 5, change_at=3)
    assert rec.divergence.phase == "param" and rec.step == 3


def test_against_with_keep_going_records_and_continues(tmp_path):
    ref = tmp_path / "ref.trace"
    with record(ref) as rec:
        run_steps(rec, 6)
    live = tmp_path / "live.trace"
    with record(live, against=ref, keep_going=True) as rec:
        run_steps(rec, 6, change_at=4)
    t = Trace.open(live)
    assert t.status == "diverged" and t.steps() == list(range(6))
    assert t.meta("divergence")["step"] == 4


def test_record_builds_a_json_header_and_closes_failed_on_error(tmp_path):
    path = tmp_path / "x.trace"
    with pytest.raises(RuntimeError):
        with record(path, header={"note": "hi"}) as rec:
            assert active_recorder() is rec
            run_steps(rec, 2)
            raise RuntimeError("the user's bug")
    t = Trace.open(path)
    from twinrun import __version__

    assert t.status == "failed" and t.steps() == [0, 1]
    assert t.header["twinrun"] == __version__ and t.header["note"] == "hi"
    assert t.header["command"] == sys.argv
    assert {"seeds", "determinism", "env"} <= set(t.header)
    assert json.loads(json.dumps(t.header)) == t.header


def test_record_with_max_steps_ends_the_block_cleanly(tmp_path):
    path = tmp_path / "x.trace"
    after = []
    with record(path, max_steps=3) as rec:
        run_steps(rec, 100)
        after.append("not reached")
    assert after == [] and rec.step == 3
    assert Trace.open(path).status == "stopped"


def test_recorder_refuses_what_it_cannot_convert(tmp_path):
    rec = Recorder(TraceWriter(tmp_path / "y.trace", {}))
    with pytest.raises(UsageError, match="cannot record 'thing'"):
        rec.event("custom", "thing", object())
    rec.event("metric", "acc", 0.5)  # plain numbers are fine
    rec.end_step()
    rec.close()
    (e,) = Trace.open(tmp_path / "y.trace").events()
    assert e.dtype == "float64" and e.mean == 0.5


# --- a real framework ------------------------------------------------------------------------------

def test_torch_tensors_float32_and_bfloat16(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "t.trace"
    g = torch.Generator().manual_seed(0)
    x32 = torch.randn(6, 5, generator=g)
    xbf = x32.to(torch.bfloat16)
    with record(path) as rec:
        rec.event("forward", "fp32", x32[:, 1:4])  # a non-contiguous view
        rec.event("forward", "bf16", xbf, per_sample=True)
        rec.event("loss", "loss", x32.sum())
        rec.end_step()
    t = Trace.open(path)
    e32, ebf, eloss = t.events(0)
    assert e32.dtype == "float32" and e32.shape == (6, 3)
    assert e32.digest == digest(x32[:, 1:4].contiguous().numpy())
    np.testing.assert_array_equal(t.value(e32), x32[:, 1:4].numpy())
    bits = xbf.view(torch.int16).numpy()
    assert ebf.dtype == "bfloat16" and ebf.digest == digest(bits, "bfloat16")
    assert ebf.digest != digest(bits)  # the dtype name is part of the digest
    np.testing.assert_array_equal(t.value(ebf), bits)
    assert ebf.sample_digests == [digest(row, "bfloat16") for row in bits]
    assert ebf.l2 == pytest.approx(float(torch.linalg.vector_norm(xbf.double())))
    assert ebf.maxabs == float(xbf.abs().max())
    assert eloss.shape == () and eloss.mean == pytest.approx(float(x32.sum()))


HOOK_SCRIPT = textwrap.dedent("""
    import sys
    from twinrun.recording import record
    import twinrun.comparison
    assert not {"torch", "tensorflow", "jax"} & set(sys.modules), "twinrun imported a framework"
    with record(sys.argv[1]) as rec:
        before = sorted(rec._hooked)
        import torch  # imported inside the block: hooked on import
        after = sorted(rec._hooked)
        rec.event("param", "w", torch.ones(3, dtype=torch.bfloat16))
        rec.end_step()
    print(before, after)
""")


def test_record_hooks_frameworks_imported_later_and_imports_none_itself(tmp_path):
    pytest.importorskip("torch")
    script = tmp_path / "hooks.py"
    script.write_text(HOOK_SCRIPT)
    r = subprocess.run([sys.executable, str(script), str(tmp_path / "h.trace")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "['numpy'] ['numpy', 'torch']"
    (e,) = Trace.open(tmp_path / "h.trace").events()
    assert e.dtype == "bfloat16" and e.l2 == pytest.approx(math.sqrt(3))
