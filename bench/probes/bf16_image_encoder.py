"""Probe of a lever not yet shipped: EfficientNet-Lite0 in bfloat16 on a CPU with avx512_bf16.

Run in the set-up's venv: `$IMAGESEARCH_HOME/venv/bin/python bench/probes/bf16_image_encoder.py`.
Prints the fidelity of the bf16 network's features against the fp32 reference on 64 test photos
(cosine, largest absolute difference) and the median time of a pass at batch 1 and 4 on one
thread, against the fp32 serving file (channels-last, frozen). Whether the drift is acceptable
is for `imagesearch-train eval` to say (R@k, tau, the detector's recall), not this probe.
(MiniLM: the reference file's traced float constants do not mix with bf16 weights; a bf16 text
encoder needs a re-trace from the Python module.)"""
import glob
import os
import time

import numpy as np
import torch
from PIL import Image
torch.set_num_threads(int(os.environ.get("THREADS", "1")))
E = os.path.join(os.environ.get("IMAGESEARCH_HOME", os.path.expanduser("~/.cache/imagesearch")), "encoders")
D = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "data", "image_search")

def timeit(f, n=30):
    for _ in range(5): f()
    ts = []
    for _ in range(n):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return 1000 * float(np.median(ts))

class Bf16(torch.nn.Module):
    """The network in bf16 behind a cast of its fp32 input to bf16, channels-last."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)).float()


files = sorted(glob.glob(D + "/test_images/*"))[:64]
x = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB").resize((224, 224), Image.BILINEAR), dtype=np.float32) / 255).permute(2, 0, 1) for f in files])
ref = torch.jit.load(E + "/efficientnet-lite0/encoder.pt").eval()
fast = torch.jit.load(E + "/efficientnet-lite0/encoder.cpu.pt").eval()
with torch.no_grad():
    want = ref(x)
    b16 = torch.jit.load(E + "/efficientnet-lite0/encoder.pt").eval().to(torch.bfloat16)
    bf = torch.jit.freeze(torch.jit.trace(Bf16(b16), x[:2]).eval())
    got = torch.cat([bf(x[i:i + 8]) for i in range(0, len(x), 8)])
    c = torch.nn.functional.cosine_similarity(got, want, dim=1)
    print(f"image bf16: min cos {c.min():.5f} mean {c.mean():.6f} max abs {(got - want).abs().max():.3e}")
    for b in (1, 4):
        print(f"image b{b}: fp32 cpu.pt {timeit(lambda: fast(x[:b])):.2f} ms, bf16 {timeit(lambda: bf(x[:b])):.2f} ms")
