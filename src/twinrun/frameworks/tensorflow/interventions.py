"""``seed-tf-data`` and ``seed-tf-random``: TensorFlow's unseeded data randomness gets seeds from twinrun's stream.

A ``tf.data.Dataset.shuffle`` without a seed (``seed-tf-data``: the order) and a ``tf.random.Generator``
made from a non-deterministic state (``seed-tf-random``: augmentation, the content) get seeds from
twinrun's ``data`` stream; nothing else changes. The global TensorFlow seed is ``--seed``'s business
(it also fixes ``model.fit(shuffle=True)`` on arrays and unseeded initialisers), so a run that only
these interventions repair is a ``data-pipeline`` cause. The patches wait for the program to import
TensorFlow.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ..base import Intervention, InterventionContext

__all__ = ["INTERVENTIONS"]

_DATA_FIX = ("Give {where} a seed: `ds.shuffle(buffer_size, seed=seeds.tf(\"data\"))` with "
             "`seeds = twinrun.seed_everything(0)` (any fixed integer works; keep `reshuffle_each_iteration` as "
             "you want it: the reshuffles then repeat too).")
_RANDOM_FIX = ("Seed {where}: make the generator with `tf.random.Generator.from_seed(seeds.tf(\"augment\"))` "
               "(with `seeds = twinrun.seed_everything(0)`) and draw per-element seeds from it for stateless ops.")


def _apply_data(ctx: InterventionContext) -> None:
    from .. import when_imported

    when_imported("tensorflow", lambda _tf: _patch_shuffle(ctx))


def _apply_random(ctx: InterventionContext) -> None:
    from .. import when_imported

    when_imported("tensorflow", lambda tf: _patch_generator(tf, ctx))


def _patch_shuffle(ctx: InterventionContext) -> None:
    from tensorflow.python.data.ops.dataset_ops import DatasetV2

    shuffle = DatasetV2.shuffle
    if getattr(shuffle, "_twinrun_patched", False):
        return

    def seeded_shuffle(self: Any, buffer_size: Any, seed: Any = None, *args: Any, **kwargs: Any) -> Any:
        if seed is None:
            ctx.note("seed-tf-data", "tf.data.Dataset.shuffle(...) without a seed", "tf.data.Dataset.shuffle(...)")
            seed = int(ctx.sequence("Dataset.shuffle").generate_state(1)[0] % 2**31)
        return shuffle(self, buffer_size, seed, *args, **kwargs)

    seeded_shuffle._twinrun_patched = True  # type: ignore[attr-defined]
    seeded_shuffle.__doc__ = shuffle.__doc__
    DatasetV2.shuffle = seeded_shuffle


def _patch_generator(tf: ModuleType, ctx: InterventionContext) -> None:
    from_state = tf.random.Generator.from_non_deterministic_state
    if getattr(from_state, "_twinrun_patched", False):
        return

    def from_non_deterministic_state(alg: Any = None) -> Any:
        ctx.note("seed-tf-random", "tf.random.Generator.from_non_deterministic_state()",
                 "tf.random.Generator.from_non_deterministic_state()")
        seed = int(ctx.sequence("Generator").generate_state(2, "uint64")[0] % 2**63)
        return tf.random.Generator.from_seed(seed, alg=alg)

    from_non_deterministic_state.__wrapped__ = from_state  # type: ignore[attr-defined]
    from_non_deterministic_state._twinrun_patched = True  # type: ignore[attr-defined]
    tf.random.Generator.from_non_deterministic_state = staticmethod(from_non_deterministic_state)


INTERVENTIONS = (
    Intervention("seed-tf-data", "tf.data.Dataset.shuffle without a seed gets one from twinrun's data stream",
                 "order", _apply_data, _DATA_FIX, priority=2),
    Intervention("seed-tf-random", "tf.random.Generator.from_non_deterministic_state() gives a generator seeded "
                 "from the data stream", "content", _apply_random, _RANDOM_FIX, priority=2),
)
