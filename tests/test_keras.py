"""TensorFlow / Keras: seeding, determinism switches, fit recording, check on the Keras examples.

TensorFlow takes seconds to import, so fresh processes are few: one per example property, each with
few steps. The in-process tests share this process's TensorFlow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "keras"
CNN = EXAMPLES / "cnn_fit.py"
PIPELINE = EXAMPLES / "tfdata_pipeline.py"

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import twinrun  # noqa: E402
from helpers import run_twinrun  # noqa: E402
from twinrun.recording import record  # noqa: E402
from twinrun.trace import Trace  # noqa: E402

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _twinrun(*args, timeout=300):
    return run_twinrun(*args, env=ENV, timeout=timeout)


def _digits(n=256):
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images[:n, ..., None] / 16.0).astype("float32"), d.target[:n].astype("int32")


def _cnn(seed=1):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(16, activation="relu", name="hidden"),
        keras.layers.Dense(10, name="logits"),
    ], name="net")
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


# --- the examples, in fresh processes ------------------------------------------------------------

def test_cnn_weights_differ_between_seeds_and_repeat_for_the_same_seed():
    out = subprocess.run([sys.executable, str(CNN), "--seeds", "1,2,3,1", "--steps", "4", "--json"],
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    digests = [r["weights"] for r in json.loads(out.stdout)]
    assert len(set(digests[:3])) == 3          # seeds 1, 2, 3: three different models
    assert digests[0] == digests[3]            # seed 1 twice: identical


def test_check_keras_fit_repeats_and_records_every_phase(tmp_path):
    out = _twinrun("check", "--json", "--max-steps", 3, "--keep-traces", tmp_path, CNN, "--", "--seeding", "keras")
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["identical"] is True
    traces = sorted(tmp_path.glob("*.trace"))
    assert len(traces) == 2
    with Trace.open(traces[0]) as t:
        assert t.status == "stopped"            # --max-steps ended fit cleanly
        assert t.steps() == [0, 1, 2]
        events = t.events(0)
        phases = [e.phase for e in events]
        # program order: init, input, forward, loss, grad, param
        order = ["init", "input", "forward", "loss", "grad", "param"]
        assert [p for p in order if p in phases] == order
        assert phases == sorted(phases, key=order.index)
        names = {(e.phase, e.name) for e in events}
        variables = ["cnn/conv/kernel", "cnn/conv/bias", "cnn/logits/kernel", "cnn/logits/bias"]
        for v in variables:
            assert ("init", v) in names and ("grad", v) in names and ("param", v) in names
        for layer in ("conv", "flatten", "dropout", "logits"):
            assert ("forward", layer) in names
        x = next(e for e in events if e.phase == "input" and e.name == "x")
        assert x.shape == (32, 8, 8, 1) and len(x.sample_digests) == 32
        assert {e.phase for e in t.events(2)} == {"input", "forward", "loss", "grad", "param"}


def test_check_tf_seed_alone_parts_at_init():
    # Keras 3 initialisers draw their seeds from Python's `random`: tf.random.set_seed is not enough.
    out = _twinrun("check", "--json", "--max-steps", 2, CNN, "--", "--seeding", "tf")
    assert out.returncode == 1, out.stderr[-3000:]
    first = json.loads(out.stdout)["first_divergence"]
    assert first["phase"] == "init" and first["step"] == 0


def test_tfdata_pipeline_repeats_and_reshuffles_only_when_asked(tmp_path):
    out = _twinrun("check", "--json", "--keep-traces", tmp_path, PIPELINE, "--", "--samples", 256,
                   "--epochs", 2)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout)["identical"] is True
    once = tmp_path / "once.trace"
    _run_in_process(PIPELINE, ["--samples", "256", "--epochs", "2", "--no-reshuffle"], once, capture=("input",))

    def label_order(path):  # the labels' per-sample digests, epoch by epoch (4 batches of 64 each)
        with Trace.open(path) as t:
            ys = [e.sample_digests for s in t.steps() for e in t.events(s) if e.name == "y"]
        assert len(ys) == 8
        return [[v for y in ys[:4] for v in y], [v for y in ys[4:] for v in y]]

    each = label_order(sorted(tmp_path.glob("run-*.trace"))[0])
    first, second = label_order(once)
    assert first == second                       # reshuffle_each_iteration=False: same order again
    assert each[0] != each[1]                    # True: another order in the second epoch
    assert sorted(each[0]) == sorted(each[1])    # ... of the same samples


def test_tfdata_unseeded_shuffle_parts_at_the_input_in_another_order():
    out = _twinrun("check", "--json", "--max-steps", 2, PIPELINE, "--", "--unseeded", "shuffle")
    assert out.returncode == 1, out.stderr[-3000:]
    first = json.loads(out.stdout)["first_divergence"]
    assert first["phase"] == "input" and first["step"] == 0
    assert first["before_identical"] is True


def _run_in_process(script, argv, trace_path, **options):
    """The script as ``twinrun run`` would run it, but in this process (TensorFlow is loaded already)."""
    import runpy

    saved = sys.argv
    sys.argv = [str(script), *argv]
    try:
        with record(trace_path, **options):
            runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = saved


# --- recording in this process -------------------------------------------------------------------

def test_fit_recording_changes_no_result_and_records_the_final_weights(tmp_path):
    x, y = _digits()
    plain = _cnn()
    plain.fit(x, y, batch_size=32, epochs=1, shuffle=True, verbose=0)
    for capture in (None, ("param",)):
        model = _cnn()
        options = {} if capture is None else {"capture": capture}
        path = tmp_path / f"{capture}.trace"
        with record(path, **options):
            model.fit(x, y, batch_size=32, epochs=1, shuffle=True, verbose=0)
        for a, b in zip(plain.get_weights(), model.get_weights()):
            np.testing.assert_array_equal(a, b)  # recording (even every layer's output) changes nothing
        with Trace.open(path) as t:
            assert t.status == "complete" and len(t.steps()) == 8
            last = {e.name: t.value(e) for e in t.events(7) if e.phase == "param"}
            for v in model.trainable_variables:
                np.testing.assert_array_equal(last[v.path], v.numpy())
            if capture:
                assert {e.phase for e in t.events()} == {"param"}
    # Unhooked afterwards: a later fit records nothing and trains as usual.
    assert model.train_function is None or not hasattr(model.train_function, "_twinrun_recorder")
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)


def test_a_sequential_without_input_builds_inside_the_recorded_step_and_is_recorded_like_one_with(tmp_path):
    """Without ``keras.Input`` the model builds itself on its first call, inside the traced train step,
    with symbolic KerasTensors: those calls are not the step's, and recording must neither fail on them
    (it did: ``tf.identity`` of a KerasTensor) nor count them (``dense#1``)."""
    x, y = _digits()
    names = {}
    for given in (True, False):
        keras.utils.set_random_seed(1)
        layers = [keras.layers.Dense(16, activation="relu", name="hidden"), keras.layers.Dense(10, name="logits")]
        model = keras.Sequential(([keras.Input((64,))] if given else []) + layers, name="net")
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        path = tmp_path / f"{given}.trace"
        with record(path):
            model.fit(x.reshape(len(x), 64), y, batch_size=64, epochs=1, verbose=0)
        with Trace.open(path) as t:
            assert t.status == "complete" and len(t.steps()) == 4
            names[given] = sorted((e.phase, e.name) for e in t.events(0) if e.phase != "init")
            inits = [e for e in t.events(0) if e.phase == "init"]
            notes = t.meta("notes") or []
            # built inside the step: no initial weights to record, and the trace says so
            assert (len(inits) == 4) if given else (not inits and any("keras.Input" in n for n in notes)), notes
    assert ("forward", "logits") in names[True] and ("grad", "net/logits/kernel") in names[True]
    assert names[False] == names[True]


def test_fit_stops_at_max_steps_and_a_custom_train_step_is_recorded(tmp_path):
    class Custom(keras.Model):
        def __init__(self):
            super().__init__(name="custom")
            self.a = keras.layers.Dense(8, activation="relu", name="a")
            self.b = keras.layers.Dense(10, name="b")

        def call(self, x):
            return self.b(self.a(x))

        def train_step(self, data):
            x, y = data
            with tf.GradientTape() as tape:
                loss = self.compute_loss(x=x, y=y, y_pred=self(x, training=True))
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
            return {"loss": loss}

    keras.utils.set_random_seed(0)
    x, y = _digits()
    model = Custom()
    model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    path = tmp_path / "custom.trace"
    with record(path, max_steps=3) as rec:
        model.fit(x.reshape(-1, 64), y, batch_size=64, epochs=5, verbose=0)
        pytest.fail("fit should have been stopped")  # pragma: no cover
    assert rec.stop_reason == "max-steps"
    with Trace.open(path) as t:
        assert t.status == "stopped" and t.steps() == [0, 1, 2]
        names = [(e.phase, e.name) for e in t.events(1)]
    assert ("forward", "a") in names and ("forward", "b") in names and ("forward", "custom") in names
    assert ("loss", "loss") in names
    assert ("grad", "custom/a/kernel") in names and ("param", "custom/b/bias") in names


def test_gradient_tape_loop_with_the_explicit_tracer(tmp_path):
    import twinrun.keras

    x, y = _digits(128)
    model = _cnn()
    opt = keras.optimizers.SGD(0.1)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    tracer = twinrun.keras.Tracer(model)
    tracer.step(loss=tf.constant(1.0))   # no recorder: nothing happens
    path = tmp_path / "tape.trace"
    with record(path, max_steps=2):
        tracer.init()
        for i in range(5):
            xb, yb = x[i * 32:(i + 1) * 32], y[i * 32:(i + 1) * 32]
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
            tracer.step(batch=(xb, yb), loss=loss, grads=grads)
    with Trace.open(path) as t:
        assert t.steps() == [0, 1] and t.status == "stopped"
        events = t.events(0)
    kinds = [(e.phase, e.name) for e in events]
    assert kinds[0] == ("init", "net/conv/kernel")
    assert ("input", "batch.0") in kinds and ("loss", "loss") in kinds
    assert ("grad", "net/hidden/kernel") in kinds and ("param", "net/hidden/kernel") in kinds
    batch = next(e for e in events if e.name == "batch.0")
    assert len(batch.sample_digests) == 32
    final = {e.name: e for e in events if e.phase == "param"}
    assert final["net/logits/bias"].shape == (10,)


def test_tracer_refuses_symbolic_tensors(tmp_path):
    import twinrun.keras

    tracer = twinrun.keras.Tracer()

    @tf.function
    def step(v):
        tracer.step(loss=v)
        return v

    with record(tmp_path / "t.trace"):
        # autograph re-raises errors of user code as its StagingError, with twinrun's message inside
        with pytest.raises(Exception, match=r"got a symbolic tensor for 'loss' .*inside tf.function"):
            step(tf.constant(1.0))


# --- seeding and determinism ----------------------------------------------------------------------

def test_seed_everything_seeds_tensorflow_and_keras():
    seeds = twinrun.seed_everything(5, hash_seed="ignore")
    a = tf.random.normal((4,)).numpy(), keras.random.normal((4,)).numpy(), _cnn_weights_unseeded()
    twinrun.seed_everything(5, hash_seed="ignore")
    b = tf.random.normal((4,)).numpy(), keras.random.normal((4,)).numpy(), _cnn_weights_unseeded()
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert seeds.to_dict()  # the header gets it


def _cnn_weights_unseeded():
    layer = keras.layers.Dense(3)
    layer.build((None, 4))
    return layer.kernel.numpy()


def test_seed_generator_uses_the_named_stream():
    import twinrun.keras

    seeds = twinrun.seed_everything(3, hash_seed="ignore")
    a = keras.random.uniform((3,), seed=twinrun.keras.seed_generator("augment")).numpy()
    b = keras.random.uniform((3,), seed=keras.random.SeedGenerator(seeds.int("augment"))).numpy()
    np.testing.assert_array_equal(a, b)


def test_deterministic_switches_op_determinism_and_names_unseeded_ops():
    from tensorflow.python.framework import config as tf_config

    from twinrun.frameworks.tensorflow import UnseededRandomOpError

    tf.random.set_seed(None)
    tf.compat.v1.reset_default_graph()
    _clear_global_seed()
    assert not tf_config.is_op_determinism_enabled()
    with twinrun.deterministic(frameworks=["tensorflow"]) as report:
        assert tf_config.is_op_determinism_enabled()
        names = {s.name: s for s in report.settings if s.framework == "tensorflow"}
        assert names["tf.config.experimental.enable_op_determinism"].after is True
        assert names["tf.config.experimental.tensor_float_32_execution"].after is False
        with pytest.warns(RuntimeWarning, match=r"random_uniform\(\) at .*test_keras.py:\d+ has no seed"):
            tf.random.uniform((2,))  # non-strict: warned, stays unseeded, still runs
    assert not tf_config.is_op_determinism_enabled()  # restored
    with twinrun.deterministic(strict=True, frameworks=["tensorflow"]):
        with pytest.raises(UnseededRandomOpError, match=r"shuffle\(\) at .*test_keras.py:\d+.*seed"):
            tf.data.Dataset.range(4).shuffle(4)
        tf.random.set_seed(1)
        tf.random.uniform((2,))   # seeded: fine
    _clear_global_seed()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tf.random.uniform((2,))   # restored: TensorFlow's own behaviour, no twinrun wrapper


def _clear_global_seed():
    from tensorflow.python.eager import context

    context.context()._set_global_seed(None)


def test_environment_has_onednn_flag_and_thread_counts():
    from twinrun.frameworks import get

    info = get("tensorflow").environment()
    assert "onednn_opts" in info and "intra_op_threads" in info and info["keras"] == keras.__version__


def test_seed_tf_data_intervention_seeds_unseeded_shuffles_and_generators():
    from tensorflow.python.data.ops.dataset_ops import DatasetV2

    from twinrun.frameworks.tensorflow.interventions import INTERVENTIONS

    class Context:   # what twinrun.interventions gives an intervention: reports and seed sequences
        def __init__(self):
            self.notes: list[str] = []
            self.counter = iter(range(100))

        def note(self, name, what, api):
            self.notes.append(what)

        def sequence(self, kind):
            return np.random.SeedSequence([7, next(self.counter)])

    saved = DatasetV2.shuffle, tf.random.Generator.__dict__["from_non_deterministic_state"]
    try:
        runs = []
        for _ in range(2):
            ctx = Context()
            notes = ctx.notes
            DatasetV2.shuffle, tf.random.Generator.from_non_deterministic_state = saved
            for intervention in INTERVENTIONS:
                intervention.apply(ctx)
            order = list(tf.data.Dataset.range(16).shuffle(16).as_numpy_iterator())
            draw = tf.random.Generator.from_non_deterministic_state().normal((3,)).numpy()
            runs.append((order, draw, notes))
        assert runs[0][0] == runs[1][0] and sorted(runs[0][0]) == list(range(16))
        np.testing.assert_array_equal(runs[0][1], runs[1][1])
        assert runs[0][2] == ["tf.data.Dataset.shuffle(...) without a seed",
                              "tf.random.Generator.from_non_deterministic_state()"]
    finally:
        DatasetV2.shuffle, tf.random.Generator.from_non_deterministic_state = saved


def test_portability_variants_never_exceed_the_cpu():
    from twinrun.cpu import ISA_ORDER
    from twinrun.frameworks.tensorflow import TensorflowAdapter

    flags = {"SSE4_2": {"sse4_2"}, "AVX": {"sse4_2", "avx"}, "AVX2": {"sse4_2", "avx", "avx2", "fma"},
             "AVX512": {"sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq"}}
    for isa in ISA_ORDER:
        for v in TensorflowAdapter.isa_variants(flags[isa], {})[0]:
            if v.cause == "cpu-isa":
                wanted = v.env["ONEDNN_MAX_CPU_ISA"].replace("SSE41", "SSE4_2").replace("AVX512_CORE", "AVX512")
                assert ISA_ORDER.index(wanted) < ISA_ORDER.index(isa)
    assert TensorflowAdapter.isa_variants(set(), {})[0][0].env == {"TF_ENABLE_ONEDNN_OPTS": "0"}
