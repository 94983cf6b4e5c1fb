"""An open_clip checkpoint read into the Hugging Face `CLIPModel` layout that clip_towers.py exports.

open_clip (github.com/mlfoundations/open_clip) saves a model as a directory like the ones LAION
publishes: `open_clip_config.json` ({"model_cfg": {"embed_dim", "quick_gelu", "vision_cfg",
"text_cfg"}, "preprocess_cfg": {"mean", "std"}}), the weights as `open_clip_model.safetensors` or
`open_clip_pytorch_model.bin` (a state dict; a training checkpoint's {"state_dict": ...} with
"module." prefixes is accepted too), and `tokenizer.json` for its BPE. Only the plain CLIP
architecture is read: a ViT image tower pooled at the class token and a causal text transformer
pooled at the end-of-text token. Variants with other pooling, LayerScale, attentional pooling, a
timm or Hugging Face tower (CoCa, SigLIP, ConvNeXt, ...) are refused by name, never guessed.

Weights are loaded with `torch.load(weights_only=True)`: a checkpoint cannot run code here.
"""

import json
import os

import torch

WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")

# Settings whose non-default values change the architecture away from what the towers implement.
UNSUPPORTED = {
    "vision_cfg": {"ls_init_value": None, "attentional_pool": False, "no_ln_pre": False,
                   "pool_type": "tok", "final_ln_after_pool": False, "pos_embed_type": "learnable",
                   "timm_model_name": None, "output_tokens": False},
    "text_cfg": {"ls_init_value": None, "embed_cls": False, "no_causal_mask": False,
                 "pool_type": "argmax", "proj_bias": False, "hf_model_name": None},
}


def is_open_clip(ckpt):
    return os.path.isfile(os.path.join(ckpt, "open_clip_config.json"))


def _refuse(ckpt, why):
    raise SystemExit(f"open_clip checkpoint {ckpt}: {why}")


def _state_dict(ckpt):
    path = next((os.path.join(ckpt, f) for f in WEIGHT_FILES if os.path.isfile(os.path.join(ckpt, f))), None)
    if path is None:
        _refuse(ckpt, f"no weights ({' or '.join(WEIGHT_FILES)})")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a pickle that needs more than tensors is not a state dict
            _refuse(ckpt, f"{os.path.basename(path)} is not a plain state dict ({e})")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        _refuse(ckpt, f"{os.path.basename(path)} does not hold a state dict of tensors")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def _check_supported(ckpt, model_cfg):
    for part, defaults in UNSUPPORTED.items():
        given = model_cfg.get(part) or {}
        for key, default in defaults.items():
            if key in given and given[key] != default:
                _refuse(ckpt, f"{part}.{key}={given[key]!r} is not supported (plain CLIP towers only)")
    if isinstance((model_cfg.get("vision_cfg") or {}).get("layers"), (list, tuple)):
        _refuse(ckpt, "a ResNet image tower (vision_cfg.layers is a list) is not supported; ViT only")


def _depth(state, prefix):
    """How many residual blocks the weights hold under `prefix` (the config may omit it)."""
    pre = f"{prefix}.resblocks."
    return len({k[len(pre):].split(".")[0] for k in state if k.startswith(pre)})


def _blocks(state, prefix, n, d):
    """open_clip's residual blocks (nn.MultiheadAttention, c_fc/c_proj) as CLIP encoder layers."""
    out = {}
    for i in range(n):
        src, dst = f"{prefix}.resblocks.{i}", f"layers.{i}"
        w, b = state[f"{src}.attn.in_proj_weight"], state[f"{src}.attn.in_proj_bias"]
        for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
            out[f"{dst}.self_attn.{name}.weight"] = w[j * d:(j + 1) * d]
            out[f"{dst}.self_attn.{name}.bias"] = b[j * d:(j + 1) * d]
        for theirs, ours in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"),
                             ("ln_2", "layer_norm2"), ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
            for p in ("weight", "bias"):
                out[f"{dst}.{ours}.{p}"] = state[f"{src}.{theirs}.{p}"]
    return out


