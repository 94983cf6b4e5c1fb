#!/usr/bin/env bash
# Prints the metrics table of the newest scorer version.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
bash scripts/setup.sh >/dev/null 2>&1 || bash scripts/setup.sh
cargo build -p imagesearch-trainer
"$BIN_DIR/imagesearch-train" eval "$@"
