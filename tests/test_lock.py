"""Environment locks (twinrun.lock, ``twinrun env check --lock`` / ``env freeze``).

Real lock files: ``tests/data/locks/uv-project`` holds a uv.lock, a pylock.toml and a requirements.txt
that uv 0.13.9 wrote for its pyproject.toml (numpy, scipy, rich; a ``torch`` extra that brings the CUDA
libraries; a dev group); the other locks are written by the tests. The installed environment is the
real one this test runs in.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from twinrun import lock
from twinrun.lock import BadLockError, DriftStatus, Impact

UV_PROJECT = Path(__file__).parent / "data" / "locks" / "uv-project"
PY = sys.version_info[:2]
# uv forked numpy and scipy on the Python version
NUMPY = "2.2.6" if PY < (3, 11) else "2.4.6" if PY == (3, 11) else "2.5.5"
SCIPY = "1.15.3" if PY < (3, 11) else "1.17.1"


def write(folder: Path, name: str, text: str) -> Path:
    p = folder / name
    p.write_text(text, encoding="utf-8")
    return p


def versions(lk: lock.Lock, optional: bool | None = None) -> dict[str, str]:
    return {p.name: p.version for p in lk.packages if optional is None or p.optional == optional}


# --- ranking ----------------------------------------------------------------------------------------

def test_impact_ranks_frameworks_then_blas_then_cuda():
    assert lock.impact("torch") is Impact.FRAMEWORK
    assert lock.impact("Tensorflow_CPU") is Impact.FRAMEWORK
    assert lock.impact("numpy") is Impact.BLAS
    assert lock.impact("nvidia-cudnn-cu12") is Impact.CUDA
    assert lock.impact("cuda-bindings") is Impact.CUDA
    assert lock.impact("scikit-learn") is Impact.NUMERICS
    assert lock.impact("pillow") is Impact.POSSIBLE
    assert lock.impact("rich") is Impact.NONE
    assert [i.rank for i in Impact] == ["numerics"] * 4 + ["possible", "none"]


# --- requirements files -----------------------------------------------------------------------------

def test_requirements_with_comments_continuations_extras_markers_hashes_and_includes(tmp_path):
    write(tmp_path, "base.txt", "numpy==2.4.6  # the array library\n")
    write(tmp_path, "cons.txt", "scipy===1.17.1\n")
    req = write(tmp_path, "requirements.txt", """\
# a lock
--extra-index-url https://download.pytorch.org/whl/cpu
-r base.txt
--constraint=cons.txt
-e .
torch[opt-einsum]==2.13.0+cpu \\
    --hash=sha256:aaaa \\
    --hash sha256:bbbb
