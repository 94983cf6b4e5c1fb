"""The plain Python peer `make bench` measures imagesearch against.

What a team would write instead of imagesearch: a grpcio server with a thread pool, PIL decode
and bilinear resize, the same exported TorchScript encoders and the same scorer version's files
loaded with torch.jit.load, the same Score/Search semantics (one image view, calibrated score,
top-k over a gallery embedded at start-up), answering on the same proto. Each request runs its
own forward passes on the thread that took it: no cross-request batching, no shedding.

It is a yardstick, not a product: the law is reduced to the region list, a word list for texts
and the version's child detector for photos (the Rust server's lexicon is far stricter), and
there is no gallery writing, rollout, TLS or metrics.

  python bench/peer/server.py --listen 127.0.0.1:50072 --models models --gallery DIR
"""

import argparse
import collections
import hashlib
import io
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
from concurrent import futures

import grpc
import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DISCLAIMER = "This image is unavailable in your country in compliance with local laws"
CHILD_WORDS = re.compile(
    r"\b(child|children|kid|kids|boy|boys|girl|girls|baby|babies|toddler|toddlers|infant|infants|"
    r"youngster|youngsters|teen|teens|teenager|teenagers|son|daughter|schoolboy|schoolgirl)\b"
)


def stubs(out_dir):
    """Generates the Python stubs of proto/ into `out_dir` and imports them."""
    proto = os.path.join(ROOT, "proto")
    files = sorted(
        os.path.join("imagesearch", "v1", f)
        for f in os.listdir(os.path.join(proto, "imagesearch", "v1"))
        if f.endswith(".proto")
    )
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto}", f"--python_out={out_dir}",
         f"--grpc_python_out={out_dir}", *files],
        check=True,
    )
    sys.path.insert(0, out_dir)
    from imagesearch.v1 import (info_pb2, scoring_pb2, search_pb2, service_pb2_grpc)  # noqa: E402

    return info_pb2, scoring_pb2, search_pb2, service_pb2_grpc


class LruCache:
    """A small thread-safe LRU of vectors (the peer's caches-on configuration)."""

    def __init__(self, size):
        self.size, self.items, self.lock = size, collections.OrderedDict(), threading.Lock()

    def get(self, key):
        if self.size == 0:
            return None
        with self.lock:
            v = self.items.get(key)
            if v is not None:
                self.items.move_to_end(key)
            return v

    def put(self, key, value):
        if self.size == 0:
            return
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)


class BadInput(Exception):
    pass


