"""TensorFlow's part of doctor's ``seed-tf-data`` intervention (wired in ``twinrun.interventions``).

A ``tf.data.Dataset.shuffle`` without a seed and a ``tf.random.Generator`` made from a
non-deterministic state get seeds from twinrun's ``data`` stream; nothing else changes. The global
TensorFlow seed is ``--seed``'s business (it also fixes ``model.fit(shuffle=True)`` on arrays and
unseeded initialisers), so a run that only this intervention repairs is a ``data-pipeline`` cause.
"""

from __future__ import annotations

from typing import Callable

__all__ = ["install"]


def install(note: Callable[[str], None], next_sequence: Callable[[str], object]) -> None:
    """Patch TensorFlow once it is imported. ``note(what)`` reports an act at the caller's line;
    ``next_sequence(kind)`` gives the ``SeedSequence`` for the next unseeded object of ``kind``."""
    from . import when_imported

    def patch(_tf_module) -> None:
        import tensorflow as tf
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

        from_state = tf.random.Generator.from_non_deterministic_state

        def from_non_deterministic_state(alg=None):
            note("tf.random.Generator.from_non_deterministic_state()")
            seed = int(next_sequence("Generator").generate_state(2, "uint64")[0] % 2**63)
            return tf.random.Generator.from_seed(seed, alg=alg)

        from_non_deterministic_state.__wrapped__ = from_state
        tf.random.Generator.from_non_deterministic_state = staticmethod(from_non_deterministic_state)

    when_imported("tensorflow", patch)
