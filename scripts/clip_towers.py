"""A user's own CLIP-style checkpoint as the two encoders of the product.

Reads a Hugging Face `CLIPModel` directory (`config.json`, `model.safetensors`, `tokenizer.json`,
optionally `preprocessor_config.json`) or an open_clip one (`open_clip_config.json`, its weights,
`tokenizer.json`; read by open_clip_layout.py) and exports its towers to TorchScript under the
same contract as the default encoders, so the trainer and the server use them unchanged:

  <name>-image: f32 [B,3,H,W] RGB in [0,1] -> [B,projection_dim], unit length
                (CLIP's mean/std normalisation inside the module)
  <name>-text:  (input_ids, attention_mask) i64 [B,L] -> [B,projection_dim], unit length
                (pooled at the last attended token, the end-of-text token of CLIP's template)

The towers are written here in plain torch (as the MiniLM export is), with Hugging Face's
parameter names mapped onto them; transformers is not needed to export. The end-to-end test
(`tests/tests/clip_encoders.rs`) checks the exported files against transformers' own CLIPModel.
"""

import json
import math
import os
import shutil

import torch
from torch import nn
from torch.nn import functional as F

from open_clip_layout import is_open_clip, read_open_clip

# transformers' CLIPTextConfig / CLIPVisionConfig defaults, for configs that leave a key out.
TEXT_DEFAULTS = {"vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048,
                 "num_hidden_layers": 12, "num_attention_heads": 8, "max_position_embeddings": 77,
                 "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}
VISION_DEFAULTS = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                   "num_attention_heads": 12, "num_channels": 3, "image_size": 224, "patch_size": 32,
                   "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}

# OpenAI CLIP's normalisation, the default when the checkpoint has no preprocessor config.
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def activation(name):
    if name == "quick_gelu":
        return lambda x: x * torch.sigmoid(1.702 * x)
    if name in ("gelu", "gelu_new", "gelu_pytorch_tanh"):
        approximate = "none" if name == "gelu" else "tanh"
        return lambda x: F.gelu(x, approximate=approximate)
    raise SystemExit(f"CLIP checkpoint: activation {name!r} is not supported (quick_gelu, gelu)")


class Block(nn.Module):
    """Pre-LayerNorm transformer layer with CLIP's parameter layout."""

    def __init__(self, cfg):
        super().__init__()
        d = cfg["hidden_size"]
        self.heads = cfg["num_attention_heads"]
        self.scale = 1.0 / math.sqrt(d // self.heads)
        eps = cfg.get("layer_norm_eps", 1e-5)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.ln1 = nn.LayerNorm(d, eps=eps)
        self.ln2 = nn.LayerNorm(d, eps=eps)
        self.fc1 = nn.Linear(d, cfg["intermediate_size"])
        self.fc2 = nn.Linear(cfg["intermediate_size"], d)
        self.act = activation(cfg.get("hidden_act", "quick_gelu"))

    def forward(self, x, bias):
        b, n, d = x.shape

        def split(t):
            return t.view(b, n, self.heads, -1).transpose(1, 2)

        h = self.ln1(x)
        q, k, v = split(self.q(h)), split(self.k(h)), split(self.v(h))
        att = torch.matmul(q, k.transpose(-1, -2)) * self.scale
        if bias is not None:
            att = att + bias
        ctx = torch.matmul(att.softmax(-1), v).transpose(1, 2).reshape(b, n, d)
        x = x + self.o(ctx)
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


class TextTower(nn.Module):
    """Token + position embeddings, causal layers, final LayerNorm, pooled at the last attended
    token, projected and L2-normalised. Position ids and masks come from the input, so the traced
    module runs on whatever device its input is on."""

    def __init__(self, cfg, projection_dim):
        super().__init__()
        d = cfg["hidden_size"]
        self.token = nn.Embedding(cfg["vocab_size"], d)
        self.position = nn.Embedding(cfg["max_position_embeddings"], d)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg["num_hidden_layers"]))
        self.ln = nn.LayerNorm(d, eps=cfg.get("layer_norm_eps", 1e-5))
        self.proj = nn.Linear(d, projection_dim, bias=False)

    def forward(self, input_ids, attention_mask):
        pos = torch.cumsum(torch.ones_like(input_ids), 1) - 1
        x = self.token(input_ids) + self.position(pos)
        blocked = (pos[:, None, :] > pos[:, :, None]) | (attention_mask[:, None, :] == 0)
        bias = blocked.to(x.dtype)[:, None, :, :] * torch.finfo(x.dtype).min
        for layer in self.layers:
            x = layer(x, bias)
        x = self.ln(x)
        last = (attention_mask.sum(1) - 1).clamp(min=0)
        pooled = x.gather(1, last[:, None, None].expand(-1, 1, x.shape[2])).squeeze(1)
        return F.normalize(self.proj(pooled), p=2.0, dim=1)


