"""Probe: the query child detector of a version (default 1; VERSION=N) on trainer/data/query_heldout.tsv
(100 child / 100 adult texts) with the fp32 and the bf16 MiniLM serving files: recall, adults
flagged, and how many decisions differ. Run from the repository root in the set-up's venv:
`$IMAGESEARCH_HOME/venv/bin/python bench/probes/bf16_query_detector.py`."""
import json
import os

import torch
from tokenizers import Tokenizer
torch.set_num_threads(2)
E = os.path.join(os.environ.get("IMAGESEARCH_HOME", os.path.expanduser("~/.cache/imagesearch")), "encoders", "minilm-l6-v2")
V = os.environ.get("VERSION", "1")
tok = Tokenizer.from_file(E + "/tokenizer.json"); tok.no_padding(); tok.no_truncation()
rows = [l.split("\t", 1) for l in open("trainer/data/query_heldout.tsv").read().splitlines() if l.strip()]
d = json.load(open(f"models/scorer/{V}/query_detector.json")); thr = json.load(open(f"models/scorer/{V}/manifest.json"))["query_detector"]["threshold"]
mean, scale, w, b = torch.tensor(d["mean"]), torch.tensor(d["scale"]), torch.tensor(d["weights"]), d["bias"]
def enc(f, t):
    ids = torch.tensor([tok.encode(t.lower()).ids[:128]]); return f(ids, (ids != 0).long())[0]
out = {}
for name in ("encoder.portable.pt", "encoder.portable-bf16.pt"):
    f = torch.jit.load(f"{E}/{name}")
    with torch.no_grad():
        p = [torch.sigmoid((((enc(f, t) - mean) / scale) * w).sum() + b).item() for _, t in rows]
    out[name] = p
    child = [pi >= thr for (lab, _), pi in zip(rows, p) if lab == "child"]
    adult = [pi >= thr for (lab, _), pi in zip(rows, p) if lab != "child"]
    print(f"{name}: recall {sum(child)}/{len(child)}, adults flagged {sum(adult)}/{len(adult)}")
a, c = out["encoder.portable.pt"], out["encoder.portable-bf16.pt"]
print("decisions that differ:", sum((x >= thr) != (y >= thr) for x, y in zip(a, c)), "max prob diff %.4f" % max(abs(x - y) for x, y in zip(a, c)))
