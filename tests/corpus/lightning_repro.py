"""Reproducible (Lightning Trainer.fit): seed_everything(0, workers=True), a shuffled
DataLoader and deterministic=True."""
import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset


class LitCNN(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                 nn.Dropout(0.1), nn.Linear(8 * 4 * 4, 10))

    def training_step(self, batch, batch_idx):
        xb, yb = batch
        return F.cross_entropy(self.net(xb), yb)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


if __name__ == "__main__":
    L.seed_everything(0, workers=True)
    digits = load_digits()
    ds = TensorDataset(torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1),
                       torch.tensor(digits.target))
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, deterministic=True, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(LitCNN(), DataLoader(ds, batch_size=64, shuffle=True))
