"""twinrun.deterministic: real frameworks switched, reported, restored; fresh processes where it matters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings

import pytest

torch = pytest.importorskip("torch")
from threadpoolctl import threadpool_info  # noqa: E402

import twinrun  # noqa: E402
from twinrun import UsageError  # noqa: E402
from twinrun.determinism import THREAD_ENV_VARS, current_settings, deterministic  # noqa: E402


def torch_state() -> dict:
    import torch.utils.deterministic as tud

    return {
        "algos": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_tf32": torch.backends.cudnn.allow_tf32,
        "precision": torch.get_float32_matmul_precision(),
        "fill": tud.fill_uninitialized_memory,
        "threads": torch.get_num_threads(),
        "cublas": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }


def process_state() -> dict:
    return {
        "env": {v: os.environ.get(v) for v in THREAD_ENV_VARS},
        "pools": sorted((i["filepath"], i["num_threads"]) for i in threadpool_info()),
    }


def run_py(code: str, env: dict | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    for var in THREAD_ENV_VARS:  # a fresh process starts from the machine's defaults
        full_env.pop(var, None)
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                       env=full_env, timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


@pytest.fixture
def clean_thread_env(monkeypatch):
    for var in THREAD_ENV_VARS:
        monkeypatch.delenv(var, raising=False)


def test_public_name():
    assert twinrun.deterministic is deterministic


def test_torch_flags_flip_and_restore_as_context_manager(clean_thread_env):
    torch.backends.cudnn.allow_tf32 = True  # torch's default; make sure there is something to flip
    before_torch, before_proc = torch_state(), process_state()
    assert before_torch["algos"] is False

    # Only torch: TensorFlow or JAX started by another test of this process would (rightly) report
    # their switches as too late.
    with deterministic(threads=1, frameworks=["torch"]) as report:
        inside = torch_state()
        assert inside == {
            "algos": True, "warn_only": True, "cudnn_deterministic": True, "cudnn_benchmark": False,
            "matmul_tf32": False, "cudnn_tf32": False, "precision": "highest", "fill": True, "threads": 1,
            "cublas": ":4096:8",
        }
        assert all(os.environ[v] == "1" for v in THREAD_ENV_VARS)
        assert all(i["num_threads"] == 1 for i in threadpool_info())
        torch_settings = {s.name: s for s in report.settings if s.framework == "torch"}
        assert torch_settings["torch.backends.cudnn.allow_tf32"].before is True
        assert torch_settings["torch.backends.cudnn.allow_tf32"].after is False
        assert all(s.took_effect and s.warning is None for s in report.settings), report.warnings
        assert report.warnings == []
        assert current_settings()["active"] == {"strict": False, "threads": 1}

    assert report.restored
    assert torch_state() == before_torch
    assert process_state() == before_proc
    assert current_settings()["active"] is None


def test_call_form_restores_with_restore_and_is_idempotent(clean_thread_env):
    before = torch_state()
    report = deterministic(strict=True)
    assert torch.is_deterministic_algorithms_warn_only_enabled() is False
    assert torch.are_deterministic_algorithms_enabled() is True
    report.restore()
    report.restore()
    assert torch_state() == before


def test_nested_blocks_restore_to_the_outer_state(clean_thread_env):
    before = torch_state()
    with deterministic(threads=1):
        with deterministic(strict=True):
            assert torch.is_deterministic_algorithms_warn_only_enabled() is False
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.get_num_threads() == 1
    assert torch_state() == before


def _unpool_input():
    x = torch.randn(1, 1, 4, 4)
    return torch.nn.functional.max_pool2d(x, 2, return_indices=True)


def test_strict_raises_on_a_nondeterministic_op():
    out, idx = _unpool_input()
    with deterministic(strict=True):
        with pytest.raises(RuntimeError, match="does not have a deterministic implementation"):
            torch.nn.functional.max_unpool2d(out, idx, 2)
    torch.nn.functional.max_unpool2d(out, idx, 2)  # allowed again after the block


def test_non_strict_warns_on_a_nondeterministic_op():
    out, idx = _unpool_input()
    with deterministic(strict=False):
        with pytest.warns(UserWarning, match="does not have a deterministic implementation"):
            torch.nn.functional.max_unpool2d(out, idx, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.nn.functional.max_unpool2d(out, idx, 2)  # no warning once restored


def test_report_to_dict_is_json():
    with deterministic(threads=2) as report:
        doc = json.loads(json.dumps(report.to_dict()))
    assert doc["threads"] == 2 and doc["strict"] is False
    names = {(s["framework"], s["name"]) for s in doc["settings"]}
    assert ("torch", "torch.use_deterministic_algorithms") in names
    assert ("process", "OMP_NUM_THREADS") in names
    assert set(doc["settings"][0]) == {"framework", "name", "before", "after", "want", "took_effect", "note",
                                       "warning", "when"}


@pytest.mark.parametrize("kwargs, match", [
    ({"threads": 0}, "threads must be a positive integer"),
    ({"threads": "2"}, "threads must be a positive integer"),
    ({"frameworks": ["pytorch"]}, "unknown framework 'pytorch'"),
])
def test_bad_arguments_raise_usage_error(kwargs, match):
    with pytest.raises(UsageError, match=match):
        deterministic(**kwargs)


def test_frameworks_limits_what_is_switched():
    before = torch_state()
    with deterministic(frameworks=["jax"]) as report:
        assert torch_state() == before
        assert not [s for s in report.settings if s.framework == "torch"]


def test_framework_imported_later_is_switched_at_import_and_reported():
    p = run_py("""
        import json, sys
        import twinrun
        report = twinrun.deterministic(threads=1)
        assert "torch" not in sys.modules and "torch" in report.pending
        import torch
        from threadpoolctl import threadpool_info
        assert torch.are_deterministic_algorithms_enabled() and torch.get_num_threads() == 1
        pools = {i["prefix"]: i["num_threads"] for i in threadpool_info()}  # torch brought libgomp
        late = [s.to_dict() for s in report.settings if s.when == "import"]
        report.restore()
        print(json.dumps({"late": late, "pending": report.pending, "pools": pools,
                          "pools_after": {i["prefix"]: i["num_threads"] for i in threadpool_info()},
                          "after_restore": [torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()]}))
    """)
    doc = json.loads(p.stdout)
    assert doc["late"] and all(s["took_effect"] for s in doc["late"])
    assert {s["framework"] for s in doc["late"]} == {"torch", "process"}
    assert doc["pools"]["libgomp"] == 1 and set(doc["pools"].values()) == {1}
    # restore puts back what the library had at its import (it read OMP_NUM_THREADS=1 then: see docs)
    tp = next(s for s in doc["late"] if s["name"] == "threadpoolctl")
    assert doc["pools_after"]["libgomp"] == tp["before"]["torch:openmp:libgomp"]
    assert "torch" not in doc["pending"]
    threads = next(s for s in doc["late"] if s["name"] == "torch.num_threads")
    assert threads["after"] == 1
    assert doc["after_restore"] == [False, threads["before"]]


def test_restored_report_leaves_a_later_import_alone():
    p = run_py("""
        import twinrun
        twinrun.deterministic().restore()
        import torch
        print(torch.are_deterministic_algorithms_enabled())
    """)
    assert p.stdout.strip() == "False"


TRAIN = """
    import hashlib, sys
    import twinrun
    import torch
    from sklearn.datasets import load_digits
    report = twinrun.deterministic(threads=int(sys.argv[1]))
    assert not report.warnings, report.warnings
    torch.manual_seed(0)
    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X, dtype=torch.float32) / 16.0
    y = torch.tensor(y)
    # FACTS.md: MKL's SGEMM for the grad_weight of a wide linear layer splits its sum by thread.
    model = torch.nn.Sequential(torch.nn.Linear(64, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(20):
        xb, yb = X[step * 64:(step + 1) * 64], y[step * 64:(step + 1) * 64]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xb), yb).backward()
        opt.step()
    w = torch.cat([p.detach().flatten() for p in model.parameters()])
    print(hashlib.sha256(w.numpy().tobytes()).hexdigest())
