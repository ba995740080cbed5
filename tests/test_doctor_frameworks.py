"""twinrun doctor on real Keras and JAX scripts (examples/keras/, examples/jax/): the cause, where the
runs part, the fix in the framework's own words, and that the fixed variant passes `twinrun check`;
when a script repeats, the portability rows of its own framework (TensorFlow's oneDNN, XLA's ISA).

TensorFlow processes take seconds each: few doctor runs, two or three steps, tiny models.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from twinrun import _channel, frameworks
from twinrun.cpu import ISA_ORDER, cpu_flags
from twinrun.cpu import isa_level as cpu_isa
from twinrun.doctor import diagnose


def framework_isa_plans(fws, flags=None, environ=None):
    """The lower-ISA reruns of the frameworks ``fws`` (PyTorch's own are tested in test_doctor)."""
    flags = cpu_flags() if flags is None else flags
    environ = os.environ if environ is None else environ
    return frameworks.isa_variants(fws, flags, environ)

ROOT = Path(__file__).resolve().parents[1]
CNN = ROOT / "examples" / "keras" / "cnn_fit.py"
PIPELINE = ROOT / "examples" / "keras" / "tfdata_pipeline.py"
MLP = ROOT / "examples" / "jax" / "mlp.py"
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(autouse=True)
def _user_env(monkeypatch):
    # Doctor runs the script "as the user would": this shell must not already fix what is tested.
    for var in ("PYTHONHASHSEED", "TWINRUN_SEED", "OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "ONEDNN_MAX_CPU_ISA",
                "TF_ENABLE_ONEDNN_OPTS", "XLA_FLAGS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")


def check_passes(script: Path, *args) -> None:
    r = subprocess.run([sys.executable, "-m", "twinrun", "check", "--max-steps", "2", "--json", str(script), "--",
                        *map(str, args)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["identical"] is True


# --- Keras --------------------------------------------------------------------------------------

@pytest.mark.slow
def test_keras_tf_seed_alone_is_unseeded_init_and_keras_seeding_fixes_it():
    d = diagnose(CNN, ["--seeding", "tf", "--steps", "3"], max_steps=2)
    assert (d.verdict, d.cause) == ("not-reproducible", "unseeded-init"), d.summary
    assert (d.first_divergence.step, d.first_divergence.phase) == (0, "init")
    assert d.first_divergence.name.startswith("cnn/")
    # Keras 3 draws an unseeded initialiser's seed from Python's random: seeding it alone removes it
    assert d.confirmed and [e.name for e in d.evidence][:2] == ["baseline", "rngs"]
    assert d.source is not None and "cnn_fit.py:" in d.source["site"], d.source
    assert "keras.utils.set_random_seed(0)" in d.fix and "twinrun.seed_everything(0)" in d.fix
    assert "tf.random.set_seed` alone" in d.fix
    check_passes(CNN, "--seeding", "keras", "--steps", "3")


@pytest.mark.slow
def test_keras_unseeded_tf_data_shuffle_is_data_pipeline_order_and_its_seed_fixes_it():
    d = diagnose(PIPELINE, ["--unseeded", "shuffle", "--samples", "128", "--batch", "32"], max_steps=2)
    assert (d.verdict, d.cause, d.detail) == ("not-reproducible", "data-pipeline", "order"), d.summary
    assert (d.first_divergence.step, d.first_divergence.phase) == (0, "input")
    assert d.confirmed
    data = next(e for e in d.evidence if e.name == "data")
    # Keras's own draws from Python's and NumPy's RNGs are observed too; bisecting names the shuffle
    assert data.identical and "seed-tf-data" in [a.name for a in data.acted]
    assert d.source is not None and d.source["intervention"] == "seed-tf-data", d.source
    assert "tf.data.Dataset.shuffle(...)` at " in d.fix and "tfdata_pipeline.py:" in d.fix
    assert 'seed=seeds.tf("data")' in d.fix
    check_passes(PIPELINE, "--samples", "128", "--batch", "32")   # the same pipeline, shuffle seeded


@pytest.mark.slow
def test_keras_reproducible_with_onednn_and_isa_rows():
    d = diagnose(CNN, ["--seeding", "keras", "--steps", "3"], max_steps=3, portability=("cpu-isa",))
    assert (d.verdict, d.cause, d.first_divergence) == ("reproducible", "reproducible", None), d.summary
    isa = d.portability["cpu-isa"]
    assert isa["frameworks"] == ["keras", "tensorflow"]   # Keras imports JAX too, but never starts it
    settings = [r["setting"] for r in isa["runs"]]
    assert settings[0] == "TF_ENABLE_ONEDNN_OPTS=0"
    assert settings == [p.name for p in framework_isa_plans(["tensorflow", "keras"])[0]]
    own = cpu_isa(cpu_flags())
    for s in settings[1:]:   # oneDNN caps, only below this CPU's own level
        wanted = s.split("=")[1].replace("SSE41", "SSE4_2")
        assert own is not None and ISA_ORDER.index(wanted) < ISA_ORDER.index(own)
    assert isa["stable"] is all(r["identical"] for r in isa["runs"])
    off = isa["runs"][0]
    if off["identical"] is False:   # measured on the example CNN: oneDNN off gives other weights
        assert off["first_divergence"]["phase"] in ("forward", "grad", "loss", "param")
        assert "TF_ENABLE_ONEDNN_OPTS` to the same value" in d.fix


# --- JAX ------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_jax_key_from_the_clock_is_unseeded_init_found_by_fixing_the_clock():
    d = diagnose(MLP, ["--key-from-time"], max_steps=1)
    assert (d.verdict, d.cause, d.detail) == ("not-reproducible", "unseeded-init", "clock"), d.summary
    assert (d.first_divergence.step, d.first_divergence.phase) == (0, "init")
    assert d.first_divergence.name.startswith("dense")
    # The RNGs seeded and the program's clock fixed remove it, and the clock is the draw that acted.
    assert [(e.name, e.identical) for e in d.evidence] == [("baseline", False), ("rngs", True)]
    clock = d.evidence[-1]
    assert "time.time_ns()" in [a.what for a in clock.acted] and d.source["api"] == "time.time_ns()"
    assert "mlp.py:" in d.source["site"]
    assert 'seeds.jax("init")' in d.fix and "time.time_ns()` at " in d.fix
    check_passes(MLP)   # keys from twinrun's streams


@pytest.mark.slow
def test_jax_reproducible_with_thread_and_xla_isa_rows():
    d = diagnose(MLP, max_steps=3)
    assert (d.verdict, d.cause) == ("reproducible", "reproducible"), d.summary
    isa = d.portability["cpu-isa"]
    settings = [r["setting"] for r in isa["runs"]]
    assert settings == [p.name for p in framework_isa_plans(["jax"])[0]]
    own = cpu_isa(cpu_flags())
    if own in (None, "SSE4_2"):
        assert settings == [] and isa["stable"] is None and "no level below" in isa["note"]
    else:
        assert settings[-1] == "XLA_FLAGS=--xla_cpu_max_isa=SSE4_2"
        assert all(ISA_ORDER.index(s.rsplit("=", 1)[1]) < ISA_ORDER.index(own) for s in settings)
        lowest = isa["runs"][-1]
        if own == "AVX512":   # measured on an AVX-512 CPU: SSE4_2 code gives other numbers
            assert lowest["identical"] is False and isa["stable"] is False
            assert lowest["first_divergence"]["step"] == 0   # already the initial parameters (jax.random.normal)
            assert "xla_cpu_max_isa=SSE4_2" in d.fix
    tc = d.portability["thread-count"]
    if (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity"):
        assert tc["runs"][0]["setting"] == "one-cpu" and tc["stable"] in (True, False)
    else:
        assert tc["stable"] is None and "CPUs the process may use" in tc["note"]


def test_isa_plans_for_tensorflow_and_jax_stay_below_the_cpu_and_respect_user_settings():
    avx2 = {"sse4_2", "avx", "avx2", "fma"}
    names = [p.name for p in framework_isa_plans(["tensorflow"], flags=avx2, environ={})[0]]
    assert names == ["TF_ENABLE_ONEDNN_OPTS=0", "ONEDNN_MAX_CPU_ISA=AVX", "ONEDNN_MAX_CPU_ISA=SSE41"]
    names = [p.name for p in framework_isa_plans(["jax"], flags=avx2, environ={})[0]]
    assert names == ["XLA_FLAGS=--xla_cpu_max_isa=AVX", "XLA_FLAGS=--xla_cpu_max_isa=SSE4_2"]
    # The user's own XLA flags are kept, and a cap they set is the ceiling.
    plans, _ = framework_isa_plans(["jax"], flags=avx2, environ={"XLA_FLAGS": "--xla_cpu_max_isa=AVX --foo=1"})
    assert [p.env["XLA_FLAGS"] for p in plans] == ["--foo=1 --xla_cpu_max_isa=SSE4_2"]
    # Nothing lower: said, not skipped.
    plans, why = framework_isa_plans(["tensorflow", "jax"], flags={"sse4_2"}, environ={"TF_ENABLE_ONEDNN_OPTS": "0"})
    assert plans == []
    assert any("TF_ENABLE_ONEDNN_OPTS: already 0" in w for w in why)
    assert any("--xla_cpu_max_isa (JAX): no level below SSE4_2" in w for w in why)
    plans, why = framework_isa_plans(["jax"], flags={"neon", "asimd"}, environ={})
    assert plans == [] and "not x86" in why[0]
    # NumPy brings none of these (a PyTorch script's rows are PyTorch's own).
    assert frameworks.adapter_class("numpy").isa_variants(avx2, {}) == ([], [])


def _twice_under(interventions: str, script: Path) -> tuple[list[subprocess.CompletedProcess], list[Path]]:
    """``script`` run twice in fresh processes under ``interventions``, each with its own reports file."""
    reports = [script.parent / f"reports-{i}.jsonl" for i in range(2)]
    runs = [subprocess.run([sys.executable, "-c",
                            "import sys, runpy, twinrun.interventions as iv; iv.apply(sys.argv[1]); "
                            "runpy.run_path(sys.argv[2], run_name='__main__')", interventions, str(script)],
                           capture_output=True, text=True, cwd=script.parent, timeout=300,
                           env={**os.environ, _channel.ENV: str(rep)}) for rep in reports]
    return runs, reports


def test_later_clock_moves_the_programs_clock_a_day_on_and_reports_nothing(tmp_path):
    """Doctor's second run of a pair: a seed of ``int(time.time())`` cannot repeat between two runs started
    in one instant; a library's clock (logging's) stays the real one."""
    import textwrap

    script = tmp_path / "later.py"
    script.write_text(textwrap.dedent("""
        import time, logging
        real = logging.LogRecord("x", 20, "f", 1, "m", None, None).created
        print(int(time.time() - real), int((time.time_ns() - real * 1e9) / 1e9))
    """))
    runs, reports = _twice_under("later-clock", script)
    assert runs[0].returncode == 0, runs[0].stderr
    assert runs[0].stdout.split() == ["90061", "90061"]   # 25 h 1 min 1.5 s later
    assert not reports[0].exists() or _channel.read(reports[0]) == []


def test_fixed_clock_fixes_the_programs_clock_only_and_one_cpu_pins_the_process(tmp_path):
    import textwrap

    script = tmp_path / "clock.py"
    script.write_text(textwrap.dedent("""
        import os, time, logging
        a = time.time_ns()
        b = time.time()
        record = logging.LogRecord("x", 20, "f", 1, "m", None, None)   # the standard library's own clock
        print(a, b, record.created - b > 1e6, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    """))
    runs, reports = _twice_under("fixed-clock,one-cpu", script)
    assert runs[0].returncode == 0, runs[0].stderr
    assert runs[0].stdout == runs[1].stdout          # the program's clock repeats
    a, b, real, cpus = runs[0].stdout.split()
    assert int(a) < float(b) * 1e9 and real == "True"   # rising; a library's clock is the real one
    assert cpus == "1"
    assert [(x["name"], x["what"]) for x in _channel.read(reports[0])] == [
        ("fixed-clock", "time.time_ns()"), ("fixed-clock", "time.time()")]


def test_tf_random_ops_without_a_seed_get_one_and_report_the_line_inside_a_traced_map(tmp_path):
    """``seed-tf-random``: an op without its own seed while no global seed is set draws another seed on
    every run; under the intervention it gets one from the data stream (two runs repeat) and its draw is
    reported at the program's line, the one inside the ``Dataset.map`` function that autograph converts,
    as the program's own call. After ``tf.random.set_seed`` nothing is touched or reported."""
    import textwrap

    script = tmp_path / "ops.py"
    script.write_text(textwrap.dedent("""\
        import tensorflow as tf
        def augment(img):
            img = tf.image.random_brightness(img, max_delta=0.5)
            return img
        ds = tf.data.Dataset.from_tensor_slices(tf.zeros((4, 2, 2, 1))).map(augment).batch(4)
        noise = tf.random.uniform((3,))
        tf.random.set_seed(1)
        later = tf.random.normal((3,))
        print([float(v) for v in tf.reshape(next(iter(ds)), [-1])[:4]], [float(v) for v in noise])
    """))
    runs, reports = _twice_under("seed-tf-random", script)
    assert runs[0].returncode == 0, runs[0].stderr[-2000:]
    assert runs[0].stdout == runs[1].stdout               # seeded: the augmentation and the noise repeat
    draws = [(a["api"], a["site"].rsplit(":", 1)[1], a["draw"], a["direct"]) for a in _channel.read(reports[0])
             if a.get("draw")]
    assert draws == [("tf.image.random_brightness", "3", "content", True), ("tf.random.uniform", "6", "content", True)]
