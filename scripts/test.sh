#!/usr/bin/env bash
# The whole test suite: set-up when missing, then every crate's tests (the one optimised
# dev-profile build the demo uses, so nothing compiles twice).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
bash scripts/setup.sh
log "running the test suite"
cargo test --workspace 2>&1
log "fuzz smoke run (each target briefly; make fuzz runs them longer)"
bash scripts/fuzz.sh --smoke
