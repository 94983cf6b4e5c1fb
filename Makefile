# Thin targets over scripts/. Everything heavy is cached under $IMAGESEARCH_HOME
# (default ~/.cache/imagesearch): the Python venv, the exported encoders, cargo's target dir
# and the vector cache.
.PHONY: setup demo test eval bench soak scale build fuzz faults image compose deploy-check

setup:
	bash scripts/setup.sh

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh

eval:
	bash scripts/eval.sh

bench:
	bash scripts/bench.sh

# Mixed traffic at ~80% of capacity for SOAK_DURATION_S (default 1800): RSS, p99, throughput over time.
soak:
	bash scripts/soak.sh

scale:
	bash scripts/scale.sh

build: setup
	cargo test --workspace --no-run

fuzz:
	bash scripts/fuzz.sh

faults:
	IMAGESEARCH_FAULT_ROUNDS=$${IMAGESEARCH_FAULT_ROUNDS:-1000} cargo test -p imagesearch-server --test fault_loop -- --nocapture

# The server image from nothing (debootstrap base, docker import, deploy/container/Dockerfile);
# VARIANT=cuda for the CUDA one.
image:
	bash scripts/image.sh --variant $${VARIANT:-cpu}

# The one-machine deployment (server, PostgreSQL + pgvector, Prometheus) built and run here.
compose:
	bash scripts/compose.sh

# deploy/ validated offline: chart, manifests, Prometheus rules, Grafana dashboard, compose file.
deploy-check:
	bash scripts/deploy_check.sh