def read_open_clip(ckpt, text_defaults, vision_defaults):
    """(config, weights, preprocessing) in the Hugging Face CLIPModel layout."""
    with open(os.path.join(ckpt, "open_clip_config.json")) as f:
        raw = json.load(f)
    model_cfg = raw.get("model_cfg", raw)  # a bare model config (open_clip's model_configs/*.json)
    _check_supported(ckpt, model_cfg)
    if not os.path.isfile(os.path.join(ckpt, "tokenizer.json")):
        _refuse(ckpt, "tokenizer.json missing (open_clip's BPE in the tokenizers format, as "
                      "LAION's checkpoints ship it)")
    state = _state_dict(ckpt)
    if "text.token_embedding.weight" in state:  # CustomTextCLIP keeps the text tower under text.
        state = {k[len("text."):] if k.startswith("text.") else k: v for k, v in state.items()}
    act = "quick_gelu" if model_cfg.get("quick_gelu") else "gelu"
    vc, tc = model_cfg.get("vision_cfg") or {}, model_cfg.get("text_cfg") or {}
    try:
        vw, tw = state["visual.conv1.weight"].shape[0], state["token_embedding.weight"].shape[1]
        patch = state["visual.conv1.weight"].shape[-1]
        grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        vision = {**vision_defaults, "hidden_size": vw, "image_size": grid * patch, "patch_size": patch,
                  "num_hidden_layers": _depth(state, "visual.transformer"),
                  "num_attention_heads": vw // vc.get("head_width", 64),
                  "intermediate_size": state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
                  "hidden_act": act}
        text = {**text_defaults, "hidden_size": tw, "vocab_size": state["token_embedding.weight"].shape[0],
                "max_position_embeddings": state["positional_embedding"].shape[0],
                "num_hidden_layers": _depth(state, "transformer"), "num_attention_heads": tc.get("heads", 8),
                "intermediate_size": state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
                "hidden_act": act}
        cfg = {"projection_dim": state["visual.proj"].shape[1], "text_config": text, "vision_config": vision}
        v, e = "vision_model", "vision_model.embeddings"
        weights = {
            f"{e}.patch_embedding.weight": state["visual.conv1.weight"],
            f"{e}.class_embedding": state["visual.class_embedding"],
            f"{e}.position_embedding.weight": state["visual.positional_embedding"],
            f"{v}.pre_layrnorm.weight": state["visual.ln_pre.weight"],
            f"{v}.pre_layrnorm.bias": state["visual.ln_pre.bias"],
            f"{v}.post_layernorm.weight": state["visual.ln_post.weight"],
            f"{v}.post_layernorm.bias": state["visual.ln_post.bias"],
            "visual_projection.weight": state["visual.proj"].t().contiguous(),
            "text_model.embeddings.token_embedding.weight": state["token_embedding.weight"],
            "text_model.embeddings.position_embedding.weight": state["positional_embedding"],
            "text_model.final_layer_norm.weight": state["ln_final.weight"],
            "text_model.final_layer_norm.bias": state["ln_final.bias"],
            "text_projection.weight": state["text_projection"].t().contiguous(),
        }
        for tower, prefix, n, d in (("vision_model", "visual.transformer", vision["num_hidden_layers"], vw),
                                    ("text_model", "transformer", text["num_hidden_layers"], tw)):
            weights.update({f"{tower}.encoder.{k}": t for k, t in _blocks(state, prefix, n, d).items()})
    except KeyError as e:
        _refuse(ckpt, f"weight {e} missing: not a plain open_clip CLIP state dict")
    pre = raw.get("preprocess_cfg") or {}
    pre = {"image_mean": pre["mean"], "image_std": pre["std"]} if "mean" in pre and "std" in pre else {}
    return cfg, weights, pre
