"""twinrun.torch.loader_kwargs with real DataLoaders (num_workers=2) in fresh processes.

One script runs every scenario and prints JSON; it runs in two fresh processes so that the tests can
compare them. Each sample is [index, worker id, base seed, augmentation draws...].
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from twinrun.seeding import Seeds  # noqa: E402

SCRIPT = r'''
import json, random, sys
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

N = 8


def where():
    info = torch.utils.data.get_worker_info()
    return [info.id, info.seed - info.id] if info is not None else [-1, -1]


class GlobalAug(Dataset):
    """Augmentation from the global RNGs (NumPy, Python, torch)."""
    def __len__(self): return N
    def __getitem__(self, i):
        return [i, *where(), int(np.random.randint(2**31)), random.randrange(2**31), int(torch.randint(2**31, ()))]


class OwnedRng(Dataset):
    """The known failure: a Generator made in __init__ is copied into every worker."""
    def __init__(self): self.rng = np.random.default_rng()
    def __len__(self): return N
    def __getitem__(self, i): return [i, *where(), int(self.rng.integers(2**31))]


class WorkerRng(Dataset):
    """The fix for a dataset-owned Generator: twinrun's per-worker Generator."""
    def __len__(self): return N
    def __getitem__(self, i):
        import twinrun.torch
        return [i, *where(), int(twinrun.torch.worker_rng().integers(2**31))]


def as_list(batch):
    return batch


def epochs(ds, n=2, **kw):
    kw.setdefault("num_workers", 2)
    loader = DataLoader(ds, batch_size=2, shuffle=True, collate_fn=as_list, **kw)
    return [[s for batch in loader for s in batch] for _ in range(n)]


if __name__ == "__main__":
    out = {}
    if sys.argv[1] == "twinrun":
        import twinrun, twinrun.torch
        seeds = twinrun.seed_everything(0, hash_seed="ignore")
        out["init"] = seeds.int("init")
        kw = twinrun.torch.loader_kwargs
        out["global"] = epochs(GlobalAug(), **kw())
        out["persistent"] = epochs(GlobalAug(), persistent_workers=True, **kw())
        out["rank1"] = epochs(GlobalAug(), n=1, **kw(rank=1))
        out["augment_stream"] = epochs(GlobalAug(), n=1, **kw("augment"))
        out["worker_rng"] = epochs(WorkerRng(), **kw())
        out["owned"] = epochs(OwnedRng(), **kw())
        out["main_process"] = epochs(WorkerRng(), num_workers=0, **kw())
        if len(sys.argv) > 2:
            out["spawn"] = epochs(GlobalAug(), multiprocessing_context="spawn", **kw())
    else:
        out["global"] = epochs(GlobalAug())
        out["owned"] = epochs(OwnedRng())
        ranks = []
        for rank in range(2):   # what each rank of a distributed job does: the same manual_seed
            torch.manual_seed(0)
            ranks += epochs(GlobalAug(), n=1)
        out["ranks"] = ranks
    print(json.dumps(out))
