"""Probe of Score's refinement and its alternatives, outside the trainer, on a trained version.

Run in the set-up's venv after `imagesearch-train train` (it reads that run's vector cache):
  `$IMAGESEARCH_HOME/venv/bin/python bench/probes/score_refinement.py [--version N]`

Reads the version's towers (`image_tower.pt`, `text_tower.pt`), its held-out photo list and its
refinement weights (`training.score_refinement.weights`), and the encoder vectors the trainer
cached (`$IMAGESEARCH_HOME/vectors`; photos at the version's gallery views; texts keyed as the
trainer keys them, which for the plain-ASCII texts of the data is whitespace collapsed). Texts
are read as sent (no word map). Prints, on the held-out judged photos (own-caption pairs dropped,
expert tau-c over individual ratings, crowd tau-b over the yes share):
  1. the plain cosine against the refined Score, on all pairs and split by whether the text
     describes a child (the compliance crate's `describes_child` example, built with cargo);
  2. a per-text normalisation: the cosine less lambda times the text's mean cosine over 2,000
     Flickr8k training photos (both views);
  3. Search with the refinement's weights: test R@1/5/10 of the 500 queries over the 100 test
     photos, plain against weighted (no query bank, no word map; ties count against a query);
  4. whether the refinement carries over to texts it never saw: for three seeds, a quarter of
     the texts that describe no child is set aside, the ridge (the version's alpha and strength)
     is refitted on the other judged photos' pairs without those texts (and without child texts),
     and tau is measured on the held-out photos' pairs with a set-aside text and with a fitted one.
"""
import argparse
import csv
import hashlib
import json
import os
import random
import struct
import subprocess

import numpy as np
import torch

HOME = os.environ.get("IMAGESEARCH_HOME", os.path.expanduser("~/.cache/imagesearch"))
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
DATA = os.environ.get("IMAGESEARCH_DATA", os.path.join(ROOT, "..", "shared", "data"))
MODELS = os.environ.get("IMAGESEARCH_MODELS", os.path.join(ROOT, "models"))
CROPS = ["whole", "square", "top-left", "top-right", "bottom-left", "bottom-right", "centre"]


def load_cache(sha):
    """key -> vector of the trainer's cache file of the encoder `sha`."""
    out, b, i = {}, open(os.path.join(HOME, "vectors", f"vectors-{sha[:16]}.bin"), "rb").read(), 0
    while i + 36 <= len(b):
        dim = struct.unpack("<I", b[i + 32:i + 36])[0]
        end = i + 36 + 4 * dim
        if end > len(b):
            break
        out[b[i:i + 32]] = np.frombuffer(b[i + 36:end], dtype="<f4")
        i = end
    return out


def text_key(text):
    return hashlib.sha256(b"text:" + " ".join(text.split()).encode()).digest()


def view_tags(views):
    if views == "both":
        return ["original", "mirrored"]
    if views == "original":
        return ["original"]
    return [t for c in CROPS for t in (["original", "mirrored"] if c == "whole" else [c, c + "/mirrored"])]


def photo_vector(cache, path, views):
    sha = hashlib.sha256(open(path, "rb").read()).digest()
    vs = [cache.get(hashlib.sha256(sha + t.encode()).digest()) for t in view_tags(views)]
    if any(v is None for v in vs):
        raise SystemExit(f"{path} has no cached {views} vectors: run imagesearch-train train first")
    return np.mean(vs, axis=0)


def judged_pairs():
    """(photo, query id, text, {"expert": [r, r, r], "crowd": share})"""
    texts = {r["query_id"]: r["query_text"] for r in csv.DictReader(open(f"{DATA}/image_search/train_dataset.csv"))}
    for line in open(f"{DATA}/flickr8k_train/Flickr8k.token.txt"):
        key, _, text = line.rstrip("\n").partition("\t")
        texts.setdefault(key, text)
    pairs = {}
    for line in open(f"{DATA}/image_search/ExpertAnnotations.tsv"):
        img, q, *r = line.rstrip("\n").split("\t")
        pairs.setdefault((img, q), {})["expert"] = [int(x) for x in r]
    for line in open(f"{DATA}/image_search/CrowdAnnotations.tsv"):
        img, q, _, yes, no = line.rstrip("\n").split("\t")
        pairs.setdefault((img, q), {})["crowd"] = int(yes) / (int(yes) + int(no))
    return [(img, q, texts[q], j) for (img, q), j in pairs.items() if q in texts and q.split("#")[0] != img]


