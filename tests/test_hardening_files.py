"""Issue 12, black box: twinrun never destroys a user's file, never writes onto its reference, reaches
SQLite with paths (not URI text), and never changes a file it reads.

Each test runs ``python -m twinrun ...`` in a fresh process (under time and memory limits) on files made
by twinrun itself.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
from pathlib import Path

import pytest

from hardening_support import (
    NP_SCRIPT,
    TOY_SCRIPT,
    assert_clean,
    assert_one_line_error,
    copy,
    killed_trace,
    make_env,
    make_results,
    make_trace,
    sha,
    siblings,
    twinrun,
    write_script,
)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def np_script(tmp_path) -> Path:
    return write_script(tmp_path, "train.py", NP_SCRIPT)


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("made")
    return {"trace": make_trace(d), "results": make_results(d), "env": make_env(d)}


def _untouched(path: Path, digest: str) -> None:
    assert path.exists() and sha(path) == digest, f"{path} was changed"
    assert siblings(path) == [], f"SQLite files were created beside {path}: {siblings(path)}"


# --- -o refuses what is not a twinrun artefact of the same kind ------------------------------------------

@pytest.mark.parametrize("content", [b"my notes, not a trace\n", b"\x00\x01binary\xff", b'{"a": 1}\n'])
def test_run_o_refuses_a_users_file(tmp_path, np_script, content):
    target = tmp_path / "notes.txt"
    target.write_bytes(content)
    digest = sha(target)
    r = twinrun("run", "-o", target, np_script, cwd=tmp_path)
    line = assert_one_line_error(r)
    assert "notes.txt" in line
    _untouched(target, digest)


def test_run_o_onto_the_script_itself_is_refused(tmp_path, np_script):
    v = copy(np_script, tmp_path / "v.py")
    digest = sha(v)
    r = twinrun("run", "-o", "v.py", "v.py", cwd=tmp_path)
    line = assert_one_line_error(r)
    assert "v.py" in line and "script" in line
    _untouched(v, digest)


def test_run_o_onto_a_fifo_is_refused(tmp_path, np_script):
    fifo = tmp_path / "pipe.trace"
    os.mkfifo(fifo)
    r = twinrun("run", "-o", fifo, np_script, cwd=tmp_path, timeout=60)
    assert_one_line_error(r)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert siblings(fifo) == []


def test_run_o_onto_a_device_node_is_refused(tmp_path, np_script):
    dev = tmp_path / "null.trace"
    try:
        os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))   # a private /dev/null: never the real one
    except PermissionError:
        pytest.skip("cannot create a device node here")
    r = twinrun("run", "-o", dev, np_script, cwd=tmp_path)
    assert_one_line_error(r)
    assert stat.S_ISCHR(os.lstat(dev).st_mode)


@pytest.mark.parametrize("kind", ["results", "env"])
def test_run_o_refuses_another_kind_of_artefact(tmp_path, np_script, made, kind):
    target = copy(made[kind], tmp_path / f"{kind}.trace")
    digest = sha(target)
    r = twinrun("run", "-o", target, np_script, cwd=tmp_path)
    assert_one_line_error(r)
    _untouched(target, digest)


def test_run_o_replaces_a_trace(tmp_path, np_script, made):
    target = copy(made["trace"], tmp_path / "old.trace")
    digest = sha(target)
    r = twinrun("run", "-q", "-o", target, np_script, cwd=tmp_path)
    assert_clean(r, (0,))
    assert sha(target) != digest
    assert_clean(twinrun("diff", target, made["trace"], cwd=tmp_path), (0,))


def test_run_o_replaces_a_killed_trace_and_its_log(tmp_path, np_script):
    target = killed_trace(tmp_path, "old.trace")
    r = twinrun("run", "-q", "-o", target, np_script, cwd=tmp_path)
    assert_clean(r, (0,))
    assert siblings(target) == []
    assert_clean(twinrun("diff", target, target, cwd=tmp_path), (0,))


def test_check_keep_traces_never_overwrites_a_users_file(tmp_path, np_script):
    kept = tmp_path / "kept"
    kept.mkdir()
    mine = kept / "run-1.trace"
    mine.write_text("my own notes, named like a trace\n")
    digest = sha(mine)
    r = twinrun("check", "--keep-traces", kept, np_script, cwd=tmp_path)
    line = assert_one_line_error(r)
    assert "run-1.trace" in line
    _untouched(mine, digest)


def test_doctor_keep_traces_never_overwrites_a_users_file(tmp_path, np_script):
    kept = tmp_path / "kept"
    kept.mkdir()
    mine = kept / "01-baseline-1.trace"
    mine.write_text("my own notes, named like doctor's first trace\n")
    digest = sha(mine)
    r = twinrun("doctor", "--keep-traces", kept, "--max-steps", 2, "--no-portability", np_script, cwd=tmp_path)
    line = assert_one_line_error(r)
    assert "01-baseline-1.trace" in line and "not a twinrun trace" in line
    _untouched(mine, digest)


def test_check_keep_traces_replaces_its_own_traces(tmp_path, np_script, made):
    kept = tmp_path / "kept"
    kept.mkdir()
    copy(made["trace"], kept / "run-1.trace")
    r = twinrun("check", "-q", "--keep-traces", kept, np_script, cwd=tmp_path)
    assert_clean(r, (0,))
    assert sorted(os.listdir(kept)) == ["run-1.trace", "run-2.trace"]


@pytest.mark.parametrize("name, content", [("s.py", "print('train')\n"), ("package.json", '{"name": "x"}\n')])
def test_env_o_refuses_a_users_file(tmp_path, name, content):
    target = tmp_path / name
    target.write_text(content)
    digest = sha(target)
    r = twinrun("env", "-o", target, cwd=tmp_path)
    line = assert_one_line_error(r)
    assert name in line
    _untouched(target, digest)


def test_env_o_replaces_an_env_fingerprint(tmp_path, made):
    target = copy(made["env"], tmp_path / "env.json")
    r = twinrun("env", "-q", "-o", target, cwd=tmp_path)
    assert_clean(r, (0,))
    assert [f for f in os.listdir(tmp_path) if f != "env.json"] == []


@pytest.mark.parametrize("kind", ["text", "trace"])
def test_sweep_o_refuses_a_file_that_is_not_a_results_file(tmp_path, made, kind):
    toy = write_script(tmp_path, "toy.py", TOY_SCRIPT)
    target = tmp_path / "r.db"
    if kind == "text":
        target.write_text("my notes\n")
    else:
        copy(made["trace"], target)
    digest = sha(target)
    r = twinrun("sweep", "--seeds", 2, "-o", target, toy, cwd=tmp_path)
    assert_one_line_error(r)
    _untouched(target, digest)


@pytest.mark.parametrize("what", ["fifo", "notes", "folder"])
def test_html_refuses_what_is_not_a_report_and_never_blocks(tmp_path, made, what):
    target = tmp_path / "page.html"
    if what == "fifo":
        os.mkfifo(target)
    elif what == "notes":
        target.write_text("<!DOCTYPE html><p>my own page</p>\n")
    else:
        target.mkdir()
    r = twinrun("diff", "--html", target, made["trace"], made["trace"], cwd=tmp_path, timeout=60)
    line = assert_one_line_error(r)
    assert "page.html" in line
    if what == "notes":
        assert target.read_text() == "<!DOCTYPE html><p>my own page</p>\n"


@pytest.mark.parametrize("args", [("env", "freeze", "-o", "pipe.txt"), ("env", "check", "--lock", "pipe.txt")])
def test_env_lock_files_are_never_a_fifo(tmp_path, args):
    os.mkfifo(tmp_path / "pipe.txt")
    line = assert_one_line_error(twinrun(*args, cwd=tmp_path, timeout=60))   # not a hang
    assert "pipe.txt" in line


# --- never onto the reference --------------------------------------------------------------------------------

def test_run_against_r_o_r_is_refused(tmp_path, np_script, made):
    ref = copy(made["trace"], tmp_path / "R.trace")
    digest = sha(ref)
    r = twinrun("run", "--against", ref, "-o", ref, np_script, cwd=tmp_path)
    line = assert_one_line_error(r)
    assert "R.trace" in line
    _untouched(ref, digest)


def test_run_against_r_o_r_under_another_spelling_is_refused(tmp_path, np_script, made):
    ref = copy(made["trace"], tmp_path / "R.trace")
    (tmp_path / "sub").mkdir()
    digest = sha(ref)
    r = twinrun("run", "--against", "R.trace", "-o", "sub/../R.trace", np_script, cwd=tmp_path)
    assert_one_line_error(r)
    _untouched(ref, digest)


def test_check_against_a_trace_inside_keep_traces_is_refused(tmp_path, np_script, made):
    kept = tmp_path / "kt"
    kept.mkdir()
    ref = copy(made["trace"], kept / "run-1.trace")
    digest = sha(ref)
    r = twinrun("check", "--against", ref, "--keep-traces", kept, np_script, cwd=tmp_path)
    line = assert_one_line_error(r)
    assert "run-1.trace" in line
    _untouched(ref, digest)


# --- paths reach SQLite as paths ---------------------------------------------------------------------------

def test_compare_reads_the_file_named_with_a_percent(tmp_path, made):
    mine = copy(made["results"], tmp_path / "x%41.db")
    decoy = copy(made["results"], tmp_path / "xA.db")
    con = sqlite3.connect(decoy)
    con.execute("UPDATE metrics SET name = 'decoy_' || name")
    con.commit()
    con.close()
    r = twinrun("compare", "--json", "x%41.db", cwd=tmp_path)
    assert_clean(r, (0,))
    assert "accuracy" in r.stdout and "decoy_" not in r.stdout
    assert siblings(mine) == []


def test_compare_with_a_hash_in_the_name_creates_nothing(tmp_path, made):
    out = tmp_path / "out"
    out.mkdir()
    r = twinrun("compare", "out/r#1.db", cwd=tmp_path)
    assert_one_line_error(r)
    assert os.listdir(out) == [], f"created {os.listdir(out)}"
    copy(made["results"], out / "r#1.db")
    r = twinrun("compare", "--json", "out/r#1.db", cwd=tmp_path)
    assert_clean(r, (0,))
    assert sorted(os.listdir(out)) == ["r#1.db"]


def test_diff_reads_trace_names_with_uri_characters(tmp_path, made):
    a = copy(made["trace"], tmp_path / "a%41 #1?.trace")
    r = twinrun("diff", a, made["trace"], cwd=tmp_path)
    assert_clean(r, (0,))


# --- reading never changes the file -------------------------------------------------------------------------

def test_reading_a_finished_trace_or_results_file_changes_nothing(tmp_path, np_script, made):
    t = copy(made["trace"], tmp_path / "t.trace")
    db = copy(made["results"], tmp_path / "r.db")
    before = sha(t), sha(db)
    for args in (("diff", t, t), ("check", "-q", "--against", t, np_script), ("compare", db), ("compare", db, db)):
        assert_clean(twinrun(*args, cwd=tmp_path))
    assert (sha(t), sha(db)) == before
    assert siblings(t) == [] and siblings(db) == []


@pytest.mark.parametrize("command", ["diff", "check", "doctor"])
def test_reading_a_killed_trace_leaves_it_and_its_log_byte_identical(tmp_path, np_script, made, command):
    k = killed_trace(tmp_path)
    files = [k, Path(f"{k}-wal"), Path(f"{k}-shm")]
    before = [sha(f) for f in files]
    if command == "diff":
        r = twinrun("diff", k, made["trace"], cwd=tmp_path)
    elif command == "check":
        r = twinrun("check", "--against", k, "--max-steps", 2, np_script, cwd=tmp_path)
    else:
        r = twinrun("doctor", "--against", k, "--max-steps", 2, "--no-portability", np_script, cwd=tmp_path)
    assert r.returncode is not None, str(r)
    assert [f.exists() for f in files] == [True, True, True], "the -wal/-shm were merged and deleted"
    assert [sha(f) for f in files] == before


def test_a_trace_copied_without_its_wal_is_reported_as_cut_off(tmp_path, made):
    k = killed_trace(tmp_path)
    alone = tmp_path / "copied"
    alone.mkdir()
    c = copy(k, alone / "killed.trace")
    digest = sha(c)
    r = twinrun("diff", c, made["trace"], cwd=tmp_path)
    line = assert_one_line_error(r)
    assert "killed.trace-wal" in line and "cut off" in line
    _untouched(c, digest)


def test_a_killed_trace_with_its_log_is_readable_up_to_its_last_step(tmp_path, made):
    k = killed_trace(tmp_path, after_step=5)
    moved = tmp_path / "moved"
    moved.mkdir()
    for suffix in ("", "-wal"):
        shutil.copyfile(f"{k}{suffix}", moved / f"k.trace{suffix}")
    r = twinrun("diff", "--json", moved / "k.trace", moved / "k.trace", cwd=tmp_path)
    assert_clean(r, (0,))
