"""twinrun._artifacts: twinrun replaces only a twinrun artefact of the same kind, and writes atomically."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from hardening_support import (
    copy,
    killed_trace,
    make_env,
    make_results,
    make_trace,
    sha,
    siblings,
)
from twinrun._artifacts import (
    Kind,
    atomic_write,
    check_target,
    identify,
    install_new,
    replace_in_place,
    write_text,
    writer_lock,
)
from twinrun._errors import UsageError


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("made")
    return {"trace": make_trace(d), "results": make_results(d), "env": make_env(d)}


# --- recognising artefacts by content --------------------------------------------------------------------

def test_identify_recognises_each_kind_by_content_whatever_its_name(made, tmp_path):
    assert identify(made["trace"]) is Kind.TRACE
    assert identify(made["results"]) is Kind.RESULTS
    assert identify(made["env"]) is Kind.ENV
    assert identify(copy(made["trace"], tmp_path / "looks.json")) is Kind.TRACE
    assert identify(copy(made["env"], tmp_path / "looks.trace")) is Kind.ENV


def test_identify_a_killed_trace_is_still_a_trace(tmp_path):
    p = killed_trace(tmp_path)
    before = [sha(p), sha(f"{p}-wal")]
    assert identify(p) is Kind.TRACE
    assert [sha(p), sha(f"{p}-wal")] == before


@pytest.mark.parametrize("content", [b"", b"print('hi')\n", b"SQLite format 3\x00" + bytes(200), b'{"schema": "x"}',
                                     b'{"name": "my-package", "version": "1.0"}', b"[" * 100_000,
                                     b'{"schema": "twinrun.env/1"' + b", " * 10 + b"nope"])
def test_identify_anything_else_is_none(tmp_path, content):
    p = tmp_path / "f"
    p.write_bytes(content)
    assert identify(p) is None


def test_identify_an_sqlite_file_of_another_program_or_with_a_view_is_none(made, tmp_path):
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    con.execute("INSERT INTO meta VALUES ('format', 'not-twinrun')")
    con.commit()
    con.close()
    assert identify(other) is None
    viewed = copy(made["trace"], tmp_path / "v.trace")
    con = sqlite3.connect(viewed)
    con.execute("CREATE VIEW v AS SELECT hex(zeroblob(10))")
    con.commit()
    con.close()
    assert identify(viewed) is None


def test_identify_special_files_is_none_and_never_blocks(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    done: list = []
    t = threading.Thread(target=lambda: done.append(identify(fifo)), daemon=True)
    t.start()
    t.join(5)
    assert done == [None]
    assert identify(tmp_path) is None
    assert identify(tmp_path / "missing") is None


# --- the rule ------------------------------------------------------------------------------------------

def test_check_target_allows_a_new_path_an_empty_file_and_the_same_kind(made, tmp_path):
    assert check_target(tmp_path / "new.trace", Kind.TRACE) == tmp_path / "new.trace"
    (tmp_path / "empty.trace").touch()
    check_target(tmp_path / "empty.trace", Kind.TRACE)
    check_target(made["trace"], Kind.TRACE)
    check_target(made["results"], Kind.RESULTS)
    check_target(made["env"], Kind.ENV)


@pytest.mark.parametrize("content", [b"my notes\n", b"import torch\n", b"\x00" * 100, b'{"a": 1}'])
def test_check_target_refuses_a_users_file_and_leaves_it_alone(tmp_path, content):
    p = tmp_path / "notes.trace"
    p.write_bytes(content)
    with pytest.raises(UsageError, match=r"exists and is not a twinrun trace.*delete the file yourself"):
        check_target(p, Kind.TRACE)
    assert p.read_bytes() == content
    assert siblings(p) == []


@pytest.mark.parametrize("have, want", [("trace", Kind.RESULTS), ("trace", Kind.ENV), ("results", Kind.TRACE),
                                        ("env", Kind.TRACE), ("env", Kind.RESULTS)])
def test_check_target_refuses_another_kind_of_artefact(made, have, want):
    with pytest.raises(UsageError, match=re.escape(f"is a {identify(made[have]).label}, not a {want.label}")):
        check_target(made[have], want)


def test_check_target_refuses_special_files(tmp_path):
    fifo = tmp_path / "pipe.trace"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match="FIFO"):
        check_target(fifo, Kind.TRACE)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    (tmp_path / "dir.trace").mkdir()
    with pytest.raises(UsageError, match="is a folder"):
        check_target(tmp_path / "dir.trace", Kind.TRACE)
    with pytest.raises(UsageError, match="names a folder"):
        check_target(f"{tmp_path}/", Kind.TRACE)
    os.symlink(tmp_path / "elsewhere.trace", tmp_path / "link.trace")
    with pytest.raises(UsageError, match="symbolic link"):
        check_target(tmp_path / "link.trace", Kind.TRACE)
    with pytest.raises(UsageError, match="does not exist"):
        check_target(tmp_path / "no" / "such" / "x.trace", Kind.TRACE)


def test_check_target_refuses_a_device_node(tmp_path):
    dev = tmp_path / "null.trace"
    try:
        os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("cannot create a device node here")
    with pytest.raises(UsageError, match="character device"):
        check_target(dev, Kind.TRACE)
    assert stat.S_ISCHR(os.lstat(dev).st_mode)


def test_check_target_protects_the_reference_and_the_script_under_any_spelling(made, tmp_path):
    ref = copy(made["trace"], tmp_path / "ref.trace")
    script = tmp_path / "train.py"
    script.write_text("print(1)\n")
    protected = [("the --against reference", ref), ("the script", script)]
    (tmp_path / "sub").mkdir()
    os.link(ref, tmp_path / "hard.trace")
    for spelling in (ref, tmp_path / "sub" / ".." / "ref.trace", tmp_path / "hard.trace"):
        with pytest.raises(UsageError, match="is the --against reference: writing there would destroy it"):
            check_target(spelling, Kind.TRACE, protected=protected)
    with pytest.raises(UsageError, match="is the script"):
        check_target(script, Kind.TRACE, protected=protected)
    check_target(tmp_path / "other.trace", Kind.TRACE, protected=protected)


# --- replacing in place ----------------------------------------------------------------------------

def test_replace_in_place_removes_an_old_trace_with_its_log(tmp_path):
    p = killed_trace(tmp_path)
    assert siblings(p) == ["-wal", "-shm"]
    replace_in_place(p, Kind.TRACE)
    assert not p.exists() and siblings(p) == []


def test_replace_in_place_removes_a_stale_log_but_never_a_users_file_named_like_one(made, tmp_path):
    p = tmp_path / "new.trace"
    stale = killed_trace(tmp_path, "old.trace")
    os.rename(f"{stale}-wal", f"{p}-wal")   # a log left behind by a deleted trace
    replace_in_place(p, Kind.TRACE)
    assert siblings(p) == []
    (tmp_path / "x.trace-wal").write_text("my notes")
    with pytest.raises(UsageError, match="is not SQLite's"):
        replace_in_place(tmp_path / "x.trace", Kind.TRACE)
    assert (tmp_path / "x.trace-wal").read_text() == "my notes"


# --- writing atomically ----------------------------------------------------------------------------

def test_write_text_replaces_an_env_file_atomically_keeping_its_mode(made, tmp_path):
    p = copy(made["env"], tmp_path / "env.json")
    p.chmod(0o640)
    doc = json.loads(p.read_text())
    doc["twinrun"] = "again"
    write_text(p, json.dumps(doc), Kind.ENV)
    assert json.loads(p.read_text())["twinrun"] == "again"
    assert stat.S_IMODE(p.stat().st_mode) == 0o640
    assert [f for f in os.listdir(tmp_path) if "twinrun-tmp" in f] == []


def test_write_text_refuses_a_script_and_leaves_it(tmp_path):
    s = tmp_path / "s.py"
    s.write_text("print('train')\n")
    with pytest.raises(UsageError, match="not a twinrun env fingerprint"):
        write_text(s, "{}", Kind.ENV)
    assert s.read_text() == "print('train')\n"


def test_atomic_write_leaves_the_old_file_when_writing_fails(made, tmp_path):
    p = copy(made["env"], tmp_path / "env.json")
    before = sha(p)
    with pytest.raises(RuntimeError), atomic_write(p, Kind.ENV) as f:
        f.write('{"half": ')
        raise RuntimeError("disk full")
    assert sha(p) == before
    assert os.listdir(tmp_path) == ["env.json"]


def test_atomic_write_checks_again_before_the_rename(tmp_path):
    p = tmp_path / "env.json"
    with pytest.raises(UsageError, match="exists and is not"), atomic_write(p, Kind.ENV) as f:
        f.write('{"schema": "twinrun.env/1"}')
        p.write_text("someone else's file")   # appeared meanwhile
    assert p.read_text() == "someone else's file"


def test_a_new_file_gets_the_usual_permissions(tmp_path):
    p = write_text(tmp_path / "env.json", '{"schema": "twinrun.env/1"}', Kind.ENV)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask


# --- creating once, and one writer at a time -------------------------------------------------------

def test_install_new_publishes_once(tmp_path):
    target = tmp_path / "r.db"
    a, b = tmp_path / ".a.tmp", tmp_path / ".b.tmp"
    a.write_text("first")
    b.write_text("second")
    assert install_new(a, target) is True
    assert install_new(b, target) is False
    assert target.read_text() == "first"
    assert not a.exists() and not b.exists()


def test_install_new_lets_exactly_one_of_many_racing_processes_win(tmp_path):
    code = textwrap.dedent(f"""
        import os, sys, time
        from twinrun._artifacts import install_new
        tmp = os.path.join({str(tmp_path)!r}, f".{{os.getpid()}}.tmp")
        open(tmp, "w").write(str(os.getpid()))
        while time.time() < float(sys.argv[1]):
            pass
        print(install_new(tmp, os.path.join({str(tmp_path)!r}, "r.db")))
    """)
    start = str(time.time() + 1.5)
    procs = [subprocess.Popen([sys.executable, "-c", code, start], stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert sorted(outs) == ["False", "False", "False", "True"]
    assert os.listdir(tmp_path) == ["r.db"]


def test_writer_lock_refuses_a_second_writer_and_dies_with_its_holder(made, tmp_path):
    p = copy(made["results"], tmp_path / "r.db")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from twinrun._artifacts import writer_lock
        with writer_lock({str(p)!r}):
            print("held", flush=True)
            time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UsageError, match="another twinrun process is writing"), \
                writer_lock(p, what="results file"):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with writer_lock(p):   # a killed holder leaves no lock behind
        pass
