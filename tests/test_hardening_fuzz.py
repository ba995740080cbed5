"""Issue 12, black box: every command that reads a trace, a results file or an env file ends with exit
0, 1 or 2 -- never "internal error", never a traceback, never a hang, never gigabytes -- whatever the
file holds.

1. A mutation fuzzer (hypothesis): one cell, or a whole column, of a real small trace or results file
   is set to a value of any SQLite type (NULL, integers to +-2**63, floats with nan/inf, text with
   JSON of any shape and depth, blobs), then every reading command runs on it.
2. A corpus of hostile files (empty, random, truncated at many offsets, newer schema, views, triggers,
   generated columns, expression indexes, huge and negative shapes, 100k-deep JSON, a step stored as
   text, a FIFO, a symlink loop, an unreadable file, a folder) through every reading command.

Each command runs as ``python -m twinrun ...`` in a fresh process group under RLIMIT_AS
(hardening_support.MEMORY_LIMIT) and a time limit; its peak RSS must stay under RSS_BOUND_MB.
By default (the CI budget) each fuzz test draws ``TWINRUN_FUZZ_EXAMPLES`` examples (default 3) and the
corpus runs a representative subset (``QUICK``: 8 files, one per kind of attack). The whole corpus and a deeper
fuzz (``TWINRUN_FUZZ_DEEP_EXAMPLES``, default 60 per file kind) are marked ``expensive``, deselected by default:

    pytest -m expensive tests/test_hardening_fuzz.py          # about 10 minutes on a quiet 2-core machine

``TWINRUN_FUZZ_SHRINK=1`` lets hypothesis shrink a failure (slow: every step runs processes).
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from hardening_support import (
    DEEP,
    NP_SCRIPT,
    RSS_BOUND_MB,
    TOY_SCRIPT,
    Result,
    can_drop_file_capabilities,
    copy,
    edit,
    expression_index_trace,
    generated_column_results,
    generated_column_trace,
    make_env,
    make_results,
    make_trace,
    trigger_trace,
    twinrun,
    view_trace,
    write_script,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

EXAMPLES = int(os.environ.get("TWINRUN_FUZZ_EXAMPLES", "3"))
DEEP_EXAMPLES = int(os.environ.get("TWINRUN_FUZZ_DEEP_EXAMPLES", "60"))


def fuzz_settings(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, database=None, derandomize=False,
                    phases=[Phase.explicit, Phase.generate] + ([Phase.shrink] if os.environ.get("TWINRUN_FUZZ_SHRINK")
                                                               else []),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("made")
    script = write_script(d, "np_train.py", NP_SCRIPT)
    toy = write_script(d, "toy.py", TOY_SCRIPT)
    has_show = twinrun("show", "--help", cwd=d).returncode == 0
    return {"dir": d, "script": script, "toy": toy, "trace": make_trace(d, script=script),
            "results": make_results(d, script=toy), "env": make_env(d), "show": has_show}  # type: ignore[dict-item]


def check(r: Result, codes: tuple[int, ...] = (0, 1, 2)) -> None:
    assert r.returncode is not None, f"hung (killed after the time limit): {r}"
    assert r.returncode in codes, str(r)
    assert "internal error" not in r.stderr, str(r)
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, str(r)
    assert r.grew_mb < RSS_BOUND_MB, f"peak RSS rose by {r.grew_mb:.0f} MB: {r}"


def trace_readers(made, path: Path) -> list[tuple]:
    """Every command that reads a trace, with ``path`` in the place of the trace it reads."""
    cmds = [("diff", path, made["trace"]), ("diff", "--json", made["trace"], path),
            ("check", "--against", path, "--max-steps", 3, made["script"]),
            ("doctor", "--against", path, "--max-steps", 3, "--no-portability", made["script"])]
    if made["show"]:
        cmds.append(("show", path))
    return cmds


def results_readers(made, path: Path) -> list[tuple]:
    return [("compare", path), ("compare", "--resamples", 200, path, made["results"]),
            ("compare", "--json", "--resamples", 200, made["results"], path),
            ("sweep", "-q", "--seeds", 3, "-o", path, made["toy"])]


def env_readers(made, path: Path) -> list[tuple]:
    return [("env", "diff", path, made["env"]), ("env", "diff", "--json", made["env"], path)]


def run_all(made, cmds: list[tuple], codes: tuple[int, ...] = (0, 1, 2), **kw) -> None:
    for args in cmds:
        timeout = 180 if args[0] in ("check", "doctor", "sweep") else 60
        check(twinrun(*args, cwd=made["dir"], timeout=timeout, **kw), codes)


# --- 1. mutation fuzz ----------------------------------------------------------------------------------

JSON_TEXT = st.sampled_from([
    "5", "[]", "null", "{}", "true", '"x"', "[-1]", "[0]", "[1e308]", "[4294967296, 4294967296]", "[1.5]",
    '["a"]', "[[2]]", '{"a": ' * 2000 + "1" + "}" * 2000, DEEP, "[" * 100_000, "twinrun-trace", '"twinrun-sweep"',
    "1", "99", "-1", '{"schema": "twinrun-sweep"}', '[[0, "nan"]]', '[[0, 1e999]]', '[["a", "b"]]', "complete",
    "running", "float32", "bfloat16", "float8_e4m3fn", "object", "<f4", "\x1b]52;c;x\x07", "",
])
ANY_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                        max_leaves=12).map(lambda v: json.dumps(v, allow_nan=True))
SQL_VALUE = st.one_of(
    st.none(),
    st.integers(-2**63, 2**63 - 1),
    st.sampled_from([0, 1, -1, 2, 3, 2**31, 2**32, 2**53 + 1, 2**63 - 1, -2**63]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("inf"), float("-inf"), -0.0, 1e308, 5e-324]),
    st.text(max_size=40),
    JSON_TEXT,
    ANY_JSON,
    st.binary(max_size=80),
    st.sampled_from([b"", b"\x00" * 16, b"\x00" * 1_000_000, bytes(range(256))]),
)


def _mutate(path: Path, data) -> str:
    """Set one cell, or a whole column, of a table of ``path`` to a drawn value; say what was done."""
    con = sqlite3.connect(path, isolation_level=None)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_schema WHERE type = 'table' "
                                            "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        table = data.draw(st.sampled_from(tables), label="table")
        info = con.execute(f"PRAGMA table_info({table})").fetchall()
        column = data.draw(st.sampled_from([r[1] for r in info]), label="column")
        value = data.draw(SQL_VALUE, label="value")
        keys = [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5]]
        rows = con.execute(f"SELECT {', '.join(keys)} FROM {table}").fetchall() if keys else []
        whole = not rows or data.draw(st.booleans(), label="whole column")
        try:
            if whole:
                con.execute(f"UPDATE OR REPLACE {table} SET {column} = ?", (value,))
                where = "every row"
            else:
                row = data.draw(st.sampled_from(rows), label="row")
                con.execute(f"UPDATE OR REPLACE {table} SET {column} = ? WHERE "
                            + " AND ".join(f"{k} = ?" for k in keys), (value, *row))
                where = f"row {row}"
        except sqlite3.Error as e:   # e.g. text into an INTEGER PRIMARY KEY: SQLite itself refuses
            return f"(not applied: {e})"
        return f"{table}.{column} = {value!r:.80} at {where}"
    finally:
        con.close()


def fuzz_trace(made, tmp_path_factory, data) -> None:
    path = copy(made["trace"], tmp_path_factory.mktemp("fuzz") / "mut.trace")
    what = _mutate(path, data)
    data.draw(st.just(what), label="mutation")
    run_all(made, trace_readers(made, path))


def fuzz_results(made, tmp_path_factory, data) -> None:
    path = copy(made["results"], tmp_path_factory.mktemp("fuzz") / "mut.db")
    what = _mutate(path, data)
    data.draw(st.just(what), label="mutation")
    run_all(made, results_readers(made, path), codes=(0, 1, 2, 3))   # sweep: 3 when the script's runs fail


@fuzz_settings(EXAMPLES)
@given(data=st.data())
def test_fuzz_every_column_of_a_trace(made, tmp_path_factory, data):
    fuzz_trace(made, tmp_path_factory, data)


@fuzz_settings(EXAMPLES)
@given(data=st.data())
def test_fuzz_every_column_of_a_results_file(made, tmp_path_factory, data):
    fuzz_results(made, tmp_path_factory, data)


@pytest.mark.expensive
@fuzz_settings(DEEP_EXAMPLES)
@given(data=st.data())
def test_deep_fuzz_every_column_of_a_trace(made, tmp_path_factory, data):
    fuzz_trace(made, tmp_path_factory, data)


@pytest.mark.expensive
@fuzz_settings(DEEP_EXAMPLES)
@given(data=st.data())
def test_deep_fuzz_every_column_of_a_results_file(made, tmp_path_factory, data):
    fuzz_results(made, tmp_path_factory, data)


# --- 2. the corpus of hostile files ------------------------------------------------------------------------

def _truncated(offset_of):
    def make(good: Path, dst: Path) -> Path:
        data = good.read_bytes()
        dst.write_bytes(data[:offset_of(len(data))])
        return dst
    return make


def _bytes(content: bytes):
    def make(good: Path, dst: Path) -> Path:
        dst.write_bytes(content)
        return dst
    return make


def _fifo(good: Path, dst: Path) -> Path:
    os.mkfifo(dst)
    return dst


def _loop(good: Path, dst: Path) -> Path:
    other = dst.with_name(dst.name + ".other")
    os.symlink(other, dst)
    os.symlink(dst, other)
    return dst


def _folder(good: Path, dst: Path) -> Path:
    dst.mkdir()
    return dst


def _sql(*statements):
    return lambda good, dst: edit(copy(good, dst), *statements)


GENERIC = {
    "empty": _bytes(b""),
    "random": _bytes(random.Random(12).randbytes(8192)),
    "sqlite-magic-only": _bytes(b"SQLite format 3\x00"),
    "header-only": lambda good, dst: _bytes(good.read_bytes()[:100])(good, dst),
    "fifo": _fifo,
    "symlink-loop": _loop,
    "folder": _folder,
}
TRUNCATIONS = {f"truncated-{name}": _truncated(fn) for name, fn in {
    "50": lambda n: 50, "1000": lambda n: 1000, "4096": lambda n: 4096, "4097": lambda n: 4097,
    "8192": lambda n: 8192, "half": lambda n: n // 2, "minus-1": lambda n: n - 1, "minus-4096": lambda n: n - 4096,
}.items()}
TRACE_ONLY = {
    "newer-schema": _sql("UPDATE meta SET value = '99' WHERE key = 'schema_version'"),
    "view": view_trace,
    "trigger": trigger_trace,
    "generated-column": generated_column_trace,
    "expression-index": expression_index_trace,
    # schema 2: diff skips the steps whose summaries are equal in both traces without reading them
    # (docs/traces.md), so an attack on the events of every step changes every step's summary too
    "huge-shapes": _sql("UPDATE events SET shape = '[4294967296, 4294967296]'", "UPDATE steps SET summary = 'x'"),
    "negative-shapes": _sql("UPDATE events SET shape = '[-3, 5]'", "UPDATE steps SET summary = 'x'"),
    "deep-json-header": _sql(("UPDATE meta SET value = ? WHERE key = 'header'", (DEEP,))),
    "deep-json-shape": _sql(("UPDATE events SET shape = ?", (DEEP,)), "UPDATE steps SET summary = 'x'"),
    "packed-deep-json-shapes": _sql(("UPDATE packed SET shapes = ?", (DEEP,)), "UPDATE steps SET summary = 'x'"),
    "packed-huge-shapes": _sql("UPDATE packed SET shapes = '[[4294967296, 4294967296]]'",
                               "UPDATE steps SET summary = 'x'"),
    "step-as-text": _sql("UPDATE events SET step = 'zero' WHERE step = 0"),
    # schema 2: a step's kept values are one blob; the first packed event's digest zeroed and the step's
    # summary changed, so that diff reads the step and the divergent value
    "huge-value": _sql("UPDATE step_values SET data = zeroblob(70000000) WHERE step = 0",
                       "UPDATE packed SET digests = '" + "0" * 32 + "' || substr(digests, 33) WHERE step = 0",
                       "UPDATE steps SET summary = 'changed' WHERE step = 0"),
}
RESULTS_ONLY = {
    "newer-schema": _sql("UPDATE meta SET value = '99' WHERE key = 'schema_version'"),
    "generated-column": generated_column_results,
    "view": _sql("ALTER TABLE runs RENAME TO runs_t", "CREATE VIEW runs AS SELECT arm, idx, seed, env, status, "
                 "returncode, hex(zeroblob(4000000)) AS error, duration, host, finished FROM runs_t"),
    "trigger": _sql("CREATE TRIGGER t AFTER INSERT ON runs BEGIN DELETE FROM metrics; END"),
    "deep-json-args": _sql(("UPDATE meta SET value = ? WHERE key = 'args'", (DEEP,))),
    "deep-json-series": _sql(("UPDATE metrics SET series = ?", (DEEP,))),
    "huge-series": _sql("UPDATE metrics SET series = '[' || replace(hex(zeroblob(3000000)), '00', '[0,1],') "
                        "|| '[0,1]]'"),
    "env-as-number": _sql("UPDATE runs SET env = '5'"),
    "seed-as-text": _sql("UPDATE runs SET seed = 'zero'"),
}
ENV_ONLY = {
    "deep-json": _bytes(b'{"schema": "twinrun.env/1", "cpu": ' + DEEP.encode() + b"}"),
    "list": _bytes(b"[1, 2, 3]"),
    "newer-schema": lambda good, dst: _bytes(good.read_bytes().replace(b"twinrun.env/1", b"twinrun.env/99"))(good, dst),
    "not-utf8": _bytes(b'{"schema": "twinrun.env/1", "x": "\xff\xfe"}'),
    "wrong-types": _bytes(b'{"schema": "twinrun.env/1", "cpu": 5, "env_vars": [], "packages": "x", "host": null}'),
}

READERS = {"trace": trace_readers, "results": results_readers, "env": env_readers}
CORPUS = ([(kind, name) for kind in READERS for name in GENERIC]
          + [(kind, name) for kind in ("trace", "results") for name in TRUNCATIONS]
          + [("trace", name) for name in TRACE_ONLY] + [("results", name) for name in RESULTS_ONLY]
          + [("env", name) for name in ENV_ONLY])


def _maker(kind: str, name: str):
    table = {"trace": TRACE_ONLY, "results": RESULTS_ONLY, "env": ENV_ONLY}[kind]
    return table.get(name) or GENERIC.get(name) or TRUNCATIONS[name]


# Corruptions of parts a command does not read may be ignored by it (exit 0/1); all else is bad input.
_UNREAD_BY_COMPARE = {"deep-json-series", "huge-series", "env-as-number", "seed-as-text"}


def _codes(kind: str, name: str, args: tuple) -> tuple[int, ...]:
    if name.startswith("truncated"):
        # a cut that falls after the last used page can leave a readable file
        return (0, 2, 3) if args[0] == "sweep" else (0, 1, 2)
    if args[0] == "sweep":   # sweep -o writes: an empty file is fresh to start in
        if name == "empty":
            return (0, 2)
        if name in _UNREAD_BY_COMPARE:
            return (0, 2, 3)
        return (2,)
    if kind == "results" and name in _UNREAD_BY_COMPARE:
        return (0, 1, 2)
    if kind == "env" and name == "wrong-types":
        return (1, 2)
    return (2,)


# Run by default (the CI budget): one file per kind of attack and per reader. The rest: -m expensive.
QUICK = {("trace", "fifo"), ("trace", "truncated-half"), ("trace", "generated-column"), ("trace", "deep-json-header"),
         ("trace", "huge-value"), ("results", "generated-column"), ("results", "trigger"), ("env", "deep-json")}
assert set(CORPUS) >= QUICK


@pytest.mark.parametrize("kind, name", [pytest.param(k, n, marks=() if (k, n) in QUICK else pytest.mark.expensive)
                                        for k, n in CORPUS])
def test_hostile_file_through_every_reader(made, tmp_path, kind, name):
    suffix = {"trace": ".trace", "results": ".db", "env": ".json"}[kind]
    path = _maker(kind, name)(made[kind], tmp_path / f"hostile{suffix}")
    for args in READERS[kind](made, path):
        timeout = 180 if args[0] in ("check", "doctor", "sweep") else 60
        check(twinrun(*args, cwd=made["dir"], timeout=timeout), _codes(kind, name, args))


@pytest.mark.skipif(not can_drop_file_capabilities(), reason="cannot make a file unreadable here")
@pytest.mark.parametrize("kind", sorted(READERS))
def test_unreadable_file_through_every_reader(made, tmp_path, kind):
    suffix = {"trace": ".trace", "results": ".db", "env": ".json"}[kind]
    path = copy(made[kind], tmp_path / f"locked{suffix}")
    path.chmod(0)
    for args in READERS[kind](made, path):
        check(twinrun(*args, cwd=made["dir"], timeout=180, drop_dac=True), (2,))
