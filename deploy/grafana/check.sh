#!/usr/bin/env bash
# Offline checks of deploy/grafana/imagesearch.json (no Grafana server can run here):
# 1. TypeScript: the dashboard, as an object literal, `satisfies` Dashboard from @grafana/schema (enums as their values)
#    under tsc --strict (unknown fields, wrong types and misspelt panel kinds fail);
# 2. layout and queries (check_layout.py): unique panel ids, panels inside the 24-column grid
#    and not overlapping, every target with a Prometheus expression and a refId, no variable
#    but $job, $__rate_interval and ${datasource}.
# Whether every query returns data from a real server: tests/tests/observability.rs.
# Tools from ${IMAGESEARCH_HOME:-$HOME/.cache/imagesearch}/tools (scripts/setup_deploy.sh).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLS="${IMAGESEARCH_HOME:-$HOME/.cache/imagesearch}/tools"
NM="$TOOLS/npm/node_modules"
PY="$TOOLS/venv/bin/python"
for tool in "$NM/.bin/tsc" "$NM/@grafana/schema/package.json" "$PY"; do
    [ -e "$tool" ] || { echo "check.sh: $tool missing (run scripts/setup_deploy.sh)" >&2; exit 2; }
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
ln -s "$NM" "$tmp/node_modules"
{
    echo "import type { Dashboard } from '@grafana/schema';"
    # Dashboard JSON spells the schema's string enums (ThresholdsMode, MappingType, ...) as
    # their values: check against the schema with each enum replaced by the union of its values.
    echo 'type Json<T> = T extends string ? `${T}` : T extends number | boolean | null | undefined ? T'
    echo '  : T extends Array<infer U> ? Array<Json<U>> : T extends object ? { [K in keyof T]: Json<T[K]> } : T;'
    # One expression: `satisfies` must follow the literal on its line (no automatic semicolon).
    printf 'export const dashboard = %s satisfies Json<Dashboard>;\n' "$(cat "$HERE/imagesearch.json")"
} > "$tmp/dashboard.ts"
cat > "$tmp/tsconfig.json" <<'JSON'
{
  "compilerOptions": {
    "strict": true, "noEmit": true, "target": "es2022", "module": "esnext",
    "moduleResolution": "bundler", "skipLibCheck": true, "types": []
  },
  "files": ["dashboard.ts"]
}
JSON
if ! (cd "$tmp" && "$NM/.bin/tsc" -p tsconfig.json > "$tmp/tsc.log" 2>&1); then
    echo "FAIL  imagesearch.json does not satisfy @grafana/schema Dashboard:" >&2
    sed -n '1,40s/^/      /p' "$tmp/tsc.log" >&2
    exit 1
fi
echo "ok    imagesearch.json satisfies Dashboard of @grafana/schema $(sed -n 's/.*"version": "\(.*\)".*/\1/p' "$NM/@grafana/schema/package.json" | head -1) (tsc --strict)"
"$PY" "$HERE/check_layout.py" "$HERE/imagesearch.json"
