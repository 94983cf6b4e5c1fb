#!/usr/bin/env bash
# The whole test suite: set-up when missing, then every crate's tests (the one optimised
# dev-profile build the demo uses, so nothing compiles twice).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
bash scripts/setup.sh
# deploy/: its tools, the offline checks, and the server image the container test runs.
bash scripts/deploy_check.sh
bash scripts/image.sh
export IMAGESEARCH_IMAGE=imagesearch:cpu
log "running the test suite"
cargo test --workspace --no-fail-fast 2>&1
log "fuzz smoke run (each target briefly; make fuzz runs them longer)"
bash scripts/fuzz.sh --smoke
