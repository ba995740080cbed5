"""Same script on two desktops: the augmented batches differ (DataLoader with 2 workers).

My random-erasing transform has its own torch.Generator so that it does not disturb the
global RNG. Everything else is seeded with torch.manual_seed(0).
"""
import torch
import torch.nn as nn
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, Dataset

torch.manual_seed(0)


class RandomErase:
    def __init__(self, p=0.1):
        self.p = p
        self.generator = torch.Generator()
        self.generator.seed()  # corpus: call-site

    def __call__(self, img):
        keep = torch.rand(img.shape, generator=self.generator) >= self.p
        return img * keep


class Digits(Dataset):
    def __init__(self, transform):
        d = load_digits()
        self.x = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)
        self.y = torch.tensor(d.target)
        self.transform = transform

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.transform(self.x[i]), self.y[i]


if __name__ == "__main__":
    loader = DataLoader(Digits(RandomErase()), batch_size=64, shuffle=False, num_workers=2)
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for epoch in range(2):
        for xb, yb in loader:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
        print(f"epoch {epoch}: loss {loss.item():.4f}")
