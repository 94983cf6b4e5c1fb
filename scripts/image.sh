#!/usr/bin/env bash
# `make image`: the server image built from nothing. A Debian bookworm base from debootstrap
# (--variant=minbase) imported into Docker once, the workspace's binaries, libtorch's libraries
# from the venv's pinned torch wheel, then deploy/container/Dockerfile.
#   bash scripts/image.sh [--variant cpu|cuda] [--no-build]
# Tags imagesearch:<version>-<variant> and imagesearch:<variant>; prints the image's size.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
VARIANT="${IMAGESEARCH_IMAGE_VARIANT:-cpu}"
BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --variant) VARIANT="$2"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    *) echo "image.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$VARIANT" in cpu|cuda) ;; *) echo "image.sh: --variant is cpu or cuda" >&2; exit 2 ;; esac

bash scripts/setup.sh
bash scripts/setup_deploy.sh
DOCKER=/usr/bin/docker
export DOCKER_BUILDKIT=1

# 1. The base: Debian bookworm minbase with CA certificates (for https:// S3 endpoints).
BASE_TAG="imagesearch-base:bookworm"
bash scripts/base_image.sh bookworm

# 2. The binaries (the workspace's one dev-profile build, opt-level 2: the same artifacts the
# tests use, so nothing compiles twice).
if [ "$BUILD" = 1 ]; then
  log "building the binaries"
  cargo build --workspace --tests --bins 2>&1 | grep -vE '^\s+(Compiling|Fresh)' >&2 || true
fi
for b in imagesearch-server imagesearch; do
  [ -x "$BIN_DIR/$b" ] || { echo "image.sh: $BIN_DIR/$b is missing (cargo build failed?)" >&2; exit 1; }
done

# 3. The build context: hard links where the file system allows (no copies of 0.5–3 GB).
SITE="$(ls -d "$IMAGESEARCH_HOME"/venv/lib/python3*/site-packages)"
CTX="$IMAGESEARCH_HOME/build/image-$VARIANT"
rm -rf "$CTX" && mkdir -p "$CTX/bin" "$CTX/torch/lib" "$CTX/nvidia"
put() { cp -al "$1" "$2" 2>/dev/null || cp -a "$1" "$2"; }
for b in imagesearch-server imagesearch; do put "$BIN_DIR/$b" "$CTX/bin/$b"; done
TORCH_LIBS=(libc10.so libtorch.so libtorch_cpu.so libgomp.so.1 libshm.so libtorch_global_deps.so)
if [ "$VARIANT" = cuda ]; then
  TORCH_LIBS+=(libc10_cuda.so libtorch_cuda.so libtorch_cuda_linalg.so libtorch_nvshmem.so libcaffe2_nvrtc.so)
  for d in "$SITE"/nvidia/*/; do put "${d%/}" "$CTX/nvidia/"; done
  # cuSOLVER (libtorch_cuda_linalg.so's, for linear algebra on the GPU) is left out of the
  # venv's lean install; the CUDA image gets the pinned wheel, fetched once.
  CUSOLVER="$IMAGESEARCH_HOME/build/nvidia-cusolver-12.0.4.66"
  if [ ! -f "$CUSOLVER/.done" ]; then
    log "fetching nvidia-cusolver 12.0.4.66 for the CUDA image (once)"
    rm -rf "$CUSOLVER"
    "$IMAGESEARCH_HOME/venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
      --target "$CUSOLVER" nvidia-cusolver==12.0.4.66
    touch "$CUSOLVER/.done"
  fi
  for l in "$CUSOLVER"/nvidia/cu13/lib/*.so*; do put "$l" "$CTX/nvidia/cu13/lib/"; done
else
  mkdir -p "$CTX/nvidia/cu13/lib"
  for l in libcudart.so.13 libcupti.so.13; do put "$SITE/nvidia/cu13/lib/$l" "$CTX/nvidia/cu13/lib/$l"; done
fi
for l in "${TORCH_LIBS[@]}"; do put "$SITE/torch/lib/$l" "$CTX/torch/lib/$l"; done
cp deploy/container/Dockerfile "$CTX/Dockerfile"

# 4. The image.
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
TAG="imagesearch:$VERSION-$VARIANT"
log "docker build $TAG (context $(du -sh --apparent-size "$CTX" | cut -f1))"
start=$SECONDS
"$DOCKER" build --quiet --build-arg BASE="$BASE_TAG" --build-arg VARIANT="$VARIANT" \
  --build-arg VERSION="$VERSION" --build-arg GIT_COMMIT="$COMMIT" -t "$TAG" -t "imagesearch:$VARIANT" "$CTX" >/dev/null
rm -rf "$CTX"
SIZE="$("$DOCKER" image inspect --format '{{.Size}}' "$TAG")"
log "built $TAG in $((SECONDS - start)) s: $((SIZE / 1000000)) MB ($(awk -v s="$SIZE" 'BEGIN{printf "%.0f MiB", s/1048576}'))"
echo "$TAG"
