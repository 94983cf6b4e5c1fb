#!/usr/bin/env bash
# A base image built from nothing: Debian <suite> from debootstrap --variant=minbase (with
# ca-certificates, for https endpoints) imported into Docker as imagesearch-base:<suite>, once.
#   bash scripts/base_image.sh <suite>        e.g. bookworm, trixie
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
SUITE="${1:?usage: base_image.sh <debian suite>}"
DOCKER=/usr/bin/docker
TAG="imagesearch-base:$SUITE"
"$DOCKER" image inspect "$TAG" >/dev/null 2>&1 && exit 0
mkdir -p "$IMAGESEARCH_HOME/build"
ROOTFS="$IMAGESEARCH_HOME/build/rootfs-$SUITE"
LOG="$IMAGESEARCH_HOME/build/debootstrap-$SUITE.log"
log "debootstrap --variant=minbase $SUITE into $ROOTFS"
rm -rf "$ROOTFS"
start=$SECONDS
debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$ROOTFS" http://deb.debian.org/debian >"$LOG" 2>&1 \
  || { tail -20 "$LOG" >&2; echo "base_image.sh: debootstrap $SUITE failed (log: $LOG)" >&2; exit 1; }
# Nothing of the build host's apt state or caches goes into the image.
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
tar -C "$ROOTFS" -c . | "$DOCKER" import --change 'CMD ["/bin/bash"]' - "$TAG" >/dev/null
rm -rf "$ROOTFS"
log "base image $TAG imported ($((SECONDS - start)) s)"
