#!/usr/bin/env bash
# Offline checks of deploy/prometheus: both scrape configurations and the rules load
# (promtool check config / check rules), the rules' unit tests pass (promtool test rules), and
# the Kubernetes job's relabelling keeps and labels the right pods in a real Prometheus
# (relabel_check.py). promtool and prometheus come with Debian's prometheus package; Python with
# PyYAML from the tools venv (scripts/setup_deploy.sh installs both).
set -euo pipefail
cd "$(dirname "$0")"
PY="${IMAGESEARCH_HOME:-$HOME/.cache/imagesearch}/tools/venv/bin/python"
for tool in promtool prometheus "$PY"; do
    command -v "$tool" >/dev/null || { echo "check.sh: $tool missing (run scripts/setup_deploy.sh)" >&2; exit 2; }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The compose configuration names rule_files at their in-container path: check it with that
# path pointed at this directory's rules.
sed "s#/etc/prometheus/rules/#$PWD/rules/#" prometheus-compose.yml > "$tmp/prometheus-compose.yml"
promtool check config "$tmp/prometheus-compose.yml"
"$PY" relabel_check.py prometheus.yml "$tmp"
promtool check rules rules/*.yml
promtool test rules tests/*.test.yml
echo "deploy/prometheus: ok"