"""


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 usable cores to run 2 threads")
def test_threads_pin_training_results_across_fresh_processes():
    pytest.importorskip("sklearn")

    def weights(n):
        p = subprocess.run([sys.executable, "-c", textwrap.dedent(TRAIN), str(n)], capture_output=True,
                           text=True, timeout=240, env={k: v for k, v in os.environ.items()
                                                        if k not in THREAD_ENV_VARS})
        assert p.returncode == 0, p.stderr[-3000:]
        return p.stdout.strip()

    one_a, one_b, two = weights(1), weights(1), weights(2)
    assert one_a == one_b, "deterministic(threads=1) must repeat bitwise in fresh processes"
    assert one_a != two, "1 vs 2 threads should sum the wide layer's gradient in another order"


@pytest.mark.slow
def test_tensorflow_op_determinism_and_threads_restore_and_late_warning():
    pytest.importorskip("tensorflow")
    p = run_py("""
        import json, warnings
        import tensorflow as tf
        from tensorflow.python.framework import config as c
        import twinrun
        before = [c.is_op_determinism_enabled(), tf.config.experimental.tensor_float_32_execution_enabled(),
                  tf.config.threading.get_intra_op_parallelism_threads()]
        with twinrun.deterministic(threads=1) as r:
            inside = [c.is_op_determinism_enabled(), tf.config.experimental.tensor_float_32_execution_enabled(),
                      tf.config.threading.get_intra_op_parallelism_threads()]
            early = [s.to_dict() for s in r.settings if s.framework == "tensorflow"]
        after = [c.is_op_determinism_enabled(), tf.config.experimental.tensor_float_32_execution_enabled(),
                 tf.config.threading.get_intra_op_parallelism_threads()]
        tf.reduce_sum(tf.ones(10)).numpy()  # the runtime starts: thread counts are fixed from now on
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            late = twinrun.deterministic(threads=2)
        late_intra = [s.to_dict() for s in late.settings if s.name.endswith("intra_op_parallelism_threads")][0]
        print(json.dumps({"before": before, "inside": inside, "after": after, "early": early,
                          "late_intra": late_intra, "warned": [str(w.message) for w in caught]}))
    """)
    doc = json.loads(p.stdout)
    assert doc["before"] == [False, True, 0]
    assert doc["inside"] == [True, False, 1]
    assert doc["after"] == doc["before"]
    assert all(s["took_effect"] and not s["warning"] for s in doc["early"])
    assert doc["late_intra"]["took_effect"] is False
    assert "runtime had already started" in doc["late_intra"]["warning"]
    assert any("intra_op_parallelism_threads" in w for w in doc["warned"])


@pytest.mark.slow
def test_jax_xla_flags_warn_once_the_backend_started():
    pytest.importorskip("jax")
    p = run_py("""
        import json, os
        import jax, jax.numpy as jnp
        import twinrun
        with twinrun.deterministic() as early:
            flags_inside = os.environ.get("XLA_FLAGS")
            precision_inside = jax.config.jax_default_matmul_precision
        after = [os.environ.get("XLA_FLAGS"), jax.config.jax_default_matmul_precision]
        jnp.ones(4).sum().block_until_ready()
        late = twinrun.deterministic()
        xla = [s.to_dict() for s in late.settings if s.name == "XLA_FLAGS"][0]
        late.restore()
        print(json.dumps({"early": early.warnings, "flags_inside": flags_inside, "precision": precision_inside,
                          "after": after, "xla_late": xla, "final": os.environ.get("XLA_FLAGS")}))
    """, env={"XLA_FLAGS": "--xla_cpu_enable_fast_math=false"})
    doc = json.loads(p.stdout)
    assert doc["early"] == []
    assert doc["flags_inside"] == "--xla_cpu_enable_fast_math=false --xla_gpu_deterministic_ops=true"
    assert doc["precision"] == "highest"
    assert doc["after"] == ["--xla_cpu_enable_fast_math=false", None]
    assert "already started its backend" in doc["xla_late"]["warning"]
    assert doc["final"] == "--xla_cpu_enable_fast_math=false"


def test_current_settings_reads_live_state():
    s = current_settings()
    assert s["torch"]["torch.use_deterministic_algorithms"] == {
        "enabled": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled()}
    assert s["torch"]["torch.num_threads"] == torch.get_num_threads()
    assert set(s["process"]) >= set(THREAD_ENV_VARS) | {"threadpoolctl"}
    json.dumps(s)
