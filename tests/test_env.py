"""twinrun.env: the fingerprint (no secrets, no framework imports), the ranked diff, and `twinrun env`."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest

from twinrun import UsageError, env

SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY",
    "GITHUB_TOKEN": "ghp_exampleexampleexample0123456789",
    "DB_PASSWORD": "hunter2-correct-horse",
    "TF_API_TOKEN": "tf-token-value-0xdeadbeef",          # matches the allow-listed TF_ prefix
    "MKL_LICENSE_KEY": "mkl-license-value-42",            # matches MKL_
    "TF_VAR_db_admin": "terraform-input-value-s3cr3t",    # Terraform input: a secret under any name
}


def run_twinrun(*args, env_extra=None, check_rc=None):
    e = {**os.environ, **(env_extra or {})}
    p = subprocess.run([sys.executable, "-m", "twinrun", *args], capture_output=True, text=True, env=e,
                       timeout=240)
    if check_rc is not None:
        assert p.returncode == check_rc, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    return p


def capture_in_subprocess(code_before: str = "", env_extra=None) -> dict:
    code = f"import json\n{code_before}\nfrom twinrun import env\nprint(json.dumps(env.capture()))"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env_extra or {})})
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout)


@pytest.fixture(scope="module")
def fp() -> dict:
    return env.capture()


def lower_capability(cap: str) -> str | None:
    """A torch capability strictly lower than ``cap`` — never higher, which dies of SIGILL."""
    return {"AVX512": "avx2", "AVX2": "default"}.get(cap)


# --- capture ------------------------------------------------------------------------------------
def test_capture_sections_are_json_ready(fp):
    doc = json.loads(json.dumps(fp))
    assert doc == fp
    assert fp["schema"] == env.SCHEMA
    for section in ("host", "python", "os", "libc", "cpu", "gpu", "packages", "threadpools", "frameworks", "env_vars"):
        assert section in fp
    assert fp["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert fp["cpu"]["count"] == os.cpu_count()
    assert fp["cpu"]["usable"] == len(os.sched_getaffinity(0))
    assert fp["packages"]["numpy"]["version"] == __import__("numpy").__version__


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="Linux /proc/cpuinfo")
def test_cpu_flags_are_the_numerics_relevant_ones_of_this_cpu(fp):
    with open("/proc/cpuinfo") as f:
        line = next(x for x in f if x.startswith(("flags", "Features")))
    all_flags = set(line.split(":", 1)[1].split())
    assert set(fp["cpu"]["flags"]) <= all_flags
    for f in ("avx2", "fma", "sse4_2"):
        assert (f in fp["cpu"]["flags"]) == (f in all_flags)
    assert ("avx512f" in fp["cpu"]["flags"]) == ("avx512f" in all_flags)
    assert "ht" not in fp["cpu"]["flags"] and "fpu" not in fp["cpu"]["flags"]


def test_build_label_comes_from_the_version(fp):
    torch_pkg = fp["packages"].get("torch")
    if torch_pkg is None:
        pytest.skip("torch not installed")
    assert torch_pkg["build"] == (torch_pkg["version"].partition("+")[2] or None)


def test_threadpools_match_threadpoolctl():
    from threadpoolctl import threadpool_info

    fp = env.capture()
    seen = sorted((p["internal_api"], p["num_threads"]) for p in fp["threadpools"].values())
    assert seen == sorted((i["internal_api"], i["num_threads"]) for i in threadpool_info())
    assert all(":" in k and "/" not in k for k in fp["threadpools"])


def test_no_secret_name_or_value_anywhere_in_the_json():
    p = run_twinrun("env", "--json", env_extra={**SECRETS, "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"},
                    check_rc=0)
    doc = json.loads(p.stdout)
    for name, value in SECRETS.items():
        assert name not in p.stdout and value not in p.stdout
        assert name not in p.stderr and value not in p.stderr
    assert doc["env_vars"]["OMP_NUM_THREADS"] == "1"  # the allow-list still lets numerics variables in
    assert doc["env_vars_withheld"] >= 3              # TF_API_TOKEN, MKL_LICENSE_KEY, TF_VAR_db_admin


def test_no_secret_in_library_capture(monkeypatch):
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    text = json.dumps(env.capture())
    assert not [s for s in [*SECRETS, *SECRETS.values()] if s in text]


def test_capture_imports_no_framework():
    code = ("import sys, json\nfrom twinrun import env\nfp = env.capture()\n"
            "print(json.dumps([m for m in ('torch', 'tensorflow', 'keras', 'jax', 'jaxlib', 'scipy', 'sklearn')"
            " if m in sys.modules]))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == []


def test_loaded_frameworks_report_their_settings():
    pytest.importorskip("torch")
    fp = capture_in_subprocess("import torch\ntorch.set_num_threads(1)")
    t = fp["frameworks"]["torch"]
    assert t["num_threads"] == 1
    assert t["cpu_capability"] == t["config"]["cpu_capability_usage"]
    assert t["deterministic_algorithms"] is False


# --- diff: realistic pairs ----------------------------------------------------------------------
def ranks(d) -> dict[str, str]:
    return {x.key: x.rank for x in d.differences}


def test_identical_fingerprints_have_no_difference(fp):
    d = env.diff(fp, copy.deepcopy(fp))
    assert d.differences == [] and d.numerics is False


def test_hostname_only_is_not_numerics(fp):
    b = copy.deepcopy(fp)
    b["host"]["hostname"] = fp["host"]["hostname"] + "-twin"
    b["captured_at"] = "2000-01-01T00:00:00+00:00"
    b["python"]["executable"] = "/opt/other/bin/python"
    d = env.diff(fp, b)
    assert d.numerics is False
    assert {x.rank for x in d.differences} == {"none"}
    assert "host.hostname" in ranks(d)
    assert all(x.why for x in d.differences)


def test_avx2_vs_avx512_flags_are_numerics(fp):
    wide = [f for f in fp["cpu"]["flags"] if not f.startswith(("avx512", "amx"))] + ["avx512f", "avx512bw"]
    narrow = [f for f in wide if not f.startswith(("avx512", "amx"))]
    a, b = copy.deepcopy(fp), copy.deepcopy(fp)
    a["cpu"]["flags"], b["cpu"]["flags"] = sorted(narrow), sorted(wide)
    d = env.diff(a, b)
    assert d.numerics
    flags = next(x for x in d.differences if x.key == "cpu.flags")
    assert flags.rank == "numerics" and "only B has AVX-512" in flags.why


def test_real_torch_capability_difference_is_numerics():
    pytest.importorskip("torch")
    a = capture_in_subprocess("import torch")
    lower = lower_capability(a["frameworks"]["torch"]["cpu_capability"])
    if lower is None:
        pytest.skip("this CPU's torch capability has nothing lower to emulate")
    b = capture_in_subprocess("import torch", env_extra={"ATEN_CPU_CAPABILITY": lower})
    assert b["frameworks"]["torch"]["cpu_capability"] == lower.upper()
    d = env.diff(a, b)
    r = ranks(d)
    assert r["frameworks.torch.cpu_capability"] == "numerics"
    assert r["env_vars.ATEN_CPU_CAPABILITY"] == "numerics"
    assert d.differences[0].rank == "numerics"


def test_torch_version_and_build_are_numerics(fp):
    a, b = copy.deepcopy(fp), copy.deepcopy(fp)
    a["packages"]["torch"] = {"version": "2.12.0+cpu", "build": "cpu"}
    b["packages"]["torch"] = {"version": "2.13.0+cu121", "build": "cu121"}
    d = env.diff(a, b)
    assert ranks(d)["packages.torch.version"] == "numerics"
    assert ranks(d)["packages.torch.build"] == "numerics"
    assert "torch" in next(x.why for x in d.differences if x.key == "packages.torch.version")


def test_mkl_vs_openblas_is_numerics(fp):
    a, b = copy.deepcopy(fp), copy.deepcopy(fp)
    a["threadpools"] = {"numpy:blas:libscipy_openblas": {
        "internal_api": "openblas", "version": "0.3.27", "threading_layer": "pthreads", "architecture": "Haswell",
        "num_threads": 2, "filepath": "/a/numpy.libs/libscipy_openblas64_-ff651d7f.so"}}
    b["threadpools"] = {"numpy:blas:libscipy_openblas": {
        "internal_api": "mkl", "version": "2024.2", "threading_layer": "intel", "architecture": None,
        "num_threads": 2, "filepath": "/b/lib/libmkl_rt.so.2"}}
    d = env.diff(a, b)
    r = ranks(d)
    key = "threadpools.numpy:blas:libscipy_openblas."
    assert r[key + "internal_api"] == r[key + "threading_layer"] == r[key + "version"] == "numerics"
    assert r[key + "filepath"] == "none"
    assert "MKL vs OpenBLAS" in next(x.why for x in d.differences if x.key == key + "internal_api")


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 usable cores")
def test_real_thread_count_difference_is_numerics():
    a = capture_in_subprocess("import numpy", env_extra={"OPENBLAS_NUM_THREADS": "1"})
    b = capture_in_subprocess("import numpy", env_extra={"OPENBLAS_NUM_THREADS": "2"})
    d = env.diff(a, b)
    r = ranks(d)
    assert [k for k in r if k.startswith("threadpools.") and k.endswith(".num_threads")]
    assert all(r[k] == "numerics" for k in r if k.endswith("num_threads") or k.endswith("_THREADS"))
    assert r["env_vars.OPENBLAS_NUM_THREADS"] == "numerics"


def test_possible_rank_and_sort_order(fp):
    a, b = copy.deepcopy(fp), copy.deepcopy(fp)
    b["python"]["version"] = "3.12.1"
    b["libc"]["version"] = "2.17"
    b["os"]["release"] = "5.15.0-generic"
    b["packages"]["pillow"] = {"version": "11.0.0", "build": None}
    a["packages"]["pillow"] = {"version": "10.4.0", "build": None}
    b["host"]["hostname"] = "elsewhere"
    b["env_vars"] = {**fp["env_vars"], "MKL_CBWR": "COMPATIBLE"}
    d = env.diff(a, b)
    r = ranks(d)
    assert r["python.version"] == r["libc.version"] == r["os.release"] == r["packages.pillow.version"] == "possible"
    assert r["env_vars.MKL_CBWR"] == "numerics"
    order = [x.rank for x in d.differences]
    assert order == sorted(order, key=env.RANKS.index) and order[0] == "numerics" and order[-1] == "none"
    assert all(x.why for x in d.differences)


def test_framework_on_one_side_is_one_difference(fp):
    a, b = copy.deepcopy(fp), copy.deepcopy(fp)
    a["frameworks"].pop("torch", None)
    b["frameworks"]["torch"] = {"version": "2.13.0+cpu", "cpu_capability": "AVX2", "num_threads": 2}
    d = env.diff(a, b)
    torch_keys = [x for x in d.differences if x.key.startswith("frameworks.torch")]
    assert len(torch_keys) == 1 and torch_keys[0].key == "frameworks.torch"
    assert torch_keys[0].a is None and torch_keys[0].b["cpu_capability"] == "AVX2"
    assert torch_keys[0].rank == "possible"


def test_to_dict_is_json_and_counts(fp):
    b = copy.deepcopy(fp)
    b["cpu"]["usable"] = 1
    doc = json.loads(json.dumps(env.diff(fp, b).to_dict()))
    assert doc["numerics"] is True and doc["counts"]["numerics"] == 1
    assert doc["differences"][0]["key"] == "cpu.usable"


@pytest.mark.parametrize("bad", [{}, {"schema": "other/1"}, [], "text", {"schema": "twinrun.env/99"}])
def test_diff_rejects_what_is_not_a_fingerprint(fp, bad):
    with pytest.raises(UsageError, match="fingerprint"):
        env.diff(bad, fp)


# --- command line -------------------------------------------------------------------------------
def test_cli_json_is_one_document_on_stdout(tmp_path):
    out = tmp_path / "fp.json"
    p = run_twinrun("env", "--json", "-o", str(out), check_rc=0)
    doc = json.loads(p.stdout)
    assert doc["schema"] == env.SCHEMA
    assert json.loads(out.read_text())["cpu"] == doc["cpu"]


def test_cli_terminal_summary(tmp_path):
    p = run_twinrun("env", check_rc=0)
    for word in ("python", "cpu", "packages", "numpy"):
        assert word in p.stdout
    assert not p.stdout.lstrip().startswith("{")


def test_cli_frameworks_option_includes_torch_settings():
    pytest.importorskip("torch")
    p = run_twinrun("env", "--json", "--frameworks", "torch", check_rc=0)
    assert "cpu_capability" in json.loads(p.stdout)["frameworks"]["torch"]


def test_cli_diff_exit_codes(tmp_path, fp):
    a = tmp_path / "a.json"
    a.write_text(json.dumps(fp))
    same_but_host = copy.deepcopy(fp)
    same_but_host["host"]["hostname"] = "twin"
    b = tmp_path / "b.json"
    b.write_text(json.dumps(same_but_host))
    p = run_twinrun("env", "diff", str(a), str(b), check_rc=0)
    assert "host.hostname" in p.stdout

    slower = copy.deepcopy(fp)
    slower["cpu"]["flags"] = [f for f in fp["cpu"]["flags"] if f != "fma"] if "fma" in fp["cpu"]["flags"] \
        else fp["cpu"]["flags"] + ["fma"]
    c = tmp_path / "c.json"
    c.write_text(json.dumps(slower))
    p = run_twinrun("env", "diff", str(a), str(c), "--json", check_rc=1)
    doc = json.loads(p.stdout)
    assert doc["numerics"] is True and doc["differences"][0]["key"] == "cpu.flags"
    run_twinrun("env", "diff", str(a), str(c), check_rc=1)


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ("this is not json", "not JSON"),
    ('{"steps": [1, 2]}', "not a twinrun environment fingerprint"),
    ("[1, 2, 3]", "not a twinrun environment fingerprint"),
])
def test_cli_diff_bad_files_give_one_line_and_exit_2(tmp_path, fp, content, message):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(fp))
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    for args in (["env", "diff", str(good), str(bad)], ["env", "diff", str(bad), str(good), "--json"]):
        p = run_twinrun(*args, check_rc=2)
        assert p.stdout == ""
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and str(bad) in lines[0]
        assert "Traceback" not in p.stderr


def test_cli_bad_options_exit_2():
    p = run_twinrun("env", "--frameworks", "pytorch", check_rc=2)
    assert len(p.stderr.strip().splitlines()) == 1 and "pytorch" in p.stderr
    p = run_twinrun("env", "diff", "only-one.json", check_rc=2)
    assert len(p.stderr.strip().splitlines()) == 1
