#!/usr/bin/env bash
# Prints the metrics table of the newest scorer version.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
bash scripts/setup.sh >&2
cargo test --workspace --no-run
"$BIN_DIR/imagesearch-train" eval "$@"
