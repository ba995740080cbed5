"""Lightning: seed_everything(0) and deterministic=True, but every run trains differently.

My Dataset owns a NumPy Generator for its jitter augmentation; two DataLoader workers.
"""
import lightning as L
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, Dataset


class JitteredDigits(Dataset):
    def __init__(self):
        d = load_digits()
        self.x = (d.data / 16.0).astype(np.float32)
        self.y = d.target
        self.rng = np.random.default_rng()  # corpus: call-site

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        jitter = self.rng.normal(0.0, 0.05, size=64).astype(np.float32)
        return torch.from_numpy(self.x[i] + jitter), int(self.y[i])


class LitMLP(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    def training_step(self, batch, batch_idx):
        xb, yb = batch
        return F.cross_entropy(self.net(xb), yb)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


if __name__ == "__main__":
    L.seed_everything(0)
    loader = DataLoader(JitteredDigits(), batch_size=64, shuffle=True, num_workers=2)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, deterministic=True, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(LitMLP(), loader)
