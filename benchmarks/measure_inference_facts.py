"""Which PyTorch CPU ops change their bits under a lower instruction set or other library settings.

Each variant runs in a fresh process (the variables are read at start-up); inputs come from NumPy so
that a changed torch.randn does not change every op. Prints the ops whose output digest differs from
the default process. Quoted in docs/inference.md.

    python benchmarks/measure_inference_facts.py
"""
import json
import os
import subprocess
import sys

CHILD = r'''
import torch, torch.nn.functional as F, hashlib, json
import numpy as np
r = np.random.default_rng(0)
t = lambda *s: torch.from_numpy(r.standard_normal(s).astype(np.float32))
x = t(64, 512); w = t(512, 512); img = t(8, 3, 32, 32); cw = t(16, 3, 3, 3)
ops = {
 "linear": lambda: F.linear(x, w), "softmax": lambda: torch.softmax(x, -1),
 "log_softmax": lambda: torch.log_softmax(x, -1),
 "layer_norm": lambda: F.layer_norm(x, (512,)), "rms_norm": lambda: F.rms_norm(x, (512,)), "gelu": lambda: F.gelu(x),
 "sigmoid": lambda: torch.sigmoid(x), "tanh": lambda: torch.tanh(x), "exp": lambda: torch.exp(x),
 "sum_dim": lambda: x.sum(-1), "conv2d": lambda: F.conv2d(img, cw),
 "sdpa": lambda: F.scaled_dot_product_attention(*[x[:8].reshape(4, 2, 8, 64)] * 3),
 "randn": lambda: torch.randn(1000, generator=torch.Generator().manual_seed(0)),
}
print(json.dumps({k: hashlib.sha256(f().numpy().tobytes()).hexdigest()[:16] for k, f in ops.items()}))
'''
def run(env):
    out = subprocess.run([sys.executable, "-c", CHILD], env={**os.environ, **env}, capture_output=True, text=True,
                         timeout=300, check=False)
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {"error": out.returncode}
base = run({})
settings = ["ATEN_CPU_CAPABILITY=avx2", "ATEN_CPU_CAPABILITY=default", "ONEDNN_MAX_CPU_ISA=AVX2",
            "ONEDNN_MAX_CPU_ISA=SSE41", "MKL_CBWR=COMPATIBLE", "MKL_ENABLE_INSTRUCTIONS=AVX2", "OMP_NUM_THREADS=1"]
variants = {s: dict([s.split("=", 1)]) for s in settings}
for name, env in variants.items():
    got = run(env)
    print(f"{name:32s} changes: {[k for k in base if got.get(k) != base[k]] if 'error' not in got else got}")
