"""A tiny, randomly initialised CLIP checkpoint in the Hugging Face layout, and transformers' own
outputs on it: what `tests/tests/clip_encoders.rs` exports and checks the exported towers against.

  tiny_clip.py make DIR        config.json, model.safetensors, tokenizer.json, preprocessor_config.json
  tiny_clip.py reference DIR   prints JSON: texts and their token ids, text vectors, a pixel batch in
                               [0, 1] and its image vectors, all from transformers' CLIPModel

No pretrained weights can be had here; the model is built from its config with a fixed seed, and
the tokenizer is a small BPE trained on a fixed word list with CLIP's start/end template.
"""

import json
import os
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


def make(out):
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
    model = CLIPModel(cfg).eval()
    # Random init leaves LayerNorms at 1/0 and the class token near 0: perturb every parameter so
    # a wrong mapping of any of them shows in the outputs.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(out, safe_serialization=True)
    with open(os.path.join(out, "preprocessor_config.json"), "w") as f:
        json.dump({"image_mean": MEAN, "image_std": STD, "size": {"shortest_edge": SIZE}}, f)


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
    {"make": make, "reference": reference}[sys.argv[1]](sys.argv[2])