class Refusal(Exception):
    """A request refused with a gRPC status code."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class Models:
    """The encoders and one scorer version, as the Rust server loads them."""

    def __init__(self, models_dir, version, device, cache):
        scorer_root = os.path.join(models_dir, "scorer")
        if version == 0:
            version = max(int(v) for v in os.listdir(scorer_root) if v.isdigit())
        vdir = os.path.join(scorer_root, str(version))
        self.manifest = json.load(open(os.path.join(vdir, "manifest.json")))
        self.version, self.device = version, torch.device(device)
        self.a = self.manifest["calibration"]["a"]
        self.b = self.manifest["calibration"]["b"]
        load = lambda path: torch.jit.load(path, map_location=self.device).eval()  # noqa: E731
        self.scorer = load(os.path.join(vdir, "scorer.pt"))
        self.image_tower = load(os.path.join(vdir, "image_tower.pt"))
        self.text_tower = load(os.path.join(vdir, "text_tower.pt"))
        self.detector = None
        if "child_detector.json" in self.manifest.get("files", {}):
            w = json.load(open(os.path.join(vdir, "child_detector.json")))
            self.detector = {k: torch.tensor(w[k]) for k in ("mean", "scale", "weights")}
            self.detector["bias"] = w["bias"]
            self.detector["threshold"] = self.manifest["child_detector"]["threshold"]
        image_dir = self.encoder_dir(models_dir, self.manifest["image_encoder"]["name"])
        text_dir = self.encoder_dir(models_dir, self.manifest["text_encoder"]["name"])
        im = json.load(open(os.path.join(image_dir, "manifest.json")))
        tm = json.load(open(os.path.join(text_dir, "manifest.json")))
        self.size = (im["input"]["width"], im["input"]["height"])
        self.image_encoder = load(os.path.join(image_dir, im["file"]))
        self.text_encoder = load(os.path.join(text_dir, tm["file"]))
        self.tokenizer = Tokenizer.from_file(os.path.join(text_dir, tm["input"]["tokenizer"]))
        self.tokenizer.enable_padding()  # batch-longest
        self.tokenizer.enable_truncation(tm["input"]["max_length"])
        self.image_cache, self.text_cache = LruCache(cache), LruCache(cache)

    @staticmethod
    def encoder_dir(models_dir, name):
        d = os.path.join(models_dir, "encoders", name)
        if os.path.isdir(d):
            return d
        return os.path.join(os.environ.get("IMAGESEARCH_ENCODERS", ""), name)

    def pixels(self, data, index):
        try:
            img = Image.open(io.BytesIO(data))
            img = img.convert("RGB").resize(self.size, Image.BILINEAR)
        except Exception as e:  # PIL raises many kinds
            raise BadInput(f"pair {index}: image cannot be decoded: {e}"[:200])
        return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)

    def image_vectors(self, photos):
        """Encoder vectors of photo bytes, [n, Di]."""
        keys = [hashlib.sha256(p).digest() for p in photos]
        out = [self.image_cache.get(k) for k in keys]
        todo = [i for i, v in enumerate(out) if v is None]
        if todo:
            batch = torch.stack([self.pixels(photos[i], i) for i in todo]).to(self.device)
            with torch.inference_mode():
                vecs = self.image_encoder(batch).float().cpu()
            for j, i in enumerate(todo):
                out[i] = vecs[j]
                self.image_cache.put(keys[i], vecs[j])
        return torch.stack(out)

    def text_vectors(self, texts):
        """Encoder vectors of texts, [n, Dt]."""
        out = [self.text_cache.get(t) for t in texts]
        todo = [i for i, v in enumerate(out) if v is None]
        if todo:
            enc = self.tokenizer.encode_batch([texts[i] for i in todo])
            ids = torch.tensor([e.ids for e in enc], dtype=torch.int64, device=self.device)
            mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.int64, device=self.device)
            with torch.inference_mode():
                vecs = self.text_encoder(ids, mask).float().cpu()
            for j, i in enumerate(todo):
                out[i] = vecs[j]
                self.text_cache.put(texts[i], vecs[j])
        return torch.stack(out)

    def score(self, photos, texts):
        img, txt = self.image_vectors(photos), self.text_vectors(texts)
        with torch.inference_mode():
            return self.scorer(img.to(self.device), txt.to(self.device)).float().cpu().tolist()

    def child_photo(self, vec):
        if self.detector is None:
            return True  # no detector: fail closed
        d = self.detector
        z = float((((vec - d["mean"]) / d["scale"]) * d["weights"]).sum()) + d["bias"]
        return 1.0 / (1.0 + math.exp(-z)) >= d["threshold"]


class Gallery:
    """The photos of a directory, embedded once at start-up (joint space, unit length)."""

    def __init__(self, models, photo_dir):
        self.ids, vecs, self.restricted = [], [], []
        names = sorted(n for n in os.listdir(photo_dir) if n.lower().endswith((".jpg", ".jpeg", ".png")))
        for start in range(0, len(names), 16):
            chunk = names[start:start + 16]
            photos = [open(os.path.join(photo_dir, n), "rb").read() for n in chunk]
            v = models.image_vectors(photos)
            self.restricted += [models.child_photo(x) for x in v]
            with torch.inference_mode():
                vecs.append(models.image_tower(v.to(models.device)).float())
            self.ids += chunk
        self.joint = torch.cat(vecs) if vecs else torch.zeros(0, models.manifest["embedding_dim"])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", default="127.0.0.1:50072")
    p.add_argument("--models", default=os.path.join(ROOT, "models"))
    p.add_argument("--version", type=int, default=0, help="scorer version (0 = newest)")
    p.add_argument("--gallery", required=True, help="directory of photos to search")
    p.add_argument("--threads", type=int, default=8, help="gRPC thread pool size")
    p.add_argument("--torch-threads", type=int, default=0, help="intra-op threads (0 = torch's default)")
    p.add_argument("--cache", type=int, default=0, help="vectors cached per encoder (0 = off)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--restricted-regions", default="")
    p.add_argument("--max-text-chars", type=int, default=1000)
    p.add_argument("--max-pairs", type=int, default=64)
    p.add_argument("--max-k", type=int, default=100)
    args = p.parse_args()
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    info_pb2, scoring_pb2, search_pb2, service_grpc = stubs(tempfile.mkdtemp(prefix="peer-stubs-"))
    models = Models(args.models, args.version, args.device, args.cache)
    gallery = Gallery(models, args.gallery)
    restricted_regions = sorted({r.strip().upper() for r in args.restricted_regions.split(",") if r.strip()})

    def restricted(routing):
        region = routing.region.strip().upper()
        return not region or region in restricted_regions

    def checked_text(what, text):
        t = " ".join(text.split()).lower()
        if not t:
            raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, f"{what} is empty")
        if len(text) > args.max_text_chars:
            raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, f"{what} is {len(text)} characters, more than {args.max_text_chars}")
        return t

    def score(request):
        n = len(request.pairs)
        if n == 0 or n > args.max_pairs:
            raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, f"{n} pairs: send 1..{args.max_pairs}")
        texts, photos = [], []
        for i, pair in enumerate(request.pairs):
            t = checked_text(f"pair {i}: text", pair.text)
            if restricted(request.routing) and CHILD_WORDS.search(t):
                raise Refusal(grpc.StatusCode.PERMISSION_DENIED, f"pair {i}: the text describes a child")
            if pair.image.WhichOneof("source") != "data":
                raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, f"pair {i}: the peer takes photo bytes only")
            texts.append(t)
            photos.append(pair.image.data)
        try:
            return scoring_pb2.ScoreResponse(scores=models.score(photos, texts), version=models.version)
        except BadInput as e:
            raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, str(e))

    class Service(service_grpc.ImageSearchServicer):
        def Info(self, request, context):
            return info_pb2.InfoResponse(
                build_version="python-peer", device=args.device,
                versions=[info_pb2.ScorerVersion(version=models.version)],
                restricted_regions=restricted_regions, image_views="original",
                text_encoder_device=args.device,
            )

        def Score(self, request, context):
            try:
                return score(request)
            except Refusal as r:
                context.abort(r.code, str(r))

        def ScoreStream(self, request_iterator, context):
            context.send_initial_metadata(())  # the client waits for the headers before sending
            for msg in request_iterator:
                try:
                    yield scoring_pb2.ScoreStreamResponse(request_id=msg.request_id, result=score(msg.request))
                except Refusal as r:
                    yield scoring_pb2.ScoreStreamResponse(
                        request_id=msg.request_id, error=scoring_pb2.StreamError(code=r.code.value[0], message=str(r)))

        def Search(self, request, context):
            if not 1 <= request.k <= args.max_k:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"k must be 1..{args.max_k}")
            try:
                q = checked_text("query", request.query)
            except Refusal as r:
                context.abort(r.code, str(r))
            closed = restricted(request.routing)
            if closed and CHILD_WORDS.search(q):
                return search_pb2.SearchResponse(
                    version=models.version, gallery_size=len(gallery.ids),
                    query_withheld=search_pb2.Withheld(disclaimer=DISCLAIMER))
            with torch.inference_mode():
                joint = models.text_tower(models.text_vectors([q]).to(models.device)).float()
                cos = (joint @ gallery.joint.T)[0]
                k = min(request.k, len(gallery.ids))
                top_cos, top = cos.topk(k) if k else (cos[:0], cos[:0].long())
            hits = []
            for rank, (c, i) in enumerate(zip(top_cos.tolist(), top.tolist()), 1):
                score = 1.0 / (1.0 + math.exp(-(models.a * c + models.b)))
                if request.min_score and score < request.min_score:
                    break
                if closed and gallery.restricted[i]:
                    hits.append(search_pb2.SearchHit(rank=rank, score=score, withheld=search_pb2.Withheld(disclaimer=DISCLAIMER)))
                else:
                    pid = gallery.ids[i]
                    hits.append(search_pb2.SearchHit(rank=rank, score=score, photo=search_pb2.Photo(
                        id=pid, reference=f"gallery:{pid}", restricted=gallery.restricted[i])))
            return search_pb2.SearchResponse(hits=hits, version=models.version, gallery_size=len(gallery.ids))

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=args.threads),
        options=[("grpc.max_receive_message_length", 32 << 20), ("grpc.max_send_message_length", 32 << 20),
                 # The Rust client's HTTP/2 keep-alive pings: allowed, as the Rust server allows them.
                 ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.max_ping_strikes", 0),
                 ("grpc.http2.min_ping_interval_without_data_ms", 1000)],
    )
    service_grpc.add_ImageSearchServicer_to_server(Service(), server)
    server.add_insecure_port(args.listen)
    server.start()
    print(f"python peer: version {models.version}, {len(gallery.ids)} gallery photos, "
          f"{args.threads} threads, torch threads {torch.get_num_threads()}, on {args.listen}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