class ImageTower(nn.Module):
    """ViT: normalisation, patch embedding, class token, pre-LayerNorm, layers, post-LayerNorm of
    the class token, projected and L2-normalised."""

    def __init__(self, cfg, projection_dim, mean, std):
        super().__init__()
        d, p, size = cfg["hidden_size"], cfg["patch_size"], cfg["image_size"]
        eps = cfg.get("layer_norm_eps", 1e-5)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        self.patch = nn.Conv2d(cfg.get("num_channels", 3), d, kernel_size=p, stride=p, bias=False)
        self.cls = nn.Parameter(torch.zeros(d))
        self.position = nn.Parameter(torch.zeros((size // p) ** 2 + 1, d))
        self.pre = nn.LayerNorm(d, eps=eps)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg["num_hidden_layers"]))
        self.post = nn.LayerNorm(d, eps=eps)
        self.proj = nn.Linear(d, projection_dim, bias=False)

    def forward(self, x):
        x = (x - self.mean) / self.std
        x = self.patch(x).flatten(2).transpose(1, 2)
        cls = self.cls.view(1, 1, -1).expand(x.shape[0], 1, -1)
        x = self.pre(torch.cat([cls, x], 1) + self.position)
        for layer in self.layers:
            x = layer(x, None)
        return F.normalize(self.proj(self.post(x[:, 0])), p=2.0, dim=1)


def block_state(w, prefix, n):
    names = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
             "o": "self_attn.out_proj", "ln1": "layer_norm1", "ln2": "layer_norm2",
             "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
    return {f"layers.{i}.{ours}.{p}": w[f"{prefix}.encoder.layers.{i}.{theirs}.{p}"]
            for i in range(n) for ours, theirs in names.items() for p in ("weight", "bias")}


def read_checkpoint(ckpt):
    """config, weights and preprocessing of a Hugging Face CLIPModel directory, or of an
    open_clip one read into that layout (open_clip_layout.py)."""
    from safetensors.torch import load_file

    if not os.path.isdir(ckpt):
        raise SystemExit(f"CLIP checkpoint {ckpt}: not a directory")
    if is_open_clip(ckpt):
        return read_open_clip(ckpt, TEXT_DEFAULTS, VISION_DEFAULTS)
    for needed in ("config.json", "model.safetensors", "tokenizer.json"):
        if not os.path.isfile(os.path.join(ckpt, needed)):
            raise SystemExit(f"CLIP checkpoint {ckpt}: {needed} missing (a Hugging Face CLIPModel "
                             "directory: config.json, model.safetensors, tokenizer.json; or an "
                             "open_clip one: open_clip_config.json, its weights, tokenizer.json)")
    with open(os.path.join(ckpt, "config.json")) as f:
        cfg = json.load(f)
    cfg["text_config"] = {**TEXT_DEFAULTS, **(cfg.get("text_config") or {})}
    cfg["vision_config"] = {**VISION_DEFAULTS, **(cfg.get("vision_config") or {})}
    cfg.setdefault("projection_dim", 512)
    weights = load_file(os.path.join(ckpt, "model.safetensors"))
    pre = {}
    if os.path.isfile(os.path.join(ckpt, "preprocessor_config.json")):
        with open(os.path.join(ckpt, "preprocessor_config.json")) as f:
            pre = json.load(f)
    return cfg, weights, pre


def load_text(cfg, w):
    tc = cfg["text_config"]
    tower = TextTower(tc, cfg["projection_dim"])
    state = {
        "token.weight": w["text_model.embeddings.token_embedding.weight"],
        "position.weight": w["text_model.embeddings.position_embedding.weight"],
        "ln.weight": w["text_model.final_layer_norm.weight"],
        "ln.bias": w["text_model.final_layer_norm.bias"],
        "proj.weight": w["text_projection.weight"],
        **block_state(w, "text_model", tc["num_hidden_layers"]),
    }
    tower.load_state_dict(state, strict=True)
    return tower.eval()


def load_image(cfg, w, mean, std):
    vc = cfg["vision_config"]
    tower = ImageTower(vc, cfg["projection_dim"], mean, std)
    e = "vision_model.embeddings"
    state = {
        "mean": tower.mean, "std": tower.std,
        "patch.weight": w[f"{e}.patch_embedding.weight"],
        "cls": w[f"{e}.class_embedding"],
        "position": w[f"{e}.position_embedding.weight"],
        "pre.weight": w["vision_model.pre_layrnorm.weight"],
        "pre.bias": w["vision_model.pre_layrnorm.bias"],
        "post.weight": w["vision_model.post_layernorm.weight"],
        "post.bias": w["vision_model.post_layernorm.bias"],
        "proj.weight": w["visual_projection.weight"],
        **block_state(w, "vision_model", vc["num_hidden_layers"]),
    }
    tower.load_state_dict(state, strict=True)
    return tower.eval()


def export_clip(ckpt, name, sha256):
    """Returns the two export functions (image, text) for `write_encoder`."""
    cfg, weights, pre = read_checkpoint(ckpt)
    layout = "open_clip" if is_open_clip(ckpt) else "Hugging Face CLIPModel"
    source = f"CLIP checkpoint {os.path.abspath(ckpt)} ({layout} layout)"
    dim = cfg["projection_dim"]

    def image(out_dir):
        size = cfg["vision_config"]["image_size"]
        mean, std = pre.get("image_mean", CLIP_MEAN), pre.get("image_std", CLIP_STD)
        tower = load_image(cfg, weights, mean, std)
        x = torch.rand(3, 3, size, size)
        with torch.no_grad():
            traced = torch.jit.trace(tower, x[:2])
            err = max((traced(x) - tower(x)).abs().max().item(),
                      (traced(x[:1]) - tower(x[:1])).abs().max().item())
        assert err < 1e-4, f"traced CLIP image tower differs from eager by {err}"
        path = os.path.join(out_dir, "encoder.pt")
        traced.save(path)
        return {
            "name": f"{name}-image", "kind": "image", "file": "encoder.pt", "source": source,
            "input": {"layout": "NCHW", "dtype": "f32", "channels": "RGB", "range": [0.0, 1.0],
                      "height": size, "width": size,
                      "resize": "whole image to the input size, aspect not kept, triangle filter "
                                "(CLIP itself was trained on centre crops)"},
            "normalisation": f"inside the module: (x - {mean}) / {std}",
            "output_dim": dim,
            "output": "projected class token, unit length",
            "files": {"encoder.pt": sha256(path)},
        }

    def text(out_dir):
        tc = cfg["text_config"]
        tower = load_text(cfg, weights)
        ids = torch.tensor([[1, 5, 9, 7, 2, 0, 0], [1, 6, 2, 0, 0, 0, 0]]) % tc["vocab_size"]
        mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0, 0]])
        with torch.no_grad():
            traced = torch.jit.trace(tower, (ids, mask))
            want = tower(ids, mask)
            longer = torch.cat([ids, torch.zeros(2, 4, dtype=torch.long)], 1)
            longer_mask = torch.cat([mask, torch.zeros(2, 4, dtype=torch.long)], 1)
            err = max((traced(ids, mask) - want).abs().max().item(),
                      (traced(longer, longer_mask) - want).abs().max().item(),
                      (traced(ids[1:, :3], mask[1:, :3]) - want[1:]).abs().max().item())
        assert err < 1e-5, f"traced CLIP text tower is not padding/batch invariant: {err}"
        path = os.path.join(out_dir, "encoder.pt")
        traced.save(path)
        tok = os.path.join(out_dir, "tokenizer.json")
        shutil.copyfile(os.path.join(ckpt, "tokenizer.json"), tok)
        return {
            "name": f"{name}-text", "kind": "text", "file": "encoder.pt", "source": source,
            "input": {"layout": "input_ids, attention_mask: i64 [B, L]", "tokenizer": "tokenizer.json",
                      "max_length": tc["max_position_embeddings"], "padding": "batch-longest",
                      "lowercase": True},
            "normalisation": "causal attention under the padding mask, pooled at the last attended "
                             "token, projected, L2 norm (inside the module)",
            "output_dim": dim,
            "output": "text embedding in the image tower's space, unit length",
            "files": {"encoder.pt": sha256(path), "tokenizer.json": sha256(tok)},
        }

    return image, text
