"""TensorFlow's part of doctor's ``seed-tf-data`` and ``seed-tf-random`` interventions (wired in
``twinrun.interventions``).

A ``tf.data.Dataset.shuffle`` without a seed (``seed-tf-data``: the order) and a ``tf.random.Generator``
made from a non-deterministic state (``seed-tf-random``: augmentation, the content) get seeds from
twinrun's ``data`` stream; nothing else changes. The global
TensorFlow seed is ``--seed``'s business (it also fixes ``model.fit(shuffle=True)`` on arrays and
unseeded initialisers), so a run that only this intervention repairs is a ``data-pipeline`` cause.
"""

from __future__ import annotations

from typing import Callable

__all__ = ["install"]


def install(note: Callable[[str], None], next_sequence: Callable[[str], object], *, shuffle: bool = True,
            generators: bool = True) -> None:
    """Patch TensorFlow once it is imported. ``note(what)`` reports an act at the caller's line;
    ``next_sequence(kind)`` gives the ``SeedSequence`` for the next unseeded object of ``kind``.
    ``shuffle``/``generators`` choose what is seeded: ``Dataset.shuffle``, ``tf.random.Generator``."""
    from . import when_imported

    def patch(_tf_module) -> None:
        import tensorflow as tf

        if shuffle:
            _patch_shuffle(note, next_sequence)
        if generators:
            _patch_generator(tf, note, next_sequence)

    when_imported("tensorflow", patch)


def _patch_shuffle(note, next_sequence) -> None:
    from tensorflow.python.data.ops.dataset_ops import DatasetV2

    shuffle = DatasetV2.shuffle
    if getattr(shuffle, "_twinrun_patched", False):
        return

    def seeded_shuffle(self, buffer_size, seed=None, *args, **kwargs):
        if seed is None:
            note("tf.data.Dataset.shuffle(...) without a seed")
            seed = int(next_sequence("Dataset.shuffle").generate_state(1)[0] % 2**31)
        return shuffle(self, buffer_size, seed, *args, **kwargs)

    seeded_shuffle._twinrun_patched = True
    seeded_shuffle.__doc__ = shuffle.__doc__
    DatasetV2.shuffle = seeded_shuffle


def _patch_generator(tf, note, next_sequence) -> None:
    from_state = tf.random.Generator.from_non_deterministic_state
    if getattr(from_state, "_twinrun_patched", False):
        return

    def from_non_deterministic_state(alg=None):
        note("tf.random.Generator.from_non_deterministic_state()")
        seed = int(next_sequence("Generator").generate_state(2, "uint64")[0] % 2**63)
        return tf.random.Generator.from_seed(seed, alg=alg)

    from_non_deterministic_state.__wrapped__ = from_state
    from_non_deterministic_state._twinrun_patched = True
    tf.random.Generator.from_non_deterministic_state = staticmethod(from_non_deterministic_state)
