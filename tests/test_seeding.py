"""twinrun.seeding: stable stream derivation (golden values), priority of seeds, overrides, seeding of
every global RNG (also of frameworks imported later), and PYTHONHASHSEED detection and relaunch.

Fresh-process behaviour (drawn seeds, lazy seeding, hash randomisation) runs in subprocesses.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch

from twinrun import _active, frameworks, seeding
from twinrun._errors import UsageError
from twinrun.seeding import HashSeedWarning, Seeds, current, name_key, seed_everything

PY = sys.executable


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    """No TWINRUN_SEED* or hash variables from the outside; undo seed_everything's process state."""
    for var in list(os.environ):
        if var.startswith("TWINRUN_SEED") or var == seeding.ENV_RELAUNCHED:
            monkeypatch.delenv(var)
    before = (_active.current_seeds(), set(seeding._watching))
    yield
    _active.set_seeds(before[0])
    # Do not leave import hooks behind that would seed TensorFlow/JAX in other tests of this session.
    for name in seeding._watching - before[1]:
        callbacks = frameworks._pending.get(name, [])
        if seeding._seed_on_import in callbacks:
            callbacks.remove(seeding._seed_on_import)
    seeding._watching.clear()
    seeding._watching.update(before[1])


def run(code: str, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``code`` as a script in a fresh interpreter (this checkout's src on PYTHONPATH via conftest)."""
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith("TWINRUN_SEED") and k not in ("PYTHONHASHSEED", seeding.ENV_RELAUNCHED)}
    full_env.update(env or {})
    proc = subprocess.run([PY, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          env=full_env, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def last_json(stdout: str):
    return json.loads(stdout.strip().splitlines()[-1])


# --- golden values: these numbers must never change ----------------------------------------------

def test_name_key_golden():
    assert name_key("init") == 12104134190896141499
    assert name_key("data") == 9776251629743402554
    assert name_key("augment") == 4076782310425520477
    assert name_key("dropout") == 13348609076478233627
    assert name_key("données") == 2728565159727956896   # UTF-8, not the locale


# (root, name, path) -> int, numpy integers(0, 2**31, 3), numpy random(2), torch initial seed,
# torch randint(0, 2**31, (3,)), torch rand(3, float64)
GOLDEN = [
    ((0, "init", ()), 4137929477, [115389696, 2012020879, 1080652078],
     [0.9369202326176996, 0.7478264678509947], 11292528851451890437,
     [618200275, 827647755, 1393080093], [0.4845884532623138, 0.4520617450245664, 0.8801006433256792]),
    ((0, "data", ()), 1189178635, [526351896, 329911709, 400374880],
     [0.1536271111679034, 0.7832316479614095], 6841417518240853259,
     [2032768227, 1352898515, 1304798646], [0.43126271881615386, 0.2558969569188271, 0.6235991972909491]),
    ((1, "init", ()), 2887571727, [192163366, 360868542, 2076103646],
     [0.16804251007025195, 0.7571537357211953], 17887651012397553935,
     [432775184, 804895082, 1528639346], [0.9689779762093185, 0.3789266049405289, 0.2735678462572493]),
    ((42, "data", (3,)), 1112450167, [724961435, 1895191202, 1009736433],
     [0.8825171751290528, 0.6491543577216088], 7631171972794066039,
     [1851801814, 2034959502, 1885924103], [0.1972665458470384, 0.307766901874986, 0.8666748710159887]),
    ((2**32 - 1, "augment", ("worker", 1, 7)), 3410456115, [609215331, 183091897, 1032744477],
     [0.08525880875151781, 0.816912121949929], 6668917898549358131,
     [707033116, 503273664, 1764860616], [0.2675977538199308, 0.6108460985076576, 0.788116412598435]),
    ((2**64 + 5, "dropout", ()), 920295112, [1205045150, 319205714, 1771247807],
     [0.14864174406070785, 0.15944489762764458], 12045693389842847432,
     [1254195478, 1699127697, 2139397739], [0.1489848098827078, 0.7971510389370896, 0.775954484041859]),
    ((123456789, "folds", ("rank", 0)), 3674821176, [1875921525, 1981313169, 1738946232],
     [0.9226208412725347, 0.13394857868779442], 3889302317103141432,
     [1453447005, 315687043, 1027073781], [0.3719753448519715, 0.688996826887902, 0.1929827876731155]),
]


@pytest.mark.parametrize("where,int_,np_ints,np_floats,t_seed,t_ints,t_floats", GOLDEN,
                         ids=[f"{w[0]}-{w[1]}-{len(w[2])}" for w, *_ in GOLDEN])
def test_stream_golden(where, int_, np_ints, np_floats, t_seed, t_ints, t_floats):
    root, name, path = where
    s = Seeds(root, overrides={})
    assert s.int(name, *path) == int_
    assert s.tf(name, *path) == int_ % 2**31
    assert s.numpy(name, *path).integers(0, 2**31, 3).tolist() == np_ints
    assert s.numpy(name, *path).random(2).tolist() == np_floats
    g = s.torch(name, *path)
    assert g.initial_seed() == t_seed
    assert torch.randint(0, 2**31, (3,), generator=g).tolist() == t_ints
    assert torch.rand(3, generator=s.torch(name, *path), dtype=torch.float64).tolist() == t_floats


@pytest.mark.parametrize("root,name,path,data,rbg,draws", [
    (0, "init", (), [4137929477, 2629246760], [4137929477, 2629246760, 2902842198, 692732738], [948, 253, 834]),
    (7, "dropout", (2,), [1364739558, 3998220130], [1364739558, 3998220130, 2289425884, 363739027],
     [421, 777, 833]),
    (2**40, "init", ("layer", "fc1"), [3684504792, 1877969234], [3684504792, 1877969234, 1749649495, 979179006],
     [451, 332, 977]),
])
def test_jax_key_golden(root, name, path, data, rbg, draws):
    jax = pytest.importorskip("jax")
    s = Seeds(root, overrides={})
    key = s.jax(name, *path)
    assert jax.random.key_data(key).tolist() == data
    assert jax.random.key_data(s.jax(name, *path, impl="rbg")).tolist() == rbg
    assert jax.random.randint(key, (3,), 0, 1000).tolist() == draws


def test_streams_are_independent_and_fresh():
    s = Seeds(5, overrides={})
    values = {s.int(n, *p) for n, p in [("init", ()), ("data", ()), ("data", (0,)), ("data", (1,)),
                                         ("data", ("0",)), ("data", (0, 0))]}
    assert len(values) == 6
    # each call starts the stream anew; the same root gives the same stream
    assert s.numpy("data").random() == s.numpy("data").random() == Seeds(5, overrides={}).numpy("data").random()
    assert Seeds(6, overrides={}).int("data") != s.int("data")
    assert 0 <= s.int("x") < 2**32 and 0 <= s.tf("x") < 2**31
    assert s.sequence("data", 3).spawn_key == (name_key("data"), 3)
    assert s.sequence("data", "w").spawn_key == (name_key("data"), name_key("w"))


def test_seeds_pickle_roundtrip():
    s = Seeds(9, overrides={"TWINRUN_SEED_DATA": 3})
    t = pickle.loads(pickle.dumps(s))
    assert t.int("data") == s.int("data") == Seeds(3, overrides={}).int("data")


# --- overrides and priority ----------------------------------------------------------------------

def test_stream_override_from_environment(monkeypatch):
    monkeypatch.setenv("TWINRUN_SEED_DATA", "5")
    monkeypatch.setenv("TWINRUN_SEED_MY_AUG_V2", "11")
    s = Seeds(0)
    assert s.overrides == {"TWINRUN_SEED_DATA": 5, "TWINRUN_SEED_MY_AUG_V2": 11}
    plain5, plain11, plain0 = (Seeds(r, overrides={}) for r in (5, 11, 0))
    assert s.int("data") == plain5.int("data") != plain0.int("data")
    assert s.numpy("data", 2).random() == plain5.numpy("data", 2).random()
    assert s.int("my-aug.v2") == plain11.int("my-aug.v2")   # non-alphanumerics become "_"
    assert s.int("init") == plain0.int("init")               # other streams keep the root
    assert seed_everything(0, hash_seed="ignore").to_dict()["overrides"] == s.overrides


def test_priority_env_over_argument_over_drawn(monkeypatch, capsys):
    s = seed_everything(3, hash_seed="ignore")
    assert (s.root, s.source, s.argument) == (3, "argument", 3)
    monkeypatch.setenv("TWINRUN_SEED", "8")
    s = seed_everything(3, hash_seed="ignore")
    assert (s.root, s.source, s.argument) == (8, "env", 3)    # the report shows both
    assert s.to_dict()["replay"] == "TWINRUN_SEED=8"
    monkeypatch.delenv("TWINRUN_SEED")
    s = seed_everything(hash_seed="ignore")
    assert s.source == "drawn" and s.argument is None and 0 <= s.root < 2**32
    assert f"TWINRUN_SEED={s.root}" in capsys.readouterr().err
    assert current() is s


@pytest.mark.parametrize("bad", [-1, "3", 1.5, True, [1]])
def test_bad_seed_argument(bad):
    with pytest.raises(UsageError, match="non-negative integer"):
        seed_everything(bad, hash_seed="ignore")


@pytest.mark.parametrize("var,value", [("TWINRUN_SEED", "abc"), ("TWINRUN_SEED", "-4"),
                                       ("TWINRUN_SEED_DATA", "1.5"), ("TWINRUN_SEED_", "1")])
def test_bad_environment_seed(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises(UsageError) as e:
        seed_everything(0, hash_seed="ignore")
    assert var in str(e.value) and "\n" not in str(e.value)


def test_bad_names_and_modes():
    s = Seeds(0, overrides={})
    with pytest.raises(UsageError, match="stream name"):
        s.int("")
    with pytest.raises(UsageError, match="path element"):
        s.int("data", -1)
    with pytest.raises(UsageError, match="path element"):
        s.int("data", 1.0)
    with pytest.raises(UsageError, match="hash_seed"):
        seed_everything(0, hash_seed="always")
    with pytest.raises(UsageError, match="PRNG"):
        pytest.importorskip("jax")
        s.jax("init", impl="nope")


def test_numpy_seeds_are_numpy_integers_too():
    assert seed_everything(np.uint64(4), hash_seed="ignore").root == 4


# --- what seed_everything seeds ------------------------------------------------------------------

def test_global_rngs_get_the_init_stream():
    s = seed_everything(3, hash_seed="ignore")
    init = s.int("init")
    got = (random.random(), np.random.rand(), torch.rand(2).tolist())
    random.seed(init)
    np.random.seed(init)
    torch.manual_seed(init)
    assert got == (random.random(), np.random.rand(), torch.rand(2).tolist())
    d = json.loads(json.dumps(s.to_dict()))
    assert d["init"] == init and d["root"] == 3
    assert d["seeded"]["numpy"] == {"random.seed": init, "numpy.random.seed": init}
    assert d["seeded"]["torch"]["torch.manual_seed"] == init
    assert "torch" not in d["seed_on_import"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_is_seeded_too():
    s = seed_everything(3, hash_seed="ignore")
    assert s.seeded["torch"]["torch.cuda.manual_seed_all"] == s.int("init")
    got = torch.rand(3, device="cuda").tolist()
    torch.cuda.manual_seed_all(s.int("init"))
    assert got == torch.rand(3, device="cuda").tolist()
    g = s.torch("data", device="cuda")
    assert g.device.type == "cuda" and g.initial_seed() == s.torch("data").initial_seed()


def test_seed_everything_imports_no_framework():
    out = run("""
        import json, sys
        import twinrun
        s = twinrun.seed_everything(1, hash_seed="ignore")
        loaded = sorted(m for m in ("torch", "tensorflow", "jax", "keras") if m in sys.modules)
        print(json.dumps({"loaded": loaded, "report": s.to_dict()}))
    """)
    d = last_json(out.stdout)
    assert d["loaded"] == []
    assert set(d["report"]["seeded"]) == {"numpy"}
    assert d["report"]["seed_on_import"] == ["torch", "tensorflow", "jax"]


def test_torch_imported_later_is_seeded_on_import():
    out = run("""
        import json, random
        import twinrun
        seeds = twinrun.seed_everything(7, hash_seed="ignore")
        first = random.random()
        import torch
        later = torch.rand(4).tolist()
        second = random.random()
        torch.manual_seed(seeds.int("init"))
        random.seed(seeds.int("init")); random.random()
        print(json.dumps({"later": later, "replay": torch.rand(4).tolist(), "second": second,
                          "expected_second": random.random(), "report": seeds.to_dict()}))
    """)
    d = last_json(out.stdout)
    assert d["later"] == d["replay"]
    assert d["second"] == d["expected_second"]        # importing torch did not rewind Python's RNG
    assert d["report"]["seeded_on_import"] == ["torch"]
    assert d["report"]["seeded"]["torch"] == {"torch.manual_seed": d["report"]["init"]}
    assert "torch" not in d["report"]["seed_on_import"]


TF_CHECK = """
    import json, os, random
    import numpy as np
    {before}
    import twinrun
    seeds = twinrun.seed_everything(5, hash_seed="ignore")
    {after}
    import keras
    init = seeds.int("init")

    def draws():
        layer = keras.layers.Dense(3)
        layer.build((None, 4))
        return {{"dense": layer.kernel.numpy().tolist(), "tf": tf.random.uniform((3,)).numpy().tolist(),
                 "keras": keras.random.uniform((3,)).numpy().tolist()}}

    got = draws()
    keras.utils.set_random_seed(init)
    replay = draws()
    print(json.dumps({{"got": got, "replay": replay, "report": seeds.to_dict()}}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("order", ["imported-before", "imported-after"])
def test_tensorflow_and_keras_are_seeded(order):
    before, after = ("import tensorflow as tf", "") if order == "imported-before" else ("", "import tensorflow as tf")
    code = TF_CHECK.format(before=before, after=after)
    d = last_json(run(code, env={"TF_CPP_MIN_LOG_LEVEL": "2"}).stdout)
    assert d["got"]["tf"] == d["replay"]["tf"]     # TF's global seed is seeds.int("init")
    assert d["report"]["seeded"]["tensorflow"]["tf.random.set_seed"] == d["report"]["init"]
    assert d["report"]["seeded"]["tensorflow"]["keras.utils.set_random_seed"] == d["report"]["init"]
    if order == "imported-before":
        assert d["got"] == d["replay"]             # Keras too: everything as after set_random_seed(init)
        assert "tensorflow" not in d["report"]["seeded_on_import"]
    else:
        # Seeded on import, without rewinding Python's and NumPy's RNGs (importing TF draws from both,
        # so Keras's default seeds, taken from Python's random, follow the import's draws).
        assert d["report"]["seeded_on_import"] == ["tensorflow"]
        again = last_json(run(code, env={"TF_CPP_MIN_LOG_LEVEL": "2"}).stdout)
        assert again["got"] == d["got"]            # the same in a fresh process
        other = last_json(run(code, env={"TF_CPP_MIN_LOG_LEVEL": "2", "TWINRUN_SEED": "6"}).stdout)
        assert other["got"]["dense"] != d["got"]["dense"] and other["got"]["tf"] != d["got"]["tf"]


def test_jax_keys_from_seed_everything_repeat_in_fresh_processes():
    code = """
        import json, twinrun
        seeds = twinrun.seed_everything(hash_seed="ignore")   # drawn, then replayed through TWINRUN_SEED
        import jax
        print(json.dumps({"x": jax.random.normal(seeds.jax("init"), (3,)).tolist(), "report": seeds.to_dict()}))
    """
    a = last_json(run(code).stdout)
    b = last_json(run(code, env={"TWINRUN_SEED": str(a["report"]["root"])}).stdout)
    assert a["x"] == b["x"] and b["report"]["source"] == "env"
    assert "jax" not in a["report"]["seeded"]      # JAX has no global RNG: keys come from seeds.jax


def test_drawn_seed_is_printed_and_replays():
    code = """
        import json, random
        import numpy as np
        import twinrun
        s = twinrun.seed_everything(hash_seed="ignore")
        print(json.dumps({"root": s.root, "source": s.source, "draws": [random.random(), np.random.rand()]}))
    """
    first = run(code)
    m = re.search(r"TWINRUN_SEED=(\d+)", first.stderr)
    assert m, first.stderr
    a = last_json(first.stdout)
    assert a["source"] == "drawn" and int(m.group(1)) == a["root"]
    replay = run(code, env={"TWINRUN_SEED": m.group(1)})
    b = last_json(replay.stdout)
    assert b["draws"] == a["draws"] and b["source"] == "env"
    assert "drew root seed" not in replay.stderr
    other = last_json(run(code).stdout)          # another draw: another run (1 in 2**32 to collide)
    assert other["root"] != a["root"] and other["draws"] != a["draws"]


def test_current_is_the_last_seeds():
    assert run("import twinrun.seeding as s; assert s.current() is None").returncode == 0
    a = seed_everything(1, hash_seed="ignore")
    b = seed_everything(2, hash_seed="ignore")
    assert current() is b is not a


# --- PYTHONHASHSEED ------------------------------------------------------------------------------

HASH_SCRIPT = """
    import json, sys
    import twinrun
    mode = sys.argv[1]
    seeds = twinrun.seed_everything(int(sys.argv[2]) if len(sys.argv) > 2 else None, hash_seed=mode)
    words = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
             "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon"}
    import os
    print(json.dumps({"order": list(words), "env": os.environ.get("PYTHONHASHSEED"),
                      "report": seeds.to_dict()}))
"""


def test_hash_randomisation_warns_with_the_fix_and_orders_differ():
    runs = [run(HASH_SCRIPT, "warn", "0") for _ in range(2)]
    a, b = (last_json(r.stdout) for r in runs)
    assert a["order"] != b["order"]                            # the problem is real
    assert a["report"]["hash_seed"]["randomized"] is True
    expected = seeding._hash_value(Seeds(0, overrides={}))
    assert "HashSeedWarning" in runs[0].stderr and f"PYTHONHASHSEED={expected}" in runs[0].stderr
    assert "hash_seed='relaunch'" in runs[0].stderr


def test_relaunch_makes_set_order_repeat():
    runs = [run(HASH_SCRIPT, "relaunch", "0") for _ in range(2)]
    a, b = (last_json(r.stdout) for r in runs)
    assert a["order"] == b["order"]
    assert len(runs[0].stdout.strip().splitlines()) == 1       # the program ran once, after the relaunch
    assert a["env"] == str(seeding._hash_value(Seeds(0, overrides={})))
    assert a["report"]["hash_seed"] == {"mode": "relaunch", "randomized": False,
                                        "pythonhashseed": int(a["env"]), "relaunched": True}
    assert "HashSeedWarning" not in runs[0].stderr
    c = last_json(run(HASH_SCRIPT, "relaunch", "1").stdout)    # another root, another hash seed
    assert c["env"] != a["env"] and c["order"] != a["order"]


def test_relaunch_keeps_a_drawn_seed():
    proc = run(HASH_SCRIPT, "relaunch")
    d = last_json(proc.stdout)
    assert proc.stderr.count("drew root seed") == 1
    assert f"TWINRUN_SEED={d['report']['root']}" in proc.stderr and d["report"]["source"] == "drawn"
    assert d["env"] == str(seeding._hash_value(Seeds(d["report"]["root"], overrides={})))


def test_pinned_hash_seed_needs_nothing():
    proc = run(HASH_SCRIPT, "relaunch", "0", env={"PYTHONHASHSEED": "77"})
    d = last_json(proc.stdout)
    assert d["env"] == "77" and d["report"]["hash_seed"]["pythonhashseed"] == 77
    assert d["report"]["hash_seed"]["relaunched"] is False and "Warning" not in proc.stderr


def test_hash_seed_set_by_the_program_itself_is_seen_as_too_late():
    proc = run("""
        import os, json
        os.environ["PYTHONHASHSEED"] = "0"      # the common mistake: too late to act
        import twinrun
        s = twinrun.seed_everything(0)
        print(json.dumps(s.to_dict()["hash_seed"]))
    """)
    assert last_json(proc.stdout)["randomized"] is True and "HashSeedWarning" in proc.stderr


def test_relaunch_never_loops():
    proc = run(HASH_SCRIPT, "relaunch", "0", env={seeding.ENV_RELAUNCHED: "1"})
    d = last_json(proc.stdout)
    assert d["report"]["hash_seed"]["randomized"] is True
    assert "already happened" in d["report"]["hash_seed"]["relaunch_skipped"]
    assert "could not relaunch" in proc.stderr


def test_relaunch_from_stdin_warns_instead():
    code = textwrap.dedent(HASH_SCRIPT).replace("sys.argv[1]", "'relaunch'").replace(
        "int(sys.argv[2]) if len(sys.argv) > 2 else None", "0")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    proc = subprocess.run([PY, "-"], input=code, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "standard input" in last_json(proc.stdout)["report"]["hash_seed"]["relaunch_skipped"]


def test_hash_seed_warning_in_this_process():
    value = seeding.hash_seed_in_effect()
    if os.environ.get("PYTHONHASHSEED") is None and sys.flags.hash_randomization:
        assert value is None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = seed_everything(0)
    assert any(w.category is HashSeedWarning for w in caught) == (value is None)
    assert s.hash_seed["randomized"] == (value is None)
