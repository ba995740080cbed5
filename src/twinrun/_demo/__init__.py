"""The demo's training script lives in this folder, away from ``twinrun/torch.py``: a script run by
path puts its own folder first on ``sys.path``, where ``twinrun/torch.py`` would shadow PyTorch."""
