"""Issue 12: ``twinrun redact FILE -o OUT`` writes a copy of a trace, a results file or an env fingerprint
that is safe to attach to a public issue. Every test greps the copy's bytes for what must not be there
(and the original's, so that the search can fail), and reads the copy back with twinrun.

The secrets are planted as an older twinrun (or another tool) would have stored them, raw, straight
into the original's header or meta with plain SQLite: this twinrun already redacts them when it
records, so a copy must not rely on that.
"""

from __future__ import annotations

import json
import socket
import sqlite3
from pathlib import Path

import pytest

from hardening_support import (
    NP_SCRIPT,
    TOY_SCRIPT,
    assert_clean,
    assert_one_line_error,
    copy,
    make_env,
    make_results,
    sha,
    twinrun,
    write_script,
)

pytestmark = pytest.mark.timeout(300)

SECRET = "sk-SHAREsecretabcdefghijklmnop"      # a token shape, planted raw
PASSWORD = "PWshareSECRETvalue"                  # in a URL's user-info, planted raw
USER = "zedalice"                                # a user name inside a home path
HOST = socket.gethostname()


@pytest.fixture
def work(tmp_path) -> Path:
    """A project folder with a distinctive name (the working folder must not survive a copy)."""
    folder = tmp_path / "proj-qq7x"
    folder.mkdir()
    return folder


def found(data: bytes, *needles: str) -> list[str]:
    return [n for n in needles if n.encode() in data]


def plant_header(trace: Path) -> None:
    """Put raw secrets and a home path into a trace's header, as an older twinrun would have stored them."""
    con = sqlite3.connect(trace)
    header = json.loads(con.execute("SELECT value FROM meta WHERE key = 'header'").fetchone()[0])
    header["command"] += ["--api-key", SECRET, "--data", f"/home/{USER}/data/digits.npz"]
    header["env"]["env_vars"]["JAX_COORDINATOR_ADDRESS"] = f"http://trainer:{PASSWORD}@10.0.0.1:1234"
    con.execute("UPDATE meta SET value = ? WHERE key = 'header'", (json.dumps(header),))
    con.commit()
    con.close()


def test_redact_a_trace(work):
    script = write_script(work, "train.py", NP_SCRIPT)
    assert_clean(twinrun("run", "-q", "-o", "t.trace", script, cwd=work), (0,))
    original = work / "t.trace"
    plant_header(original)
    before = sha(original)
    data = original.read_bytes()
    leaks = [SECRET, PASSWORD, USER, str(work)] + ([HOST] if len(HOST) >= 4 else [])
    assert found(data, *leaks) == leaks, "the original must hold what the copy must not"

    r = twinrun("redact", "t.trace", "-o", "shared.trace", cwd=work)
    assert_clean(r, (0,))
    shared = work / "shared.trace"
    assert found(shared.read_bytes(), *leaks) == []
    assert sha(original) == before, "redact changed its input"

    # Still a trace that explains a run: the same digests, the header's facts kept or marked.
    assert_clean(twinrun("diff", "shared.trace", "t.trace", cwd=work), (0,))
    doc = json.loads(twinrun("show", "--json", "shared.trace", cwd=work).stdout)
    assert doc["host"] == "<host>" and doc["script"] == "<cwd>/train.py" and doc["steps"] == 3
    con = sqlite3.connect(shared)
    header = json.loads(con.execute("SELECT value FROM meta WHERE key = 'header'").fetchone()[0])
    kept = con.execute("SELECT count(*) FROM events WHERE phase = 'input' AND value IS NOT NULL").fetchone()[0]
    con.close()
    assert header["cwd"] == "<cwd>"
    assert header["env"]["env_vars"]["JAX_COORDINATOR_ADDRESS"] == "http://trainer:<redacted>@10.0.0.1:1234"
    assert header["env"]["cpu"] == json.loads(
        sqlite3.connect(original).execute("SELECT value FROM meta WHERE key = 'header'").fetchone()[0])["env"]["cpu"]
    assert kept == 0, "the input values (samples of the data) were kept"


def test_redact_a_results_file_and_an_env_fingerprint(work):
    toy = write_script(work, "toy.py", TOY_SCRIPT)
    db = make_results(work, "r.db", seeds=2, script=toy)
    con = sqlite3.connect(db)
    error = f"fetch https://u:{PASSWORD}@h/x into /home/{USER}/data failed"
    con.execute("UPDATE runs SET error = ? WHERE idx = 0", (error,))
    con.execute("UPDATE meta SET value = ? WHERE key = 'args'", (json.dumps(["--api-key", SECRET]),))
    con.commit()
    con.close()
    env = make_env(work)
    leaks = [SECRET, PASSWORD, USER] + ([HOST] if len(HOST) >= 4 else [])
    assert found(db.read_bytes(), *leaks) == leaks

    assert_clean(twinrun("redact", "r.db", cwd=work), (0,))            # default name: r.shared.db
    shared = work / "r.shared.db"
    assert found(shared.read_bytes(), *leaks, str(work)) == []
    assert_clean(twinrun("compare", "--resamples", 200, "r.shared.db", cwd=work), (0,))
    meta = dict(sqlite3.connect(shared).execute("SELECT key, value FROM meta").fetchall())
    assert "args_sha256" not in meta and json.loads(meta["args"]) == ["--api-key", "<redacted>"]

    assert_clean(twinrun("redact", "-q", env, "-o", "e.json", cwd=work), (0,))
    fp = json.loads((work / "e.json").read_text())
    assert fp["host"]["hostname"] == "<host>" and fp["cpu"] == json.loads(env.read_text())["cpu"]
    assert_clean(twinrun("env", "diff", env, "e.json", cwd=work), (0,))  # only the host differs: not numerics


def test_redact_refuses_what_it_must_not_read_or_overwrite(work):
    notes = work / "notes.txt"
    notes.write_text("my notes\n")
    assert "not a twinrun trace" in assert_one_line_error(twinrun("redact", "notes.txt", cwd=work))
    script = write_script(work, "train.py", NP_SCRIPT)
    assert_clean(twinrun("run", "-q", "-o", "t.trace", script, cwd=work), (0,))
    digest = sha(notes)
    line = assert_one_line_error(twinrun("redact", "t.trace", "-o", "notes.txt", cwd=work))
    assert "notes.txt" in line and sha(notes) == digest
    assert "t.trace" in assert_one_line_error(twinrun("redact", "t.trace", "-o", "t.trace", cwd=work))
    other = copy(work / "t.trace", work / "other.trace")
    assert_clean(twinrun("redact", "-q", "t.trace", "-o", other, cwd=work), (0,))   # a trace: replaced