def describes_child(texts):
    out = subprocess.run(["cargo", "run", "-q", "-p", "imagesearch-compliance", "--example", "describes_child"],
                         input="\n".join(t.replace("\n", " ") for t in texts) + "\n", capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout.split()
    assert len(out) == len(texts)
    return dict(zip(texts, (f == "1" for f in out)))


def kendall(x, y, variant):
    """Kendall tau-c or tau-b (as scipy computes them), chunked O(n^2)."""
    x, y, n = np.asarray(x, float), np.asarray(y, float), len(x)
    conc = disc = tie_x = tie_y = 0
    for s in range(0, n, 2000):
        dx, dy = np.sign(x[s:s + 2000, None] - x[None, :]), np.sign(y[s:s + 2000, None] - y[None, :])
        conc += int((dx * dy > 0).sum())
        disc += int((dx * dy < 0).sum())
        tie_x += int(((dx == 0) & (dy != 0)).sum())
        tie_y += int(((dy == 0) & (dx != 0)).sum())
    conc, disc, tie_x, tie_y = conc // 2, disc // 2, tie_x // 2, tie_y // 2
    if variant == "c":
        m = min(len(set(x)), len(set(y)))
        return 2 * (conc - disc) / (n * n * (m - 1) / m)
    return (conc - disc) / np.sqrt((conc + disc + tie_x) * (conc + disc + tie_y))


def taus(pairs, scores):
    ex, ey, cx, cy = [], [], [], []
    for p, s in zip(pairs, scores):
        if "expert" in p[3]:
            ex += [s] * 3
            ey += p[3]["expert"]
        if "crowd" in p[3]:
            cx.append(s)
            cy.append(p[3]["crowd"])
    return f"tau-c {kendall(ex, ey, 'c'):.3f} ({len(ey)} ratings), tau-b {kendall(cx, cy, 'b'):.3f} ({len(cy)} pairs)"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--version", type=int, help="default: the newest")
    args = ap.parse_args()
    root = os.path.join(MODELS, "scorer")
    version = args.version or max(int(v) for v in os.listdir(root) if v.isdigit())
    vdir = os.path.join(root, str(version))
    manifest = json.load(open(os.path.join(vdir, "manifest.json")))
    refinement = manifest["training"].get("score_refinement", {})
    weights = np.array(refinement.get("weights") or [], dtype=np.float32)
    skip = 1 if isinstance(manifest["training"].get("levers", {}).get("chosen_beta"), (int, float)) else 0
    views = manifest.get("index_views") or "both"
    heldout = set(manifest["training"]["heldout_photo_list"])
    images = load_cache(manifest["image_encoder"]["sha256"])
    texts = load_cache(manifest["text_encoder"]["sha256"])
    image_tower = torch.jit.load(os.path.join(vdir, "image_tower.pt"))
    text_tower = torch.jit.load(os.path.join(vdir, "text_tower.pt"))

    def embed(tower, rows):
        with torch.no_grad():
            return tower(torch.tensor(np.stack(rows))).numpy()[:, skip:]

    everything = judged_pairs()
    pairs = [p for p in everything if p[0] in heldout]
    photos = sorted({p[0] for p in everything})
    strings = sorted({p[2] for p in everything})
    P = dict(zip(photos, embed(image_tower, [photo_vector(images, f"{DATA}/image_search/train_images/{p}", views) for p in photos])))
    T = dict(zip(strings, embed(text_tower, [texts[text_key(t)] for t in strings])))
    g = weights if len(weights) else np.ones(next(iter(P.values())).shape[0], dtype=np.float32)
    print(f"version {version}: {len(pairs)} held-out pairs of {len(heldout)} photos, gallery views {views}, "
          f"refinement {'used' if len(weights) else 'not used'}")

    child = describes_child(strings)
    cosine = [float(P[p[0]] @ T[p[2]]) for p in pairs]
    refined = [float((P[p[0]] * g) @ T[p[2]]) for p in pairs]
    print("1. plain cosine against the refined Score")
    for name, keep in [("all pairs", lambda p: True), ("text describes no child", lambda p: not child[p[2]]),
                       ("text describes a child", lambda p: child[p[2]])]:
        idx = [i for i, p in enumerate(pairs) if keep(p)]
        sub = [pairs[i] for i in idx]
        print(f"   {name}: cosine {taus(sub, [cosine[i] for i in idx])}; refined {taus(sub, [refined[i] for i in idx])}")

    train = [line.strip() for line in open(f"{DATA}/flickr8k_train/Flickr_8k.trainImages.txt") if line.strip()]
    random.Random(1).shuffle(train)
    bank = embed(image_tower, [photo_vector(images, f"{DATA}/flickr8k_train/images/{p}", "both") for p in train[:2000]])
    mean_t = {t: float((bank @ T[t]).mean()) for t in strings}
    print("2. per-text normalisation (cosine - lambda * the text's mean cosine over 2,000 training photos)")
    for lam in (0.5, 1.0):
        print(f"   lambda {lam}: {taus(pairs, [c - lam * mean_t[p[2]] for c, p in zip(cosine, pairs)])}")

    queries = list(csv.DictReader(open(f"{DATA}/image_search/test_queries.csv"), delimiter="|"))
    tests = [r["image"] for r in csv.DictReader(open(f"{DATA}/image_search/test_images.csv"))]
    G = embed(image_tower, [photo_vector(images, f"{DATA}/image_search/test_images/{p}", views) for p in tests])
    Q = embed(text_tower, [texts[text_key(r["query_text"])] for r in queries])
    own = np.array([tests.index(r["image"]) for r in queries])

    def recall(weight):
        s = (Q * weight) @ G.T
        rank = (s >= s[np.arange(len(own)), own][:, None]).sum(1) - 1
        return " ".join(f"R@{k} {(rank < k).mean():.3f}" for k in (1, 5, 10))

    print(f"3. Search, {len(queries)} test queries x {len(tests)} photos: plain {recall(np.ones_like(g))}; weighted {recall(g)}")

    alpha, strength = refinement.get("alpha") or 1.0, refinement.get("strength") or 2.0
    adult = sorted({p[2] for p in everything if not child[p[2]]})
    print(f"4. texts the fit never saw (alpha {alpha}, strength {strength})")
    for seed in (1, 2, 3):
        unseen = set(random.Random(seed).sample(adult, len(adult) // 4))
        fit = [p for p in everything if p[0] not in heldout and not child[p[2]] and p[2] not in unseen]
        X = np.stack([P[p[0]] * T[p[2]] for p in fit]).astype(np.float64)
        y = np.array([np.mean([(r - 1) / 3 for r in p[3].get("expert", [])] + ([p[3]["crowd"]] if "crowd" in p[3] else []))
                      for p in fit])
        mu = X.mean(0)
        gram = (X - mu).T @ (X - mu)
        w = np.linalg.solve(gram + alpha * np.trace(gram) / len(gram) * np.eye(len(gram)), (X - mu).T @ (y - y.mean()))
        scale = strength * X.sum(1).std() / ((X - mu) @ w).std()
        weight = 1 + scale * w
        line = []
        for name, keep in [("set-aside texts", lambda p: p[2] in unseen), ("fitted texts", lambda p: not child[p[2]] and p[2] not in unseen)]:
            sub = [p for p in pairs if keep(p)]
            line.append(f"{name}: cosine {taus(sub, [float(P[p[0]] @ T[p[2]]) for p in sub])}, "
                        f"refined {taus(sub, [float((P[p[0]] * weight) @ T[p[2]]) for p in sub])}")
        print(f"   seed {seed}: " + "; ".join(line))


if __name__ == "__main__":
    main()
