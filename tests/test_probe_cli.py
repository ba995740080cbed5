"""twinrun probe SCRIPT: inference scripts run unchanged in real fresh processes; --json and exit codes.

The facts these rest on were measured on this machine's CPU (docs/inference.md): a Linear at batch
64 gives rows other bits than at 1 or 3 rows, a wide Linear at 10 rows splits its rows across 2
threads another way than 1 thread, index_put_(accumulate=True) sums in another order on every call
on 2 threads, and MKL_CBWR=COMPATIBLE changes every linear layer.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPTS = Path(__file__).resolve().parent / "scripts"
pytestmark = pytest.mark.timeout(900)


def probe(*argv: str, timeout: int = 600) -> tuple[int, dict[str, Any] | None, str]:
    """``twinrun probe ARGV --json`` in a fresh process: exit code, the JSON document, stderr."""
    out = subprocess.run([sys.executable, "-m", "twinrun", "probe", "--json", "-q", *argv],
                         capture_output=True, text=True, timeout=timeout, check=False)
    doc = json.loads(out.stdout) if out.stdout.strip() else None
    return out.returncode, doc, out.stderr


def test_linear_stack_fails_batch_invariance_with_the_first_layer_and_passes_under_batch_invariant():
    code, doc, err = probe("--checks", "repeat,batch_invariance", str(SCRIPTS / "infer_linear_stack.py"))
    assert code == 1, err
    bi = doc["checks"]["batch_invariance"]
    assert bi["stable"] is False and bi["first_layer"] == "0" and bi["max_ulp"] > 0
    assert len(bi["ulp_per_row"]) == 64 and max(bi["ulp_per_row"]) == bi["max_ulp"] and bi["rows_differing"] > 0
    assert doc["checks"]["repeat"]["stable"] is True and doc["checks"]["repeat"]["max_ulp"] == 0
    assert doc["checks"]["threads"] == {**doc["checks"]["threads"], "stable": None, "note": "not run (--checks)"}
    assert doc["calls"] == 1 and doc["batch"] == 64 and doc["model"] == "Sequential" and doc["stable"] is False
    assert "batch_invariance" in doc["sentence"] and "first layer 0" in doc["sentence"]

    code, doc, err = probe("--checks", "repeat,batch_invariance", str(SCRIPTS / "infer_linear_stack.py"),
                           "--", "--batch-invariant")
    assert code == 0, err
    assert doc["checks"]["batch_invariance"]["stable"] is True and doc["checks"]["batch_invariance"]["max_ulp"] == 0
    assert doc["stable"] is True


def test_wide_layer_fails_threads_and_passes_under_batch_invariant():
    found = None
    for rows in ("10", "5", "20"):   # MKL's split of rows across threads depends on the CPU: one must show it
        code, doc, err = probe("--checks", "threads", str(SCRIPTS / "infer_wide.py"), "--", "--rows", rows)
        assert code in (0, 1), err
        if code == 1:
            found = rows
            threads = doc["checks"]["threads"]
            assert threads["stable"] is False and threads["first_layer"] == "0" and threads["max_ulp"] > 0
            assert "thread" in threads["setting"] and len(threads["ulp_per_row"]) == int(rows)
            break
    assert found is not None, "no batch size showed a thread-count difference on this CPU"
    code, doc, err = probe("--checks", "threads", str(SCRIPTS / "infer_wide.py"), "--", "--rows", found,
                           "--batch-invariant")
    assert code == 0, err
    assert doc["checks"]["threads"]["stable"] is True


def test_repeat_fails_with_index_put_accumulate_on_two_threads_and_passes_deterministic(tmp_path):
    page = tmp_path / "probe.html"
    code, doc, err = probe("--checks", "repeat", "--html", str(page), str(SCRIPTS / "infer_index_put.py"))
    assert code == 1, err
    html = page.read_text(encoding="utf-8")   # the page holds the --json document unchanged
    embedded = json.loads(re.search(r'id="twinrun-document">(.*?)</script>', html, re.S).group(1))
    assert embedded["checks"]["repeat"] == json.loads(json.dumps(doc["checks"]["repeat"], sort_keys=True))
    repeat = doc["checks"]["repeat"]
    assert repeat["stable"] is False and repeat["first_layer"] == "1" and repeat["max_ulp"] > 0
    code, doc, err = probe("--checks", "repeat", str(SCRIPTS / "infer_index_put.py"), "--", "--deterministic")
    assert code == 0, err
    assert doc["checks"]["repeat"]["stable"] is True


@pytest.mark.slow
def test_isa_names_each_lower_instruction_set_and_says_when_it_cannot_tell():
    code, doc, err = probe("--checks", "isa", str(SCRIPTS / "infer_linear_stack.py"))
    assert code in (0, 1), err
    isa = doc["checks"]["isa"]
    variants = isa["details"]["variants"]
    assert variants, isa
    names = set(variants)
    if "MKL_CBWR=COMPATIBLE" in names:   # MKL's CPU-independent path changes every linear layer
        assert variants["MKL_CBWR=COMPATIBLE"]["stable"] is False and code == 1
        assert isa["stable"] is False and isa["first_layer"] == "0"
    if "ATEN_CPU_CAPABILITY=default" in names:
        # torch.randn, and so the model's seeded initialisation, changes there: no verdict on the model
        v = variants["ATEN_CPU_CAPABILITY=default"]
        assert v["stable"] is None and "inputs and parameters differ" in v["note"]
    assert [r["name"] for r in doc["runs"]] == ["default", *variants]


def test_every_call_up_to_max_calls_with_keyword_inputs():
    code, doc, err = probe("--checks", "repeat,batch_invariance", "--max-calls", "2", str(SCRIPTS / "infer_calls.py"))
    assert code in (0, 1), err
    assert doc["calls"] == 2 and [c["rows"] for c in doc["per_call"]] == [6, 5]
    assert doc["skipped"] == ["TwoInputs: beyond the first 2 calls"]
    assert doc["checks"]["repeat"]["stable"] is True
    assert all(set(c["checks"]) == {"repeat", "batch_invariance"} for c in doc["per_call"])


def test_unseeded_inputs_cannot_be_compared_across_processes_until_seeded():
    code, doc, err = probe("--checks", "threads", str(SCRIPTS / "infer_unseeded.py"))
    assert code == 1, err
    threads = doc["checks"]["threads"]
    assert threads["stable"] is None and "inputs and parameters differ" in threads["note"]
    assert "--seed 0" in threads["note"]
    code, doc, err = probe("--checks", "threads", "--seed", "0", str(SCRIPTS / "infer_unseeded.py"))
    assert code == 0, err
    assert doc["checks"]["threads"]["stable"] is True


def test_bad_inputs_are_one_line_errors_with_exit_2_and_a_failing_script_exit_3(tmp_path):
    def plain(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "twinrun", "probe", *argv], capture_output=True, text=True,
                              timeout=300, check=False)

    out = plain(str(SCRIPTS / "infer_no_model.py"))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        "twinrun probe: error: infer_no_model.py made no forward call of a model without gradients; run the "
        "inference under torch.no_grad() or torch.inference_mode() (calls with gradients are training, for "
        "twinrun check)")
    out = plain(str(SCRIPTS / "infer_jax.py"))
    assert out.returncode == 2 and "twinrun.probe(fn, batch)" in out.stderr.strip().splitlines()[-1]
    out = plain("--checks", "speed", str(SCRIPTS / "infer_calls.py"))
    assert out.returncode == 2 and "unknown check 'speed'" in out.stderr and "Traceback" not in out.stderr
    out = plain("--max-calls", "0", str(SCRIPTS / "infer_calls.py"))
    assert out.returncode == 2 and "max_calls (--max-calls) must be a whole number >= 1" in out.stderr
    out = plain(str(tmp_path / "missing.py"))
    assert out.returncode == 2 and "does not exist" in out.stderr
    (tmp_path / "notes.txt").write_text("mine")
    out = plain("--html", str(tmp_path / "notes.txt"), str(SCRIPTS / "infer_calls.py"))
    assert out.returncode == 2 and (tmp_path / "notes.txt").read_text() == "mine" and "Traceback" not in out.stderr
    out = plain("--json", str(SCRIPTS / "infer_fails.py"))
    assert out.returncode == 3
    assert "RuntimeError: the script's own error" in out.stderr and "twinrun/" not in out.stderr.split("Traceback")[1]
    assert json.loads(out.stdout)["script_failed"] is True
