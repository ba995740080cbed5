"""Trace schema 2 (step value blobs, packed small events, step summaries) and the reader of schema 1 (issue 16)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from hardening_support import copy, edit
from test_compare import train
from twinrun._errors import BadTraceError
from twinrun.comparison import diff
from twinrun.recording import Recorder, record
from twinrun.trace import SCHEMA_VERSION, Trace, TraceWriter, batch, digest, stats

V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE steps (step INTEGER PRIMARY KEY, events INTEGER NOT NULL, committed REAL NOT NULL);
CREATE TABLE events (
    step INTEGER NOT NULL, idx INTEGER NOT NULL, phase TEXT NOT NULL, name TEXT NOT NULL,
    dtype TEXT NOT NULL, shape TEXT NOT NULL, digest TEXT NOT NULL, l2 REAL, mean REAL, maxabs REAL,
    nonfinite INTEGER NOT NULL, value BLOB, sample_digests BLOB, PRIMARY KEY (step, idx)
) WITHOUT ROWID;
"""


def write_v1(path: Path, values: dict[str, np.ndarray], steps: int = 2) -> None:
    """A trace as twinrun wrote it with schema 1 (one value blob per event), written by hand."""
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA)
    db.executemany("INSERT INTO meta VALUES (?, ?)", [
        ("format", "twinrun-trace"), ("schema_version", "1"), ("header", json.dumps({"command": ["v1"]})),
        ("status", "complete"), ("created", "0"), ("x.recorder", "{}")])
    for s in range(steps):
        for i, (name, v) in enumerate(values.items()):
            x = v + s
            db.execute("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       (s, i, "param", name, str(x.dtype), json.dumps(list(x.shape)), digest(x),
                        *stats(x), x.tobytes(), None))
        db.execute("INSERT INTO steps VALUES (?, ?, 0)", (s, len(values)))
    db.commit()
    db.close()


def write_v2(path: Path, values: dict[str, np.ndarray], steps: int = 2) -> None:
    with TraceWriter(path, {}) as writer:
        for s in range(steps):
            for name, v in values.items():
                writer.add(s, "param", name, v + s)
            writer.commit_step(s)


VALUES = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.float64)}


def test_schema_1_traces_are_still_read_and_compared(tmp_path):
    old, new = tmp_path / "old.trace", tmp_path / "new.trace"
    write_v1(old, VALUES)
    write_v2(new, VALUES)
    t = Trace.open(old)
    assert t.schema_version == 1 and t.steps() == [0, 1] and t.step_summaries() is None
    w, b = t.events(1)
    np.testing.assert_array_equal(t.value(w), VALUES["w"] + 1)
    np.testing.assert_array_equal(t.value(b), VALUES["b"] + 1)
    assert t.event_counts() == {0: {"param": 2}, 1: {"param": 2}}
    assert Trace.open(new).schema_version == SCHEMA_VERSION == 2
    assert [e.to_dict() for e in Trace.open(new).events()] == [e.to_dict() for e in t.events()]
    assert diff(old, new).identical and diff(new, old).identical


def test_schema_2_keeps_a_steps_values_in_one_blob_and_summarises_each_step(tmp_path):
    path = tmp_path / "v2.trace"
    write_v2(path, VALUES, steps=3)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM step_values").fetchone()[0] == 3
        assert db.execute("SELECT length(data) FROM step_values WHERE step = 0").fetchone()[0] == 6 * 4 + 3 * 8
    t = Trace.open(path)
    summaries = t.step_summaries()
    assert summaries is not None and sorted(summaries) == [0, 1, 2]
    assert all(n == 2 and phases == ["param"] for n, _, phases in summaries.values())
    assert len({s for _, s, _ in summaries.values()}) == 3      # the values differ from step to step
    again = tmp_path / "again.trace"
    write_v2(again, VALUES, steps=3)
    assert Trace.open(again).step_summaries() == summaries      # the same events: the same summaries


# --- the Recorder's batched small events ---------------------------------------------------------------

