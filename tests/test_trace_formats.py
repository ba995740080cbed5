"""Trace schema 2 (step value blobs, packed small events, step summaries) and the reader of schema 1 (issue 16)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np

from twinrun.comparison import diff
from twinrun.trace import SCHEMA_VERSION, Trace, TraceWriter, digest, stats

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
