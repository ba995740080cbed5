"""twinrun._display (strings from files shown safely) and twinrun._lifeline (children die with twinrun)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinrun._display import shown, shown_lines
from twinrun._lifeline import anonymous_file, lifeline_argv, read_all, supported

# --- _display ----------------------------------------------------------------------------------------------

TERMINAL_ACTORS = ["\x1b]52;c;aGk=\x07", "\x1b[2J", "\x07", "\r", "\x08", "\x9b31m", "\x7f", "\u202e", "\u2066",
                   "\x00", "\u2028"]


@pytest.mark.parametrize("actor", TERMINAL_ACTORS)
def test_every_terminal_actor_is_escaped_visibly(actor):
    out = shown(f"layer{actor}name")
    assert out.startswith("layer") and out.endswith("name")
    assert not any(c in out for c in actor if not c.isprintable()), repr(out)
    assert "\\x" in out or "\\u" in out


@settings(max_examples=int(os.environ.get("TWINRUN_HYPOTHESIS_EXAMPLES", "100")), deadline=None, database=None)
@given(st.text(max_size=400), st.integers(10, 300))
def test_shown_never_lets_a_control_character_through_and_is_capped(text, limit):
    out = shown(text, limit)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in out)
    assert len(out) <= limit + len(f" ({len(text):,} characters)")
    if len(text) <= limit and all(c.isprintable() for c in text):
        assert out == text   # ordinary names pass unchanged


def test_shown_lines_keeps_lines_and_the_last_ones():
    text = "\n".join(f"line {i}\x1b[2J" for i in range(50))
    out = shown_lines(text, max_lines=3)
    assert out.splitlines() == ["line 47\\x1b[2J", "line 48\\x1b[2J", "line 49\\x1b[2J"]


# --- _lifeline ----------------------------------------------------------------------------------------------

pytestmark_linux = pytest.mark.skipif(not supported(), reason="parent-death signals are Linux-only")

PARENT = textwrap.dedent("""
    import os, subprocess, sys, threading, time
    from twinrun._lifeline import lifeline_argv
    child = [sys.executable, "-c", "import os, time; print(os.getpid(), flush=True); time.sleep(600)"]
    argv = lifeline_argv(child) if sys.argv[1] == "lifeline" else child

    def launch():   # from a thread that waits, as sweep's workers do
        p = subprocess.Popen(argv, stdout=sys.stdout, start_new_session=True)
        p.wait()

    threading.Thread(target=launch, daemon=True).start()
    time.sleep(600)
""")


def _child_of_killed_parent(mode: str, wait: float = 10.0) -> tuple[int, bool]:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, mode], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    return child, _alive(child)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytestmark_linux
def test_a_child_started_through_the_lifeline_dies_with_its_parent():
    _child, alive = _child_of_killed_parent("lifeline")
    assert not alive


@pytestmark_linux
def test_without_the_lifeline_the_child_outlives_its_parent():
    """The test above can fail: a plain child survives SIGKILL of its parent."""
    # Alive 2 s after its parent died is proof enough; the full 10 s would only add to the suite.
    child, alive = _child_of_killed_parent("plain", wait=2.0)
    try:
        assert alive
    finally:
        if alive:
            os.kill(child, signal.SIGKILL)


@pytestmark_linux
def test_the_lifeline_runs_the_command_with_its_arguments_and_exit_code():
    code = "import sys; print(sys.argv[1:]); sys.exit(7)"
    r = subprocess.run(lifeline_argv([sys.executable, "-c", code, "a b", "-x"]),
                       capture_output=True, text=True, check=False)
    assert r.returncode == 7 and r.stdout.strip() == "['a b', '-x']"
    r = subprocess.run(lifeline_argv(["/no/such/program"]), capture_output=True, text=True, check=False)
    assert r.returncode == 127 and "cannot start /no/such/program" in r.stderr


def test_an_anonymous_file_is_written_by_a_child_and_leaves_nothing_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    fd, path = anonymous_file("twinrun-metrics")
    try:
        subprocess.run([sys.executable, "-c", f"open({path!r}, 'a').write('{{\"loss\": 1}}\\n')"], pass_fds=(fd,),
                       check=True)
        subprocess.run([sys.executable, "-c", f"open({path!r}, 'a').write('{{\"loss\": 2}}\\n')"], pass_fds=(fd,),
                       check=True)
        assert read_all(fd) == b'{"loss": 1}\n{"loss": 2}\n'
        if supported():
            assert os.listdir(tmp_path) == []
    finally:
        os.close(fd)
        if not supported():
            os.unlink(path)