def test_recorder_batches_small_float32_events_exactly_like_the_writer(tmp_path):
    # The Recorder digests small float32 tensors at end_step, all at once; the events must be those
    # TraceWriter.add writes one at a time: same digests, same stats bit for bit, same values.
    r = np.random.default_rng(0)
    xs = [r.standard_normal(n).astype(np.float32) for n in (1, 7, 512, 4096)]
    xs.append(np.array([1.0, np.inf, -np.inf, np.nan], np.float32))  # non-finite: the general path
    xs.append(np.asfortranarray(r.standard_normal((8, 6)).astype(np.float32)))  # not C-contiguous
    xs.append(np.arange(5000, dtype=np.float32))  # big: digested at the call
    rec = Recorder(TraceWriter(tmp_path / "r.trace", {}))
    for i, x in enumerate(xs):
        rec.event("forward", f"x{i}", x)
    rec.end_step()
    rec.close()
    with TraceWriter(tmp_path / "w.trace", {}) as w:
        for i, x in enumerate(xs):
            w.add(0, "forward", f"x{i}", x)
        w.commit_step(0)
    ta, tb = Trace.open(tmp_path / "r.trace"), Trace.open(tmp_path / "w.trace")
    assert len(ta.events(0)) == len(xs)
    for a, b, x in zip(ta.events(0), tb.events(0), xs):
        assert a.digest == b.digest == digest(x)
        got, want = (a.l2, a.mean, a.maxabs, a.nonfinite), (b.l2, b.mean, b.maxabs, b.nonfinite)
        assert got == pytest.approx(want, rel=0, abs=0, nan_ok=True)
        assert want == pytest.approx(stats(x), rel=0, abs=0, nan_ok=True)
        np.testing.assert_array_equal(ta.value(a), x)
    assert ta.step_summaries() == tb.step_summaries()
    with sqlite3.connect(tmp_path / "r.trace") as db:   # the small ones: one packed row
        assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1
        assert db.execute("SELECT COUNT(*) FROM packed").fetchone()[0] == 1


def test_a_tensor_changed_after_its_event_keeps_the_value_it_had(tmp_path):
    x = np.zeros(16, np.float32)
    rec = Recorder(TraceWriter(tmp_path / "c.trace", {}))
    rec.event("forward", "x", x)
    x += 1  # in place, before end_step digests the step
    rec.event("forward", "x", x)
    rec.end_step()
    rec.close()
    t = Trace.open(tmp_path / "c.trace")
    e0, e1 = t.events(0)
    assert e0.digest == digest(np.zeros(16, np.float32)) and e1.digest == digest(np.ones(16, np.float32))
    np.testing.assert_array_equal(t.value(e0), np.zeros(16, np.float32))
    assert e1.name == "x#1"


def test_value_budget_holds_for_batched_events(tmp_path):
    rec = Recorder(TraceWriter(tmp_path / "b.trace", {}, value_budget=4 * 250))
    for _ in range(4):
        rec.event("param", "w", np.ones(100, np.float32))  # 400 bytes each
        rec.end_step()
    rec.close()
    assert [e.has_value for e in Trace.open(tmp_path / "b.trace").events()] == [True, True, False, False]


def test_a_big_value_is_not_copied_once_the_budget_is_spent(tmp_path):
    rec = Recorder(TraceWriter(tmp_path / "big.trace", {}, value_budget=100_000))
    handles = []
    for s in range(3):
        handles.append(rec.event("param", "w", np.full(10_000, s, np.float32)))   # 40 kB, digested at the call
        copied = handles[-1].value is not None
        rec.end_step()
        assert copied == (s < 2)
    rec.close()
    t = Trace.open(tmp_path / "big.trace")
    assert [e.has_value for e in t.events()] == [True, True, False]
    np.testing.assert_array_equal(t.value(t.events(1)[0]), np.full(10_000, 1, np.float32))


def rnn(path, *, nudge_at=None, against=None, steps=3, calls=50):
    """An RNN cell called ``calls`` times per step; ``nudge_at=(step, call)`` moves one value 1 ULP."""
    r = np.random.default_rng(1)
    h = r.standard_normal((4, 8)).astype(np.float32)
    with record(path, against=against) as rec:
        for s in range(steps):
            rec.event("input", "x", h, per_sample=True)
            for c in range(calls):
                h = np.tanh(h * np.float32(0.9) + np.float32(0.1)).astype(np.float32)
                if (s, c) == nudge_at:
                    h = h.copy()
                    h[1, 2] = np.nextafter(h[1, 2], np.float32(np.inf))
                rec.event("forward", "cell", h)
            rec.event("loss", "loss", np.float32(h.sum()))
            rec.end_step()
    return path


def test_small_events_are_one_row_per_step_yet_named_down_to_the_call(tmp_path):
    a = rnn(tmp_path / "a.trace")
    b = rnn(tmp_path / "b.trace", nudge_at=(2, 37))
    with sqlite3.connect(a) as db:
        assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 3  # x (per-sample digests): a row each
        assert db.execute("SELECT COUNT(*) FROM packed").fetchone()[0] == 3  # cell, cell#1..#49: one per step
    t = Trace.open(a)
    names = [e.name for e in t.events(1)]
    assert names == ["x", "cell", *[f"cell#{k}" for k in range(1, 50)], "loss"]
    assert [e.index for e in t.events(1)] == list(range(52))
    assert t.event_counts()[1] == {"input": 1, "forward": 50, "loss": 1}
    e = t.events(1)[38]
    assert e.name == "cell#37" and e.has_value and t.value(e).shape == (4, 8)
    assert e.digest == digest(t.value(e)) and e.l2 == pytest.approx(float(np.linalg.norm(t.value(e).astype(float))))
    d = diff(a, b).first_divergence
    assert d is not None and (d.step, d.phase, d.name) == (2, "forward", "cell#37")
    assert d.differing == 1 and d.max_ulp == 1


