# Sourced by the scripts: where the cache lives and how cargo is called.
IMAGESEARCH_HOME="${IMAGESEARCH_HOME:-$HOME/.cache/imagesearch}"
export IMAGESEARCH_HOME
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export IMAGESEARCH_DATA="${IMAGESEARCH_DATA:-$ROOT/../shared/data}"
export IMAGESEARCH_MODELS="${IMAGESEARCH_MODELS:-$ROOT/models}"
export IMAGESEARCH_ENCODERS="${IMAGESEARCH_ENCODERS:-$IMAGESEARCH_HOME/encoders}"
BIN_DIR="${CARGO_TARGET_DIR:-$IMAGESEARCH_HOME/target}/debug"
log() { printf '\033[1;32m[imagesearch]\033[0m %s\n' "$*" >&2; }
# The newest scorer version in $IMAGESEARCH_MODELS; one is trained first when there is none.
ensure_version() {
  local latest
  latest=$(ls -1 "$IMAGESEARCH_MODELS/scorer" 2>/dev/null | grep -E '^[0-9]+$' | sort -n | tail -n1 || true)
  if [ -z "$latest" ] || [ ! -f "$IMAGESEARCH_MODELS/scorer/$latest/manifest.json" ]; then
    log "no scorer version yet: training one (cold: ~10 min encoding on 2 cores, then training)"
    "$BIN_DIR/imagesearch-train" train >&2
    latest=$(ls -1 "$IMAGESEARCH_MODELS/scorer" | grep -E '^[0-9]+$' | sort -n | tail -n1)
  else
    log "scorer version $latest present (delete models/scorer or run 'imagesearch-train train' for a new one)"
  fi
  echo "$latest"
}
# Waits until the server at $IMAGESEARCH_ENDPOINT answers health (5 min at most); shows its log
# and exits when it dies first.
wait_healthy() { # pid log
  for _ in $(seq 1 600); do
    "$BIN_DIR/imagesearch" health >/dev/null 2>&1 && return 0
    kill -0 "$1" 2>/dev/null || { cat "$2" >&2; exit 1; }
    sleep 0.5
  done
  echo "the server did not answer health within 5 min; its log: $2" >&2
  exit 1
}
