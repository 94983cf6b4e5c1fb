#!/usr/bin/env bash
# The main job on the default data: set-up when missing, train a scorer version when none
# exists, evaluate it and show where its HTML report is.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
bash scripts/setup.sh
log "building"
# The same build as `make test` (same packages and features), so nothing compiles twice.
cargo test --workspace --no-run
latest=$(ls -1 "$IMAGESEARCH_MODELS/scorer" 2>/dev/null | grep -E '^[0-9]+$' | sort -n | tail -n1 || true)
if [ -z "$latest" ] || [ ! -f "$IMAGESEARCH_MODELS/scorer/$latest/manifest.json" ]; then
  log "no scorer version yet: training one (cold: ~10 min encoding on 2 cores, then training)"
  "$BIN_DIR/imagesearch-train" train
  latest=$(ls -1 "$IMAGESEARCH_MODELS/scorer" | grep -E '^[0-9]+$' | sort -n | tail -n1)
else
  log "scorer version $latest present (delete models/scorer or run 'imagesearch-train train' for a new one)"
fi
"$BIN_DIR/imagesearch-train" eval --version "$latest"
log "report: $IMAGESEARCH_MODELS/scorer/$latest/report.html"
