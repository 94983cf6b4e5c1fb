"""A tiny, randomly initialised CLIP checkpoint in the Hugging Face layout, and transformers' own
outputs on it: what `tests/tests/clip_encoders.rs` exports and checks the exported towers against.

  tiny_clip.py make DIR [ACT]  config.json, model.safetensors, tokenizer.json, preprocessor_config.json
                               (ACT: one activation for both towers, as open_clip has)
  tiny_clip.py open-clip DIR OUT
                               the same model in open_clip's layout: open_clip_config.json,
                               open_clip_pytorch_model.bin, tokenizer.json
  tiny_clip.py reference DIR   prints JSON: texts and their token ids, text vectors, a pixel batch in
                               [0, 1] and its image vectors, all from transformers' CLIPModel

No pretrained weights can be had here; the model is built from its config with a fixed seed, and
the tokenizer is a small BPE trained on a fixed word list with CLIP's start/end template.
"""

import json
import os
import shutil
import sys

import torch

WORDS = ("a dog runs on the grass . two people ride bikes down a street . a man in a red shirt "
         "climbs a rock wall . children play in the water near the beach . a woman walks her "
         "black dog in the snow . a group of people stand outside a building at night").split()
MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
SIZE = 32


def tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<|endoftext|>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=160, special_tokens=["<|startoftext|>", "<|endoftext|>"])
    tok.train_from_iterator([" ".join(WORDS)] * 4, trainer)
    bos, eos = tok.token_to_id("<|startoftext|>"), tok.token_to_id("<|endoftext|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", bos), ("<|endoftext|>", eos)])
    return tok


def make(out, act=None):
    from transformers import CLIPConfig, CLIPModel

    os.makedirs(out, exist_ok=True)
    tok = tokenizer()
    tok.save(os.path.join(out, "tokenizer.json"))
    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=40,
                         bos_token_id=tok.token_to_id("<|startoftext|>"),
                         eos_token_id=tok.token_to_id("<|endoftext|>"), pad_token_id=0),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, image_size=SIZE, patch_size=8, hidden_act="gelu"),
        projection_dim=24)
    if act:
        cfg.text_config.hidden_act = cfg.vision_config.hidden_act = act
    model = CLIPModel(cfg).eval()
    # Random init leaves LayerNorms at 1/0 and the class token near 0: perturb every parameter so
    # a wrong mapping of any of them shows in the outputs.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(out, safe_serialization=True)
    with open(os.path.join(out, "preprocessor_config.json"), "w") as f:
        json.dump({"image_mean": MEAN, "image_std": STD, "size": {"shortest_edge": SIZE}}, f)


def open_clip(ckpt, out):
    """Writes the Hugging Face checkpoint's weights under open_clip's names and shapes
    (open_clip's CLIP: `visual.*` ViT, the text transformer at the top level, fused q/k/v as
    nn.MultiheadAttention's in_proj, projections as matrices applied on the right)."""
    from safetensors.torch import load_file

    os.makedirs(out, exist_ok=True)
    with open(os.path.join(ckpt, "config.json")) as f:
        cfg = json.load(f)
    w = load_file(os.path.join(ckpt, "model.safetensors"))
    tc, vc = cfg["text_config"], cfg["vision_config"]
    assert tc["hidden_act"] == vc["hidden_act"] in ("gelu", "quick_gelu"), "open_clip has one activation"
    state = {"logit_scale": w["logit_scale"]}

    def blocks(theirs, ours, n):
        for i in range(n):
            src, dst = f"{theirs}.encoder.layers.{i}", f"{ours}.resblocks.{i}"
            for p in ("weight", "bias"):
                state[f"{dst}.attn.in_proj_{p}"] = torch.cat(
                    [w[f"{src}.self_attn.{x}_proj.{p}"] for x in "qkv"], 0)
                for a, b in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"),
                             ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
                    state[f"{dst}.{b}.{p}"] = w[f"{src}.{a}.{p}"]

    e = "vision_model.embeddings"
    state.update({
        "visual.conv1.weight": w[f"{e}.patch_embedding.weight"],
        "visual.class_embedding": w[f"{e}.class_embedding"],
        "visual.positional_embedding": w[f"{e}.position_embedding.weight"],
        "visual.ln_pre.weight": w["vision_model.pre_layrnorm.weight"],
        "visual.ln_pre.bias": w["vision_model.pre_layrnorm.bias"],
        "visual.ln_post.weight": w["vision_model.post_layernorm.weight"],
        "visual.ln_post.bias": w["vision_model.post_layernorm.bias"],
        "visual.proj": w["visual_projection.weight"].t().contiguous(),
        "token_embedding.weight": w["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": w["text_model.embeddings.position_embedding.weight"],
        "ln_final.weight": w["text_model.final_layer_norm.weight"],
        "ln_final.bias": w["text_model.final_layer_norm.bias"],
        "text_projection": w["text_projection.weight"].t().contiguous(),
    })
    blocks("vision_model", "visual.transformer", vc["num_hidden_layers"])
    blocks("text_model", "transformer", tc["num_hidden_layers"])
    torch.save(state, os.path.join(out, "open_clip_pytorch_model.bin"))
    model_cfg = {"embed_dim": cfg["projection_dim"], "quick_gelu": tc["hidden_act"] == "quick_gelu",
                 "vision_cfg": {"image_size": vc["image_size"], "patch_size": vc["patch_size"],
                                "width": vc["hidden_size"], "layers": vc["num_hidden_layers"],
                                "head_width": vc["hidden_size"] // vc["num_attention_heads"],
                                "mlp_ratio": vc["intermediate_size"] / vc["hidden_size"]},
                 "text_cfg": {"context_length": tc["max_position_embeddings"], "vocab_size": tc["vocab_size"],
                              "width": tc["hidden_size"], "heads": tc["num_attention_heads"],
                              "layers": tc["num_hidden_layers"],
                              "mlp_ratio": tc["intermediate_size"] / tc["hidden_size"]}}
    with open(os.path.join(out, "open_clip_config.json"), "w") as f:
        json.dump({"model_cfg": model_cfg, "preprocess_cfg": {"mean": MEAN, "std": STD}}, f)
    shutil.copyfile(os.path.join(ckpt, "tokenizer.json"), os.path.join(out, "tokenizer.json"))


def reference(ckpt):
    from tokenizers import Tokenizer
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(ckpt, attn_implementation="eager").eval()
    tok = Tokenizer.from_file(os.path.join(ckpt, "tokenizer.json"))
    texts = ["a dog runs on the grass", "two people ride bikes", "a woman walks her black dog in the snow at night"]
    ids = [tok.encode(t).ids for t in texts]
    torch.manual_seed(1)
    pixels = torch.rand(2, 3, SIZE, SIZE)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        text_vectors = []
        for row in ids:  # one at a time: no padding on transformers' side
            v = model.get_text_features(input_ids=torch.tensor([row]))
            text_vectors.append(torch.nn.functional.normalize(v, dim=1)[0].tolist())
        image = model.get_image_features(pixel_values=(pixels - mean) / std)
        image = torch.nn.functional.normalize(image, dim=1)
    json.dump({"texts": texts, "ids": ids, "text_vectors": text_vectors,
               "pixels": pixels.flatten(1).tolist(), "image_vectors": image.tolist()}, sys.stdout)


if __name__ == "__main__":
    {"make": make, "open-clip": open_clip, "reference": reference}[sys.argv[1]](*sys.argv[2:])