def test_live_comparison_names_the_repeated_call(tmp_path):
    ref = rnn(tmp_path / "ref.trace")
    live = rnn(tmp_path / "live.trace", nudge_at=(1, 12), against=ref)
    t = Trace.open(live)
    d = t.meta("divergence")
    assert (d["step"], d["name"], d["max_ulp"]) == (1, "cell#12", 1)
    assert t.status == "diverged" and t.steps() == [0, 1]


def test_many_small_events_in_one_step_are_reduced_in_bounded_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(batch, "BATCH", 1000)  # blocks of ~1000 elements: many blocks, uneven edges
    r = np.random.default_rng(3)
    xs = [r.standard_normal(int(n)).astype(np.float32) for n in r.integers(1, 900, 300)]
    rec = Recorder(TraceWriter(tmp_path / "m.trace", {}))
    for i, x in enumerate(xs):
        rec.event("forward", f"m{i}", x)
    rec.end_step()
    rec.close()
    assert rec._batch._scratch.size <= 2 * 1900
    events = Trace.open(tmp_path / "m.trace").events(0)
    assert len(events) == len(xs)
    for e, x in zip(events, xs):
        assert e.digest == digest(x) and (e.l2, e.mean, e.maxabs, e.nonfinite) == stats(x)


def test_a_step_of_many_small_tensors_is_handed_to_the_writer_in_parts(tmp_path, monkeypatch):
    r = np.random.default_rng(4)
    xs = [r.standard_normal(512).astype(np.float32) for _ in range(40)]

    def recorded(path):
        rec = Recorder(TraceWriter(path, {}, value_budget=20 * 2048))  # values of the first 20 only
        for s in range(2):
            first = None
            for i, x in enumerate(xs):
                ev = rec.event("forward", "cell", x + s)
                if i == 0:
                    first = ev
            rec.event("forward", "again", xs[0] + s, same_as=first)  # its bytes may be gone by now
            rec.event("forward", "big", np.arange(10_000, dtype=np.float32) + s)  # finished at once
            rec.end_step()
        rec.close()
        return Trace.open(path)

    whole = recorded(tmp_path / "whole.trace")
    monkeypatch.setattr(batch, "ARENA_LIMIT", 5 * 2048)  # a part every five events
    parts = recorded(tmp_path / "parts.trace")
    assert parts.step_summaries() == whole.step_summaries()
    assert len(parts.events()) == len(whole.events()) == 2 * 42
    for a, b in zip(parts.events(), whole.events()):
        assert (a.name, a.index, a.digest, a.has_value) == (b.name, b.index, b.digest, b.has_value)
        assert (a.l2, a.mean, a.maxabs, a.nonfinite) == (b.l2, b.mean, b.maxabs, b.nonfinite)
        if a.has_value:
            np.testing.assert_array_equal(parts.value(a), whole.value(b))
    again = next(e for e in parts.events(1) if e.name == "again")
    assert again.digest == digest(xs[0] + 1)


# --- diff skips the leading identical steps ------------------------------------------------------------

def as_v1(path: Path) -> Path:
    """The same trace rewritten as schema 1 (no summaries: diff reads every step of it)."""
    t = Trace.open(path)
    out = path.with_suffix(".v1.trace")
    db = sqlite3.connect(out)
    db.executescript(V1_SCHEMA)
    with sqlite3.connect(path) as src:
        rows = src.execute("SELECT key, value FROM meta").fetchall()
    db.executemany("INSERT INTO meta VALUES (?, ?)", [(k, "1" if k == "schema_version" else v) for k, v in rows])
    for step in t.steps():
        events = t.events(step)
        for e in events:
            value = t.value(e)
            samples = None if e.sample_digests is None else b"".join(bytes.fromhex(h) for h in e.sample_digests)
            db.execute("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       (step, e.index, e.phase, e.name, e.dtype, json.dumps(list(e.shape)), e.digest,
                        *(None if np.isnan(x) else x for x in (e.l2, e.mean, e.maxabs)), e.nonfinite,
                        None if value is None else value.tobytes(), samples))
        db.execute("INSERT INTO steps VALUES (?, ?, 0)", (step, len(events)))
    db.commit()
    db.close()
    return out