'''


def run_script(tmp_path, *args: str, env: dict | None = None) -> dict:
    path = tmp_path / "loader_script.py"
    path.write_text(SCRIPT)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TWINRUN_SEED")}
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True, env=full_env,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    """The twinrun scenarios in two fresh processes (the first also with spawn workers)."""
    tmp = tmp_path_factory.mktemp("loader")
    return run_script(tmp, "twinrun", "spawn"), run_script(tmp, "twinrun")


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """The same datasets without twinrun, in two fresh processes."""
    tmp = tmp_path_factory.mktemp("plain")
    return run_script(tmp, "plain"), run_script(tmp, "plain")


def draws(epoch, column):
    return [s[column] for s in epoch]


def by_index(epoch):
    return {s[0]: s[3:] for s in epoch}


def test_every_sample_is_loaded_once_by_both_workers(twin):
    a, _ = twin
    for epoch in a["global"]:
        assert sorted(s[0] for s in epoch) == list(range(8))
        assert {s[1] for s in epoch} == {0, 1}


@pytest.mark.parametrize("scenario", ["global", "persistent", "worker_rng"])
def test_no_two_workers_share_an_augmentation(twin, scenario):
    a, _ = twin
    for epoch in a[scenario]:
        values = [v for column in range(3, len(epoch[0])) for v in draws(epoch, column)]
        assert len(set(values)) == len(values), (scenario, values)   # nor two RNGs of one worker


@pytest.mark.parametrize("scenario", ["global", "persistent", "worker_rng"])
def test_epochs_differ(twin, scenario):
    a, _ = twin
    first, second = a[scenario]
    for column in range(3, len(first[0])):
        assert not set(draws(first, column)) & set(draws(second, column)), (scenario, column)
    if scenario != "persistent":   # non-persistent workers restart each epoch with a new base seed
        assert draws(first, 2)[0] != draws(second, 2)[0]


def test_two_fresh_processes_repeat_exactly(twin):
    a, b = twin
    for key in b:
        if key != "owned":   # the unseeded default_rng() of the known failure
            assert a[key] == b[key], key


def test_spawn_workers_match_fork_workers(twin):
    a, _ = twin
    assert a["spawn"] == a["global"]     # WorkerInit travels by pickle, and derives the same seeds


def test_ranks_and_streams_differ(twin):
    a, _ = twin
    rank0, rank1, augment = by_index(a["global"][0]), by_index(a["rank1"][0]), by_index(a["augment_stream"][0])
    for i in range(8):
        assert rank0[i] != rank1[i] and rank0[i] != augment[i]


def test_worker_seeds_follow_the_documented_derivation(twin):
    """Worker w of epoch e seeds each global RNG from (root, stream, rank, w, base seed, rng name)."""
    a, _ = twin
    seeds = Seeds(0, overrides={})
    for epoch in a["global"]:
        for worker in (0, 1):
            mine = [s for s in epoch if s[1] == worker]   # in the order this worker drew them
            base = mine[0][2]
            path = ("data", "worker", 0, worker, base)
            legacy = np.random.RandomState(seeds.sequence(*path, "numpy").generate_state(4))
            assert [s[3] for s in mine] == [int(legacy.randint(2**31)) for _ in mine]
            py = random.Random(int.from_bytes(seeds.sequence(*path, "python").generate_state(4).tobytes(), "little"))
            assert [s[4] for s in mine] == [py.randrange(2**31) for _ in mine]
            gen = torch.Generator().manual_seed(int(seeds.sequence(*path, "torch").generate_state(1, np.uint64)[0]))
            assert [s[5] for s in mine] == [int(torch.randint(2**31, (), generator=gen)) for _ in mine]
    for epoch in a["worker_rng"]:
        for worker in (0, 1):
            mine = [s for s in epoch if s[1] == worker]
            rng = np.random.Generator(np.random.PCG64(
                seeds.sequence("data", "worker", 0, worker, mine[0][2], "worker_rng")))
            assert [s[3] for s in mine] == [int(rng.integers(2**31)) for _ in mine]


def test_main_process_worker_rng_is_one_stream(twin):
    a, _ = twin
    values = draws(a["main_process"][0], 3) + draws(a["main_process"][1], 3)
    rng = Seeds(0, overrides={}).numpy("data", "main", 0)
    assert values == [int(rng.integers(2**31)) for _ in values]


def test_stream_override_changes_only_the_data(tmp_path, twin):
    a, _ = twin
    c = run_script(tmp_path, "twinrun", env={"TWINRUN_SEED_DATA": "1"})
    assert c["init"] == a["init"]
    assert by_index(c["global"][0]) != by_index(a["global"][0])
    assert c["augment_stream"] == a["augment_stream"]


# --- the failures twinrun fixes, shown without it ------------------------------------------------

def test_without_twinrun_runs_do_not_repeat(plain):
    a, b = plain
    assert by_index(a["global"][0]) != by_index(b["global"][0])


def test_without_twinrun_a_dataset_owned_generator_repeats_across_workers_and_epochs(plain, twin):
    for epoch in plain[0]["owned"]:
        assert len(set(draws(epoch, 3))) == 4          # 8 samples, 2 workers drawing the same 4 numbers
    first, second = plain[0]["owned"]
    assert sorted(draws(first, 3)) == sorted(draws(second, 3))   # and every epoch the same
    # loader_kwargs does not reach into the dataset: the owned Generator stays duplicated (documented);
    # twinrun.torch.worker_rng() is the fix (test_no_two_workers_share_an_augmentation["worker_rng"]).
    assert len(set(draws(twin[0]["owned"][0], 3))) == 4


def test_without_twinrun_every_rank_draws_the_same_augmentations(plain, twin):
    ranks = plain[0]["ranks"]
    assert sorted(draws(ranks[0], 3)) == sorted(draws(ranks[1], 3))
    assert not set(draws(twin[0]["global"][0], 3)) & set(draws(twin[0]["rank1"][0], 3))


# --- in this process -----------------------------------------------------------------------------

def test_loader_kwargs_needs_a_root_seed_and_a_good_rank(monkeypatch):
    import twinrun.torch
    from twinrun import _active
    from twinrun._errors import UsageError

    monkeypatch.setattr(_active, "_seeds", None)
    with pytest.raises(UsageError, match="seed_everything"):
        twinrun.torch.loader_kwargs()
    monkeypatch.setattr(_active, "_seeds", Seeds(3, overrides={}))
    for bad in (-1, "0", True):
        with pytest.raises(UsageError, match="rank"):
            twinrun.torch.loader_kwargs(rank=bad)
    with pytest.raises(UsageError, match="stream name"):
        twinrun.torch.loader_kwargs("")
    kw = twinrun.torch.loader_kwargs("data", rank=2)
    assert set(kw) == {"generator", "worker_init_fn"}
    assert kw["generator"].initial_seed() == Seeds(3, overrides={}).torch("data", "loader", 2).initial_seed()
    with pytest.raises(UsageError, match="DataLoader workers"):
        kw["worker_init_fn"](0)


def test_public_namespace():
    import twinrun.torch

    assert twinrun.torch.__all__ == ["batch_invariant", "loader_kwargs", "unwatch", "watch", "worker_rng"]
    assert textwrap.dedent(twinrun.torch.loader_kwargs.__doc__ or "").strip()
