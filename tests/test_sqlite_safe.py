"""twinrun._sqlite: opening a trace or results file so that nothing in it runs and nothing on disk changes."""

from __future__ import annotations

import os
import resource
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from hardening_support import (
    DEEP,
    can_drop_file_capabilities,
    copy,
    drop_file_capabilities,
    edit,
    expression_index_trace,
    generated_column_trace,
    killed_trace,
    make_trace,
    sha,
    siblings,
    trigger_trace,
    view_trace,
)
from twinrun._errors import BadResultsError, BadTraceError
from twinrun._sqlite import (
    cut_off_message,
    decode_json,
    decode_shape,
    expect_type,
    expected_columns,
    is_wal_mode,
    json_depth,
    open_for_update,
    open_readonly,
    uri_of,
)


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return make_trace(tmp_path_factory.mktemp("good"))


@pytest.fixture(scope="module")
def trace_tables(good) -> dict:
    with open_readonly(good) as db:
        return db.tables()


def _db(path: Path, *sql: str) -> Path:
    con = sqlite3.connect(path)
    for s in sql:
        con.execute(s)
    con.commit()
    con.close()
    return path


# --- paths reach SQLite as paths ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["x%41.db", "r#1.db", "a?mode=rw.db", "sp ace.db", "%2e%2e.db"])
def test_uri_of_names_exactly_that_file(tmp_path, name):
    target = _db(tmp_path / name, "CREATE TABLE mine (a)")
    _db(tmp_path / "xA.db", "CREATE TABLE decoy (a)")
    con = sqlite3.connect(uri_of(target, mode="ro"), uri=True)
    assert [r[0] for r in con.execute("SELECT name FROM sqlite_schema")] == ["mine"]
    con.close()
    with open_readonly(target, what="a test file") as db:
        assert list(db.tables()) == ["mine"]


