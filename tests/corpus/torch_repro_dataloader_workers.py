"""Reproducible (PyTorch DataLoader, 2 workers): shuffle with a seeded generator, and a
per-worker augmentation RNG derived from the worker's seed."""
import numpy as np
import torch
import torch.nn as nn
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, Dataset, get_worker_info

torch.manual_seed(0)


class NoisyDigits(Dataset):
    def __init__(self):
        d = load_digits()
        self.x = (d.data / 16.0).astype(np.float32)
        self.y = d.target
        self.rng = None

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        if self.rng is None:  # first call in this worker: a generator from the worker's own seed
            self.rng = np.random.default_rng(get_worker_info().seed)
        return torch.from_numpy(self.x[i] + self.rng.normal(0, 0.05, 64).astype(np.float32)), int(self.y[i])


if __name__ == "__main__":
    loader = DataLoader(NoisyDigits(), batch_size=64, shuffle=True, num_workers=2,
                        generator=torch.Generator().manual_seed(0))
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for epoch in range(2):
        for xb, yb in loader:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
        print(f"epoch {epoch}: loss {loss.item():.6f}")
