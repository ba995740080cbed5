"""Bag-of-words classifier: identical parameters, different results on every run.

torch.manual_seed(0), a fixed train order, no dropout. The embedding weights at step 0
are the same in every run, but the losses are not.
"""
import random

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(0)

POSITIVE = "good great excellent happy love wonderful best fine nice superb".split()
NEGATIVE = "bad awful terrible sad hate worst poor ugly boring weak".split()
FILLER = "the a movie film plot actor scene story music was is it this and very".split()

# A small synthetic review corpus (the real one is read from a CSV).
maker = random.Random(1234)
reviews, labels = [], []
for _ in range(1200):
    label = maker.random() < 0.5
    words = maker.choices(FILLER, k=8) + maker.choices(POSITIVE if label else NEGATIVE, k=2)
    maker.shuffle(words)
    reviews.append(" ".join(words))
    labels.append(int(label))

vocab = {w: i for i, w in enumerate(set(w for r in reviews for w in r.split()))}  # corpus: call-site
tokens = torch.tensor([[vocab[w] for w in r.split()] for r in reviews])
targets = torch.tensor(labels)


class BagOfWords(nn.Module):
    def __init__(self, n_words):
        super().__init__()
        self.embed = nn.EmbeddingBag(n_words, 16, mode="mean")
        self.out = nn.Linear(16, 2)

    def forward(self, tokens):
        return self.out(self.embed(tokens))


model = BagOfWords(len(vocab))
opt = torch.optim.Adam(model.parameters(), lr=0.01)
for epoch in range(2):
    for xb, yb in zip(tokens.split(100), targets.split(100)):
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
    print(f"epoch {epoch}: loss {loss.item():.4f}")