colorama==0.4.6 ; sys_platform == "win32"
rich==15.0.0 ; python_version >= '3.8'
numpy==2.4.6
Pygments==2.21.0
""")
    lk = lock.read_lock(req)
    assert lk.format == "requirements"
    got = versions(lk)
    expect_colorama = {"colorama": "0.4.6"} if sys.platform == "win32" else {}
    assert got == {"numpy": "2.4.6", "scipy": "1.17.1", "torch": "2.13.0+cpu", "rich": "15.0.0",
                   "pygments": "2.21.0", **expect_colorama}
    torch = next(p for p in lk.packages if p.name == "torch")
    assert torch.hashes == ("sha256:aaaa", "sha256:bbbb")
    assert torch.where == f"{req}:6"
    assert any("--extra-index-url" in n for n in lk.notes) and any("editable" in n for n in lk.notes)
    assert lk.sha256 == hashlib.sha256(req.read_bytes()).hexdigest()


def test_a_wheel_url_gives_its_version(tmp_path):
    req = write(tmp_path, "r.txt", "torch @ file:///opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl\n")
    assert versions(lock.read_lock(req)) == {"torch": "2.13.0+cpu"}


@pytest.mark.parametrize("text, words", [
    ("numpy>=1.26\n", "not an exact pin"),
    ("numpy==2.*\n", "not an exact pin"),
    ("numpy==2.4.6,<3\n", "not an exact pin"),
    ("numpy\n", "not an exact pin"),
    ("numpy==2.4.6\nnumpy==2.4.5\n", "pinned twice"),
    ("numpy==not-a-version!\n", "not a version"),
    ("git+https://example.org/x.git#egg=x\n", "URL requirement"),
    ("x @ https://example.org/x-1.0.tar.gz\n", "URL requirement"),
    ("--frobnicate\n", "unknown option --frobnicate"),
    ("numpy==2.4.6 --no-deps\n", "only --hash may follow"),
    ("numpy==2.4.6 --hash\n", "--hash without a value"),
    ("-r\n", "names no file"),
    ("-r https://example.org/r.txt\n", "is a URL"),
    ("-r missing.txt\n", "no such requirements file"),
    ("# nothing pinned\n", "no pinned package"),
    ("numpy==2.4.6 ; python_version >>> '3'\n", "bad environment marker"),
])
def test_requirements_that_are_not_locks_are_refused_in_one_line(tmp_path, text, words):
    req = write(tmp_path, "requirements.txt", text)
    with pytest.raises(BadLockError) as e:
        lock.read_lock(req)
    msg = str(e.value)
    assert words in msg and "\n" not in msg.strip()
    assert str(req) in msg or "missing.txt" in msg


def test_an_include_cycle_is_refused(tmp_path):
    write(tmp_path, "a.txt", "-r b.txt\nnumpy==2.4.6\n")
    write(tmp_path, "b.txt", "-r a.txt\n")
    with pytest.raises(BadLockError, match="includes itself"):
        lock.read_lock(tmp_path / "a.txt")


def test_unreadable_inputs(tmp_path):
    with pytest.raises(BadLockError, match="no such lock file"):
        lock.read_lock(tmp_path / "nope.txt")
    with pytest.raises(BadLockError, match="is a folder"):
        lock.read_lock(tmp_path)
    bad = tmp_path / "r.txt"
    bad.write_bytes(b"numpy==\xff\xfe\n")
    with pytest.raises(BadLockError, match="not UTF-8"):
        lock.read_lock(bad)
    with pytest.raises(BadLockError, match="not valid TOML"):
        lock.read_lock(write(tmp_path, "uv.lock", "version = 1\n[[package]\n"))
    with pytest.raises(BadLockError, match="reads version 1"):
        lock.read_lock(write(tmp_path, "uv.lock", "version = 2\n"))
    with pytest.raises(BadLockError, match=r"lock-version 1\.x"):
        lock.read_lock(write(tmp_path, "pylock.toml", 'lock-version = "2.0"\n'))
    with pytest.raises(BadLockError, match=r"neither a uv\.lock"):
        lock.read_lock(write(tmp_path, "env.toml", "[tool]\nx = 1\n"))


# --- the locks uv wrote -------------------------------------------------------------------------------

def test_uv_lock_follows_markers_forks_extras_and_groups():
    lk = lock.read_lock(UV_PROJECT / "uv.lock")
    assert lk.format == "uv.lock"
    required = versions(lk, optional=False)
    expect = {"numpy": NUMPY, "scipy": SCIPY, "rich": "15.0.0", "pygments": "2.21.0", "markdown-it-py": "4.3.0",
              "mdurl": "0.1.2"}
    if sys.platform == "win32":
        expect["colorama"] = "0.4.6"
    assert required == expect
    optional = versions(lk, optional=True)
    assert optional["torch"] == "2.13.0" and "pytest" in optional  # the torch extra, the dev group
    if sys.platform == "linux":
        assert "nvidia-cublas" in optional and "triton" in optional
    assert "digits-demo" not in versions(lk)  # the project itself
    numpy = next(p for p in lk.packages if p.name == "numpy")
    assert numpy.hashes and all(h.startswith("sha256:") for h in numpy.hashes)


def test_uv_lock_drift_is_ranked_by_numerics_impact():
    lk = lock.read_lock(UV_PROJECT / "uv.lock")
    have = versions(lk, optional=False)
    have["numpy"] = "1.26.4"          # another BLAS-level version: drift
    del have["scipy"]                 # missing: drift
    have["pygments"] = "2.0.0"        # drift that changes no numbers
    have["torch"] = "2.13.0+cpu"      # an extra, installed as a CPU build of the locked version
    have["jax"] = "0.10.2"            # a numerics package the lock does not name
    c = lock.check(lk, have)
    assert c.drifted and c.numerics
    rows = [(d.name, d.status, d.impact) for d in c.differences]
    assert rows == [
        ("numpy", DriftStatus.DIFFERENT, Impact.BLAS),
        ("scipy", DriftStatus.MISSING, Impact.BLAS),
        ("pygments", DriftStatus.DIFFERENT, Impact.NONE),
        ("torch", DriftStatus.BUILD, Impact.FRAMEWORK),
        ("jax", DriftStatus.UNLOCKED, Impact.FRAMEWORK),
    ]
    assert [d.name for d in c.drift] == ["numpy", "scipy", "pygments"]
    d = c.to_dict()
    assert d["counts"] == {"different": 2, "missing": 1, "build": 1, "unlocked": 1}
    assert d["differences"][0] == {"name": "numpy", "locked": NUMPY, "installed": "1.26.4", "status": "different",
                                   "drift": True, "impact": "blas", "rank": "numerics",
                                   "why": d["differences"][0]["why"]}
    json.dumps(d)  # JSON-ready


def test_only_drift_that_changes_no_numbers():
    lk = lock.read_lock(UV_PROJECT / "uv.lock")
    have = versions(lk, optional=False)
    have["mdurl"] = "0.1.0"
    c = lock.check(lk, have)
    assert c.drifted and not c.numerics
    assert [d.name for d in c.drift] == ["mdurl"]


def test_pylock_and_requirements_exported_by_uv_agree():
    py = lock.read_lock(UV_PROJECT / "pylock.toml")
    req = lock.read_lock(UV_PROJECT / "requirements.txt")
    assert py.format == "pylock.toml" and req.format == "requirements"
    assert versions(py) == versions(req)
    assert versions(py)["numpy"] == NUMPY
    # exported with --all-extras: torch and, on Linux, its CUDA libraries are required here
    if sys.platform == "linux":
        have = versions(py)
        for name in [n for n in have if n.startswith(("nvidia-", "cuda-")) or n == "triton"]:
            del have[name]
        have["torch"] = "2.13.0+cpu"
        c = lock.check(py, have)
        impacts = [d.impact for d in c.drift]
        assert impacts[0] is Impact.FRAMEWORK  # triton first
        assert set(impacts[1:]) == {Impact.CUDA}
        assert all(d.status is DriftStatus.MISSING for d in c.drift)
        assert [d.status for d in c.differences if d.name == "torch"] == [DriftStatus.BUILD]
    assert any("directory source" in n for n in py.notes)


def test_pylock_markers_and_overlapping_entries(tmp_path):
    text = """\