@pytest.mark.parametrize("kwargs", [
    {}, {"grad_noise_at": 3, "ulps": 3, "n_changed": 2876}, {"permute_at": 2}, {"change_sample_at": 1},
    {"names": ("conv1", "fc")}, {"max_steps": 3}, {"capture": ("param",)}, {"grad_noise_at": 1, "value_threshold": 0},
])
def test_skipping_identical_steps_gives_what_reading_every_step_gives(tmp_path, kwargs):
    a = train(tmp_path / "a.trace")
    b = train(tmp_path / "b.trace", **kwargs)
    a1, b1 = as_v1(a), as_v1(b)
    assert Trace.open(a1).step_summaries() is None and Trace.open(a).step_summaries() is not None
    got, want = diff(a, b).to_dict(), diff(a1, b1).to_dict()
    for d in (got, want):
        d.pop("a"), d.pop("b")
    assert got == want


def test_diff_reads_no_event_of_the_identical_steps_before_the_divergence(tmp_path):
    a = train(tmp_path / "a.trace")
    b = train(tmp_path / "b.trace", grad_noise_at=3)
    ta, tb = Trace.open(a), Trace.open(b)
    read: list[int | None] = []
    for t in (ta, tb):
        events = t.events
        t.events = lambda step=None, events=events: read.append(step) or events(step)  # type: ignore[method-assign]
    c = diff(ta, tb)
    assert c.first_divergence is not None and c.first_divergence.step == 3
    assert c.first_divergence.before_checked == ["init", "input", "forward", "loss", "grad", "param"]
    assert min(s for s in read if s is not None) == 3 and c.events_compared == 2 + 6 * 8


# --- issue 12's reading rules on both schema versions ------------------------------------------------


def _packed_trace(path: Path) -> Path:
    """A schema-2 trace whose small float32 events are packed (a Recorder's batch), values kept."""
    with record(path) as rec:
        for _ in range(2):
            rec.event("forward", "a", np.arange(6, dtype=np.float32))
            rec.event("param", "w", np.ones(4, np.float32))
            rec.end_step()
    return path


def test_each_schema_version_is_checked_against_its_own_tables(tmp_path):
    old, new = tmp_path / "old.trace", _packed_trace(tmp_path / "new.trace")
    write_v1(old, VALUES)
    v1_with_packed = edit(copy(old, tmp_path / "v1p.trace"), "CREATE TABLE packed (step INTEGER PRIMARY KEY)")
    with pytest.raises(BadTraceError, match="table 'packed'"):
        Trace.open(v1_with_packed)
    v2_without = edit(copy(new, tmp_path / "v2.trace"), "DROP TABLE step_values")
    with pytest.raises(BadTraceError, match="no table 'step_values'"):
        Trace.open(v2_without)
    v2_as_v1 = edit(copy(new, tmp_path / "v2v1.trace"), "UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    with pytest.raises(BadTraceError, match="table"):
        Trace.open(v2_as_v1)
    v0 = edit(copy(new, tmp_path / "v0.trace"), "UPDATE meta SET value = '0' WHERE key = 'schema_version'")
    with pytest.raises(BadTraceError, match="bad schema version"):
        Trace.open(v0)


PACKED_ATTACKS = {
    "idx": b"\x01\x02\x03", "phases": "x", "names": "[" * 10_000 + "]" * 10_000, "shapes": '[[-1]]',
    "shape_ix": b"\xff\xff\xff\x7f", "digests": "abc", "stats": 1.5, "nonfinite": b"\xff" * 8,
    "value_off": b"\xff\xff\xff\xff\xff\xff\xff\x7f" * 2,
}


@pytest.mark.parametrize("column", sorted(PACKED_ATTACKS))
def test_every_column_of_a_packed_row_is_checked(tmp_path, column):
    """Each column of ``packed`` set to what twinrun never writes: one BadTraceError naming the file when
    the events, counts or values of the step are read (diff, check), never another exception."""
    good = _packed_trace(tmp_path / "good.trace")
    bad = edit(copy(good, tmp_path / "bad.trace"), (f"UPDATE packed SET {column} = ?", (PACKED_ATTACKS[column],)))
    with pytest.raises(BadTraceError, match=r"bad\.trace"), Trace.open(bad) as t:
        t.check()


def test_a_kept_value_out_of_its_steps_blob_is_an_error_not_a_short_array(tmp_path):
    good = _packed_trace(tmp_path / "good.trace")
    for i, sql in enumerate(["UPDATE step_values SET data = x'00'", "DELETE FROM step_values",
                             "UPDATE step_values SET data = 'abc'"]):
        bad = edit(copy(good, tmp_path / f"bad{i}.trace"), sql)
        with pytest.raises(BadTraceError, match=rf"bad{i}\.trace"), Trace.open(bad) as t:
            t.check()