def test_a_missing_name_with_a_hash_creates_nothing(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(BadResultsError, match="no such file"):
        open_readonly(tmp_path / "out" / "r#1.db", error=BadResultsError)
    assert os.listdir(tmp_path / "out") == []


# --- nothing on disk changes ---------------------------------------------------------------------------

def test_reading_a_finished_trace_changes_nothing(good, tmp_path):
    p = copy(good, tmp_path / "t.trace")
    before = sha(p), os.stat(p).st_mtime_ns
    with open_readonly(p) as db:
        assert not db.copied and not db.wal_missing
        db.query("SELECT * FROM events")
        db.query("PRAGMA quick_check")
    assert (sha(p), os.stat(p).st_mtime_ns) == before
    assert siblings(p) == []


def test_a_killed_trace_is_read_from_a_private_copy_and_left_byte_identical(tmp_path):
    p = killed_trace(tmp_path)
    files = [p, Path(f"{p}-wal"), Path(f"{p}-shm")]
    before = [sha(f) for f in files]
    with open_readonly(p) as db:
        assert db.copied
        steps = [r[0] for r in db.query("SELECT step FROM steps ORDER BY step")]
        status = db.query("SELECT value FROM meta WHERE key = 'status'")
    assert steps[:6] == list(range(6)), "the steps in the -wal are read"
    assert status == [("running",)]
    assert [sha(f) for f in files] == before
    assert siblings(p) == ["-wal", "-shm"]
    tmp = os.environ.get("TMPDIR", "/tmp")
    leftovers = [d for d in os.listdir(tmp) if d.startswith(f"twinrun-read-{os.getpid()}-")]
    assert leftovers == [], "the private copy is removed on close"


def test_a_trace_copied_without_its_wal_is_reported_cut_off(tmp_path):
    p = killed_trace(tmp_path)
    alone = tmp_path / "alone"
    alone.mkdir()
    c = copy(p, alone / "run.trace")
    assert is_wal_mode(c.read_bytes()[:100])
    for finished in (None, lambda db: True):   # nothing at all is readable without the -wal
        with pytest.raises(BadTraceError) as e:
            open_readonly(c, finished=finished)
        assert str(e.value) == cut_off_message(c)
        assert "run.trace-wal" in str(e.value) and "cut off" in str(e.value)


def test_a_wal_mode_file_without_its_wal_is_read_when_the_caller_knows_it_finished(good, tmp_path):
    p = copy(good, tmp_path / "w.trace")
    edit(p, "PRAGMA journal_mode=WAL")   # closing folds the log back and removes it; the header stays WAL
    assert is_wal_mode(p.read_bytes()[:100]) and siblings(p) == []
    with pytest.raises(BadTraceError, match="cut off"):
        open_readonly(p)
    status = []
    with open_readonly(p, finished=lambda db: status.append(db.query("SELECT value FROM meta WHERE key = 'status'"))
                       or True) as db:
        assert db.wal_missing and db.copied
    assert status == [[("complete",)]]
    assert siblings(p) == []


def test_a_hot_journal_is_rolled_back_in_a_copy_only(tmp_path):
    p = tmp_path / "r.db"
    _db(p, "CREATE TABLE t (a)", "INSERT INTO t VALUES (1)")
    # A writer killed in the middle of a transaction leaves a hot -journal.
    code = textwrap.dedent(f"""
        import os, sqlite3
        con = sqlite3.connect({str(p)!r}, isolation_level=None)
        con.execute("PRAGMA cache_size=1")
        con.execute("BEGIN")
        con.executemany("INSERT INTO t VALUES (?)", [(b'x' * 4000,) for _ in range(200)])
        os._exit(0)
    """)
    subprocess.run([sys.executable, "-c", code], check=True)
    assert siblings(p) == ["-journal"]
    before = sha(p), sha(f"{p}-journal")
    with open_readonly(p, what="a test file") as db:
        assert db.copied
        assert db.query("SELECT count(*) FROM t") == [(1,)]
    assert (sha(p), sha(f"{p}-journal")) == before


# --- nothing in the schema runs ---------------------------------------------------------------------------

def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_generated_column_is_refused_before_it_runs(good, tmp_path):
    p = generated_column_trace(good, tmp_path / "gen.trace")
    # a small file: one page per table and index (64 KiB pages in trace schema 2, 7 of them)
    assert p.stat().st_size < 600_000
    peak = _peak_rss_mb()
    with pytest.raises(BadTraceError, match="generated column"):
        open_readonly(p)
    assert _peak_rss_mb() - peak < 100, "the generated column's expression ran"


@pytest.mark.parametrize("make, word", [(view_trace, "view"), (trigger_trace, "trigger"),
                                        (expression_index_trace, "index")])
def test_views_triggers_and_explicit_indexes_are_refused(good, tmp_path, make, word):
    p = make(good, tmp_path / f"{word}.trace")
    before = sha(p)
    with pytest.raises(BadTraceError, match=word):
        open_readonly(p)
    assert sha(p) == before


def test_a_stored_generated_column_is_refused(tmp_path):
    p = _db(tmp_path / "s.db",
            "CREATE TABLE meta (key TEXT, value TEXT, v2 TEXT GENERATED ALWAYS AS (upper(value)) STORED)")
    with pytest.raises(BadTraceError, match="generated column"):
        open_readonly(p)


def test_a_virtual_table_is_refused(tmp_path):
    p = tmp_path / "v.db"
    con = sqlite3.connect(p)
    try:
        con.execute("CREATE VIRTUAL TABLE meta USING fts5(key, value)")
    except sqlite3.OperationalError:
        pytest.skip("this SQLite has no fts5")
    con.commit()
    con.close()
    with pytest.raises(BadTraceError, match=r"virtual|unusual"):
        open_readonly(p)


def test_the_authorizer_allows_reading_only(good):
    with open_readonly(good) as db:
        assert db.query("SELECT count(*) FROM events")[0][0] > 0
        for sql in ("SELECT hex(zeroblob(1000))", "ATTACH ':memory:' AS x", "DELETE FROM meta",
                    "PRAGMA journal_mode=DELETE", "SELECT load_extension('x')"):
            with pytest.raises(BadTraceError):
                db.query(sql)


def test_a_value_over_the_length_limit_is_refused_by_sqlite(good, tmp_path):
    p = copy(good, tmp_path / "big.trace")
    edit(p, ("UPDATE meta SET value = ? WHERE key = 'header'", ("x" * 3_000_000,)))
    with open_readonly(p, max_value_bytes=1_000_000) as db:
        with pytest.raises(BadTraceError, match="larger than twinrun reads"):
            db.query("SELECT value FROM meta WHERE key = 'header'")
        assert db.query("SELECT value FROM meta WHERE key = 'format'") == [("twinrun-trace",)]


# --- the expected tables ------------------------------------------------------------------------------------

def test_require_tables_accepts_the_real_schema_and_names_each_difference(good, tmp_path, trace_tables):
    with open_readonly(good, expected=trace_tables) as db:
        assert set(db.tables()) == {"meta", "steps", "events", "step_values", "packed"}   # trace schema 2
    extra = edit(copy(good, tmp_path / "extra.trace"), "CREATE TABLE notes (a)")
    with pytest.raises(BadTraceError, match=r"table 'notes'.*newer twinrun"):
        open_readonly(extra, expected=trace_tables)
    missing = edit(copy(good, tmp_path / "missing.trace"), "DROP TABLE steps")
    with pytest.raises(BadTraceError, match="no table 'steps'"):
        open_readonly(missing, expected=trace_tables)
    other = edit(copy(good, tmp_path / "cols.trace"), "ALTER TABLE meta ADD COLUMN more TEXT")
    with pytest.raises(BadTraceError, match="table 'meta' has columns"):
        open_readonly(other, expected=trace_tables)


def test_expected_columns_reads_a_ddl_script():
    cols = expected_columns("CREATE TABLE IF NOT EXISTS runs (arm TEXT NOT NULL, idx INTEGER, PRIMARY KEY (arm, idx));"
                            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);")
    assert cols == {"runs": [("arm", "TEXT"), ("idx", "INTEGER")], "meta": [("key", "TEXT"), ("value", "TEXT")]}


# --- files that are not files ------------------------------------------------------------------------------------

def _finishes(fn, seconds: float = 10.0):
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "it hung"
    return box


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "pipe.trace"
    os.mkfifo(fifo)
    box = _finishes(lambda: open_readonly(fifo))
    assert isinstance(box.get("error"), BadTraceError) and "FIFO" in str(box["error"])


@pytest.mark.parametrize("case, message", [
    ("folder", "is a folder"), ("loop", "symbolic link loop"), ("dangling", "does not exist"),
    ("empty", "is empty"), ("random", "not an SQLite file"), ("short", "truncated"),
    ("badpage", "bad SQLite header"), ("missing", "no such file"),
])
def test_each_kind_of_non_trace_gets_its_own_message(tmp_path, case, message):
    p = tmp_path / "x.trace"
    if case == "folder":
        p.mkdir()
    elif case == "loop":
        os.symlink(tmp_path / "y.trace", p)
        os.symlink(p, tmp_path / "y.trace")
    elif case == "dangling":
        os.symlink(tmp_path / "nowhere", p)
    elif case == "empty":
        p.write_bytes(b"")
    elif case == "random":
        p.write_bytes(os.urandom(4096))
    elif case == "short":
        p.write_bytes(b"SQLite format 3\x00" + b"\x10\x00")
    elif case == "badpage":
        p.write_bytes(b"SQLite format 3\x00" + b"\x03\x00\x01\x01" + bytes(80))
    with pytest.raises(BadTraceError) as e:
        open_readonly(p)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.skipif(not can_drop_file_capabilities(), reason="cannot make a file unreadable here")
def test_an_unreadable_file_is_refused_with_its_reason(good, tmp_path):
    p = copy(good, tmp_path / "locked.trace")
    p.chmod(0)
    code = textwrap.dedent(f"""
        from twinrun._sqlite import open_readonly
        from twinrun._errors import BadTraceError
        try:
            open_readonly({str(p)!r})
        except BadTraceError as e:
            print(e)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                       preexec_fn=drop_file_capabilities)
    assert r.returncode == 0, r.stderr
    assert "permission denied" in r.stdout


# --- decoding values --------------------------------------------------------------------------------------------

def test_decode_json_bounds_depth_without_recursion():
    with pytest.raises(BadTraceError, match="nested more than 64 deep"):
        decode_json(DEEP, what="the header", path="x.trace")
    assert json_depth(DEEP) == 100_000
    assert json_depth('"[[[[" ') == 0
    assert decode_json('{"a": [[1]]}', what="h", path="x") == {"a": [[1]]}


@pytest.mark.parametrize("raw, message", [
    ("5", "not a JSON object"), ("[]", "not a JSON object"), ("null", "not a JSON object"),
    (5, "is an integer, not JSON text"), (None, "is NULL"), (b"\xff\xfe", "not UTF-8"),
    ("{", "not JSON"), ("x" * 40_000_000, "more than twinrun reads"),
])
def test_decode_json_refuses_each_wrong_header(raw, message):
    with pytest.raises(BadTraceError) as e:
        decode_json(raw, what="the trace header", path="x.trace", types=(dict,))
    assert message in str(e.value)


@pytest.mark.parametrize("raw", ["[-1]", "[2, -3]", "[true]", "[1.5]", '["2"]', "{}", "5", "[[2]]",
                                 "[" + ",".join(["1"] * 33) + "]", "[4294967296, 4294967296]", DEEP, None, b"[1]"])
def test_decode_shape_refuses_what_no_tensor_has(raw):
    with pytest.raises(BadTraceError, match="corrupt"):
        decode_shape(raw, path="x.trace")


def test_decode_shape_accepts_real_shapes():
    assert decode_shape("[]", path="x") == ()
    assert decode_shape("[0, 3]", path="x") == (0, 3)
    assert decode_shape("[64, 3, 32, 32]", path="x") == (64, 3, 32, 32)


def test_expect_type_names_the_sqlite_type():
    assert expect_type(3, int, what="a step", path="x") == 3
    assert expect_type(None, (bytes, type(None)), what="a value", path="x") is None
    for value in ("3", 3.0, b"3", None, True):
        with pytest.raises(BadTraceError, match=r"a step is .*not integer"):
            expect_type(value, int, what="a step", path="x")


# --- opening to add to a file -------------------------------------------------------------------------------

RESULTS_DDL = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (arm TEXT NOT NULL, idx INTEGER NOT NULL, status TEXT NOT NULL, PRIMARY KEY (arm, idx));
"""


def test_open_for_update_refuses_a_trigger_before_anything_is_written(tmp_path):
    p = tmp_path / "r.db"
    con = sqlite3.connect(p)
    con.executescript(RESULTS_DDL + "INSERT INTO meta VALUES ('keep', 'me');"
                      "CREATE TRIGGER t AFTER INSERT ON runs BEGIN DELETE FROM meta; END;")
    con.close()
    with pytest.raises(BadResultsError, match="trigger"):
        open_for_update(p, expected=expected_columns(RESULTS_DDL), error=BadResultsError)
    assert sqlite3.connect(p).execute("SELECT * FROM meta").fetchall() == [("keep", "me")]


def test_open_for_update_gives_a_connection_to_add_rows(tmp_path):
    p = tmp_path / "r.db"
    con = sqlite3.connect(p)
    con.executescript(RESULTS_DDL)
    con.close()
    con = open_for_update(p, expected=expected_columns(RESULTS_DDL), error=BadResultsError)
    with con:
        con.execute("INSERT INTO runs VALUES ('all', 0, 'ok')")
    con.close()
    assert sqlite3.connect(p).execute("SELECT * FROM runs").fetchall() == [("all", 0, "ok")]
    with pytest.raises(BadResultsError, match="no table 'metrics'"):
        open_for_update(p, expected={**expected_columns(RESULTS_DDL), "metrics": [("a", "")]}, error=BadResultsError)
