# Sourced by the scripts: where the cache lives and how cargo is called.
IMAGESEARCH_HOME="${IMAGESEARCH_HOME:-$HOME/.cache/imagesearch}"
export IMAGESEARCH_HOME
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export IMAGESEARCH_DATA="${IMAGESEARCH_DATA:-$ROOT/../shared/data}"
export IMAGESEARCH_MODELS="${IMAGESEARCH_MODELS:-$ROOT/models}"
export IMAGESEARCH_ENCODERS="${IMAGESEARCH_ENCODERS:-$IMAGESEARCH_HOME/encoders}"
BIN_DIR="${CARGO_TARGET_DIR:-$IMAGESEARCH_HOME/target}/debug"
log() { printf '\033[1;32m[imagesearch]\033[0m %s\n' "$*" >&2; }
