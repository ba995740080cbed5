"""Hugging Face transformers 5 ``Trainer`` on a tiny BERT built from a config (no download).

The digits become token sequences: each of the 64 pixels (0..16) is a token, the label is the
digit. ``BertForSequenceClassification`` computes its loss inside ``forward`` (with a
``CrossEntropyLoss()`` built there), and the Trainer passes it ``num_items_in_batch`` as a keyword
argument. One step = one optimizer step (``state.global_step``).
Options: --seed S, --unseeded (no ``set_seed`` before the model is built; the Trainer still seeds
its own data order and dropout with ``TrainingArguments.seed``, 42 by default, as for any user),
--wide (``intermediate_size`` 2048), --steps N (``max_steps``).
"""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from _truth import BATCH, Truth, digits, options
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)


class Digits(torch.utils.data.Dataset):
    def __init__(self):
        x, y = digits()
        self.ids = torch.from_numpy((x * 16).round().astype("int64") + 4)  # ids 0..3 left for special tokens
        self.labels = torch.from_numpy(y)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.labels[i]}


class TruthTrainer(Trainer):
    """Takes the step-0 gradients right after backward: ``training_step`` is HF's documented override."""

    def __init__(self, *a, truth: Truth, **kw):
        super().__init__(*a, **kw)
        self.truth = truth
        self.backward_calls = 0

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.state.global_step == 0:
            self.truth.loss(loss)
            self.truth.grads(((n, p.grad) for n, p in model.named_parameters()), call=self.backward_calls)
            self.backward_calls += 1
        return loss


class CountSteps(TrainerCallback):
    """The Trainer's own events: optimizer steps, and whether clipping changed the step-0 gradients."""

    def __init__(self, truth: Truth):
        self.truth, self.steps, self.clipped = truth, 0, None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.steps == 0 and self.truth.enabled:  # after clipping (trainer.py), before optimizer.step()
            now = [p.grad.numpy() for p in model.parameters()]
            self.clipped = any((a != b).any() for a, b in zip(now, self.truth._grads))

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.steps += 1


def main() -> None:
    args = options(__doc__, callback={"action": "store_true"})
    if not args.unseeded:
        set_seed(args.seed)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=2048 if args.wide else 64, max_position_embeddings=64, num_labels=10)
    model = BertForSequenceClassification(config)
    truth = Truth("hf-trainer", "torch", notes="grads are those backward produced, before the Trainer clips them")
    truth.params(n for n, p in model.named_parameters() if p.requires_grad)
    truth.watch_order(model.named_parameters())
    counter = CountSteps(truth)
    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(output_dir=out, max_steps=args.steps, per_device_train_batch_size=BATCH // 2,
                                  learning_rate=1e-3, report_to=[], save_strategy="no", logging_strategy="no",
                                  disable_tqdm=True, use_cpu=True, dataloader_num_workers=0,
                                  **({} if args.unseeded else {"seed": args.seed}))
        cb = []
        if args.callback:   # --callback: with twinrun.huggingface.Callback (the trace must be the same)
            import twinrun.huggingface

            cb.append(twinrun.huggingface.Callback())
        trainer = TruthTrainer(model=model, args=targs, train_dataset=Digits(), callbacks=[counter, *cb], truth=truth)
        trainer.train()
    truth.save(counter.steps, global_step=trainer.state.global_step, clipped_at_step0=counter.clipped,
               model_accepts_loss_kwargs=trainer.model_accepts_loss_kwargs)
    print(f"{counter.steps} steps (global_step {trainer.state.global_step})")


if __name__ == "__main__":
    main()