lock-version = "1.0"
default-groups = ["dev"]
[[packages]]
name = "numpy"
version = "2.4.6"
[[packages]]
name = "colorama"
version = "0.4.6"
marker = "sys_platform == 'win32'"
[[packages]]
name = "pytest"
version = "9.2.0"
marker = "'dev' in dependency_groups"
[[packages]]
name = "torch"
version = "2.13.0"
marker = "'gpu' in extras"
"""
    got = versions(lock.read_lock(write(tmp_path, "pylock.toml", text)))
    assert got == {"numpy": "2.4.6", "pytest": "9.2.0", **({"colorama": "0.4.6"} if sys.platform == "win32" else {})}
    twice = text + '[[packages]]\nname = "numpy"\nversion = "2.4.5"\n'
    with pytest.raises(BadLockError, match="locked twice"):
        lock.read_lock(write(tmp_path, "pylock.x.toml", twice))


def test_a_uv_lock_without_a_project_takes_every_package(tmp_path):
    text = ('version = 1\n[[package]]\nname = "numpy"\nversion = "2.4.6"\n'
            'source = { registry = "https://pypi.org/simple" }\n')
    lk = lock.read_lock(write(tmp_path, "uv.lock", text))
    assert versions(lk, optional=False) == {"numpy": "2.4.6"}
    assert any("no project" in n for n in lk.notes)


# --- the real environment -------------------------------------------------------------------------------

def test_freeze_pins_what_is_installed_and_checks_clean(tmp_path):
    text = lock.freeze()
    pins = dict(line.split("==", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert pins, text
    for name, version in pins.items():
        assert md.version(name) == version
        assert lock.impact(name).rank == "numerics"
    import numpy
    assert pins["numpy"] == numpy.__version__
    assert "twinrun" not in pins
    out = tmp_path / "requirements.lock.txt"
    lock.freeze(out)
    c = lock.check(out)
    assert c.to_dict()["counts"] == {"different": 0, "missing": 0, "build": 0, "unlocked": 0}
    assert not c.drifted


def test_check_reads_the_installed_versions():
    c = lock.check(UV_PROJECT / "uv.lock")
    for d in c.differences:
        if d.installed is not None:
            assert md.version(d.name) == d.installed
    have = lock.installed()
    assert have["numpy"] == md.version("numpy")


def test_freeze_hints_the_pytorch_index_for_local_builds(tmp_path):
    text = lock.freeze(have={"torch": "2.13.0+cu128", "torchvision": "0.28.0+cu128", "numpy": "2.4.6",
                             "nvidia-cublas-cu12": "12.8.4.1", "rich": "15.0.0"})
    lines = text.splitlines()
    assert "# --extra-index-url https://download.pytorch.org/whl/cu128" in lines
    pins = [x for x in lines if not x.startswith("#")]
    assert pins == ["torch==2.13.0+cu128", "torchvision==0.28.0+cu128", "numpy==2.4.6", "nvidia-cublas-cu12==12.8.4.1"]
    assert "whl/cpu" in lock.freeze(have={"torch": "2.13.0+cpu"})
    assert "extra-index-url" not in lock.freeze(have={"torch": "2.13.0", "numpy": "2.4.6"})
    everything = lock.freeze(have={"numpy": "2.4.6", "rich": "15.0.0", "twinrun": "0.1.0"}, everything=True)
    assert [x for x in everything.splitlines() if not x.startswith("#")] == ["numpy==2.4.6", "rich==15.0.0"]


def test_freeze_never_overwrites_a_file_it_did_not_write(tmp_path):
    mine = tmp_path / "lock.txt"
    lock.freeze(mine, have={"numpy": "2.4.6"})
    lock.freeze(mine, have={"numpy": "2.4.5"})  # its own: replaced
    assert "numpy==2.4.5" in mine.read_text()
    theirs = write(tmp_path, "requirements.txt", "numpy==1.0\n")
    with pytest.raises(BadLockError, match="not written by twinrun env freeze"):
        lock.freeze(theirs, have={"numpy": "2.4.6"})
    assert theirs.read_text() == "numpy==1.0\n"


def test_the_dev_constraints_file_is_a_lock_of_exact_pins():
    path = Path(__file__).resolve().parents[1] / "constraints" / "dev.txt"
    lk = lock.read_lock(path)
    names = versions(lk)
    assert "twinrun" not in names
    for name in ("torch", "numpy", "pytest", "tensorflow-cpu", "jax"):
        assert name in names


# --- a run's lock ---------------------------------------------------------------------------------------------

def test_lock_fingerprint_given_and_found(tmp_path):
    proj = tmp_path / "proj"
    (proj / "train" / "deep").mkdir(parents=True)
    script = proj / "train" / "deep" / "run.py"
    script.write_text("print(1)\n")
    (proj / ".git").mkdir()
    assert lock.lock_fingerprint(script=script) is None  # the search stops at the project's root
    dev = write(proj, "requirements-dev.txt", "pytest==9.2.0\n")
    fp = lock.lock_fingerprint(script=script)
    assert fp is not None and fp.path == str(dev) and fp.format == "requirements" and fp.found
    req = write(proj, "requirements.txt", "numpy==2.4.6\n")
    assert lock.lock_fingerprint(script=script).path == str(req)
    (proj / "uv.lock").write_bytes((UV_PROJECT / "uv.lock").read_bytes())
    fp = lock.lock_fingerprint(script=script)
    assert fp.path == str(proj / "uv.lock") and fp.format == "uv.lock"
    assert fp.sha256 == hashlib.sha256((UV_PROJECT / "uv.lock").read_bytes()).hexdigest()
    assert fp.others == (str(req), str(dev))
    near = write(proj / "train", "pylock.toml", 'lock-version = "1.0"\n')
    assert lock.lock_fingerprint(script=script).path == str(near)  # the nearest folder wins
    given = lock.lock_fingerprint(req)
    assert given.to_dict() == {"path": str(req.resolve()), "format": "requirements",
                               "sha256": hashlib.sha256(req.read_bytes()).hexdigest(), "found": False, "others": []}
    with pytest.raises(BadLockError, match="no such lock file"):
        lock.lock_fingerprint(proj / "nope.txt")


# --- the command line ------------------------------------------------------------------------------------------

def env_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "twinrun", "env", *args], check=False, capture_output=True,
                          text=True,
                          cwd=cwd, env={**os.environ, "COLUMNS": "200"}, timeout=120)


def test_cli_check_exit_codes(tmp_path):
    good = tmp_path / "good.txt"
    lock.freeze(good)
    r = env_cli("check", "--lock", str(good))
    assert r.returncode == 0, r.stderr
    assert "matches the lock" in r.stdout

    drift = write(tmp_path, "drift.txt", f"numpy==1.0.0\nrich=={md.version('rich')}\n")
    r = env_cli("check", "--lock", str(drift), "--json")
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert doc["drifted"] and doc["numerics"] and doc["format"] == "requirements"
    assert doc["differences"][0]["name"] == "numpy" and doc["differences"][0]["status"] == "different"

    r = env_cli("check", "--lock", str(drift))
    assert r.returncode == 1 and "numpy" in r.stdout and "can change numbers" in r.stdout

    bad = write(tmp_path, "bad.txt", "numpy>=1\n")
    r = env_cli("check", "--lock", str(bad))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "not an exact pin" in r.stderr and "Traceback" not in r.stderr
    r = env_cli("check", "--lock", str(tmp_path / "none.txt"))
    assert r.returncode == 2 and "no such lock file" in r.stderr


def test_cli_check_finds_the_lock_of_this_folder(tmp_path):
    (tmp_path / ".git").mkdir()
    r = env_cli("check", cwd=tmp_path)
    assert r.returncode == 2 and "no lock given and none found" in r.stderr
    lock.freeze(tmp_path / "requirements.txt")
    r = env_cli("check", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["lock"].endswith("requirements.txt")


def test_cli_freeze(tmp_path):
    r = env_cli("freeze")
    assert r.returncode == 0 and f"numpy=={md.version('numpy')}" in r.stdout.splitlines()
    out = tmp_path / "pins.txt"
    r = env_cli("freeze", "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["output"] == str(out) and out.read_text() == doc["text"]
    assert {"name": "numpy", "version": md.version("numpy"), "impact": "blas"} in doc["packages"]
    theirs = write(tmp_path, "requirements.txt", "numpy==1.0\n")
    r = env_cli("freeze", "-o", str(theirs))
    assert r.returncode == 2 and "not written by twinrun env freeze" in r.stderr


def test_uv_lock_follows_an_extra_of_a_dependency(tmp_path):
    text = """\
version = 1
requires-python = ">=3.10"

[[package]]
name = "proj"
version = "0.1.0"
source = { editable = "." }
dependencies = [{ name = "dask", extra = ["distributed"] }]

[[package]]
name = "dask"
version = "2026.8.0"
source = { registry = "https://pypi.org/simple" }

[package.optional-dependencies]
distributed = [{ name = "distributed" }]
array = [{ name = "numpy" }]

[[package]]
name = "distributed"
version = "2026.8.0"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "numpy"
version = "2.4.6"
source = { registry = "https://pypi.org/simple" }
"""
    lk = lock.read_lock(write(tmp_path, "uv.lock", text))
    assert versions(lk, optional=False) == {"dask": "2026.8.0", "distributed": "2026.8.0"}
    assert "numpy" not in versions(lk)  # dask's other extra was not asked for
    broken = text.replace('[{ name = "distributed" }]', '[{ name = "nowhere" }]')
    with pytest.raises(BadLockError, match="does not list"):
        lock.read_lock(write(tmp_path, "uv.lock", broken))
