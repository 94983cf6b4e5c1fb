"""Runs the Kubernetes job of prometheus.yml through a real Prometheus.

Debian's Prometheus is built without Kubernetes service discovery, so this replaces the job's
kubernetes_sd_configs with static targets that carry the __meta_kubernetes_* labels pod
discovery would give, starts Prometheus on loopback with the job's relabel_configs unchanged,
and checks which targets it keeps and how it labels them (/api/v1/targets).

usage: relabel_check.py prometheus.yml WORKDIR
"""
import json
import socket
import subprocess
import sys
import time
import urllib.request

import yaml

POD = {
    "__meta_kubernetes_namespace": "search",
    "__meta_kubernetes_pod_name": "imagesearch-7d9f-abcde",
    "__meta_kubernetes_pod_node_name": "node-1",
    "__meta_kubernetes_pod_phase": "Running",
    "__meta_kubernetes_pod_label_app_kubernetes_io_name": "imagesearch",
    "__meta_kubernetes_pod_label_app_kubernetes_io_instance": "prod",
    "__meta_kubernetes_pod_annotation_prometheus_io_scrape": "true",
    "__meta_kubernetes_pod_annotation_prometheus_io_port": "9091",
    "__meta_kubernetes_pod_annotation_prometheus_io_path": "/metrics",
}
# (container address, labels changed from POD, expected scrape URL or None when dropped)
CASES = [
    ("10.0.0.5:50051", {}, "http://10.0.0.5:9091/metrics"),
    ("10.0.0.6", {}, "http://10.0.0.6:9091/metrics"),  # a pod port without a container port
    ("10.0.0.7:50051", {"__meta_kubernetes_pod_annotation_prometheus_io_scrape": "false"}, None),
    ("10.0.0.8:50051", {"__meta_kubernetes_pod_phase": "Pending"}, None),
    ("10.0.0.9:50051", {"__meta_kubernetes_pod_label_app_kubernetes_io_name": "postgres"}, None),
]


def main(config_path, work):
    config = yaml.safe_load(open(config_path))
    job = next(j for j in config["scrape_configs"] if "kubernetes_sd_configs" in j)
    del job["kubernetes_sd_configs"]
    job["static_configs"] = [{"targets": [addr], "labels": {**POD, **extra}} for addr, extra, _ in CASES]
    config.pop("rule_files", None)
    path = f"{work}/relabel.yml"
    yaml.safe_dump(config, open(path, "w"))
    subprocess.run(["promtool", "check", "config", path], check=True, stdout=subprocess.DEVNULL)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prom = subprocess.Popen(
        ["prometheus", f"--config.file={path}", f"--storage.tsdb.path={work}/data", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=open(f"{work}/prometheus.log", "w"))
    try:
        deadline = time.time() + 30
        while True:
            try:
                data = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/targets?state=any", timeout=2))["data"]
                if len(data["activeTargets"]) + len(data["droppedTargets"]) == len(CASES):
                    break
            except OSError:
                pass
            if time.time() > deadline:
                sys.exit(f"Prometheus did not discover the targets; log:\n{open(work + '/prometheus.log').read()[-2000:]}")
            time.sleep(0.2)
    finally:
        prom.kill()
        prom.wait()

    kept = {t["scrapeUrl"]: t["labels"] for t in data["activeTargets"]}
    expected = {url for _, _, url in CASES if url}
    errors = []
    if set(kept) != expected:
        errors.append(f"kept {sorted(kept)}, expected {sorted(expected)}")
    for url, labels in kept.items():
        want = {"job": job["job_name"], "namespace": "search", "pod": "imagesearch-7d9f-abcde", "node": "node-1", "release": "prod"}
        wrong = {k: labels.get(k) for k, v in want.items() if labels.get(k) != v}
        if wrong:
            errors.append(f"{url}: labels {wrong}, expected {want}")
        if any(k.startswith("__") for k in labels):
            errors.append(f"{url}: internal labels kept: {labels}")
    if errors:
        sys.exit("prometheus.yml relabelling:\n  " + "\n  ".join(errors))
    print(f"prometheus.yml: pod discovery relabelling keeps {len(kept)} of {len(CASES)} pods as expected")


if __name__ == "__main__":
    main(*sys.argv[1:])
