"""``seed-tf-data`` and ``seed-tf-random``: TensorFlow's unseeded data randomness gets seeds from twinrun's stream.

A ``tf.data.Dataset.shuffle`` without a seed (``seed-tf-data``: the order), a ``tf.random.Generator``
made from a non-deterministic state and the stateful random ops called without an op seed while no
global seed is set (``seed-tf-random``: augmentation, the content; ``tf.image.random_brightness`` in a
``Dataset.map``, ``tf.random.uniform``, ``tf.nn.dropout``) get seeds from twinrun's ``data`` stream, and
each such op reports its draw at the program's line (a ``Dataset.map`` function is traced once, so the
line is the one inside it); nothing else changes. The global TensorFlow seed is ``--seed``'s business
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
_RANDOM_FIX = ("Seed {where}: give a random op its own `seed=`, and make a generator with "
               "`tf.random.Generator.from_seed(seeds.tf(\"augment\"))` (with `seeds = twinrun.seed_everything(0)`) "
               "in place of `from_non_deterministic_state()`, drawing per-element seeds from it for stateless ops.")


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


# The stateful random ops that take an op seed, by namespace: what a draw of each decides.
_OPS = {"random": {"uniform": "content", "normal": "content", "truncated_normal": "content",
                   "categorical": "content", "gamma": "content", "poisson": "content", "shuffle": "order"},
        "image": {f"random_{n}": "content" for n in ("brightness", "contrast", "crop", "flip_left_right",
                                                     "flip_up_down", "hue", "jpeg_quality", "saturation")},
        "nn": {"dropout": "content"}}


def _global_seed_unset() -> bool:
    """No ``tf.random.set_seed`` is in force where the op is being made (eagerly or in the graph being
    traced): an op without its own seed then draws another one on every run (``random_seed.get_seed``)."""
    from tensorflow.python.eager import context
    from tensorflow.python.framework import ops

    if context.executing_eagerly():
        return context.global_seed() is None
    return ops.get_default_graph().seed is None


def _patch_ops(tf: ModuleType, ctx: InterventionContext) -> None:
    import inspect

    for space, functions in _OPS.items():
        module = getattr(tf, space)
        for fn, kind in functions.items():
            original = getattr(module, fn, None)
            if original is None or getattr(original, "_twinrun_patched", False):
                continue
            try:
                signature = inspect.signature(original)
            except (TypeError, ValueError):
                continue
            if "seed" not in signature.parameters:
                continue
            setattr(module, fn, _seeded_op(tf, ctx, original, signature, f"tf.{space}.{fn}", kind))


def _seeded_op(tf: ModuleType, ctx: InterventionContext, original: Any, signature: Any, api: str,
               kind: str) -> Any:
    def seeded(*args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            return original(*args, **kwargs)   # let the op say what is wrong with its arguments
        if bound.arguments.get("seed") is None and _global_seed_unset():
            ctx.draw("seed-tf-random", api, kind)
            bound.arguments["seed"] = int(ctx.sequence("tf-op").generate_state(1)[0] % 2**31)
        return original(*bound.args, **bound.kwargs)

    seeded.__doc__ = original.__doc__
    seeded.__wrapped__ = original  # type: ignore[attr-defined]
    # autograph would convert the wrapper like the program's own code; the op inside is TensorFlow's
    wrapper = tf.autograph.experimental.do_not_convert(seeded)
    wrapper._twinrun_patched = True
    return wrapper


def _patch_generator(tf: ModuleType, ctx: InterventionContext) -> None:
    _patch_ops(tf, ctx)
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
    Intervention("seed-tf-random", "tf.random.Generator.from_non_deterministic_state() and TensorFlow's random ops "
                 "without an op seed (no global seed set) get seeds from the data stream", "content", _apply_random,
                 _RANDOM_FIX, priority=2),
)
