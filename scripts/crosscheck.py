"""Independent cross-check of `imagesearch loadtest`: the same closed-loop Search load from a
plain Python grpcio client (threads, one channel each), timed with time.perf_counter.
Usage: crosscheck.py ENDPOINT QUERIES_CSV CONCURRENCY DURATION_S REGION K
Prints JSON: requests, throughput, p50/p90/p99 in ms."""
import json
import sys
import threading
import time

import grpc

sys.path.insert(0, sys.argv[7] if len(sys.argv) > 7 else ".")
from imagesearch.v1 import search_pb2, scoring_pb2, service_pb2_grpc  # noqa: E402

endpoint, queries_csv, conc, duration, region, k = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5], int(sys.argv[6])
queries = [line.split("|")[2].strip() for line in open(queries_csv).read().splitlines()[1:]]
latencies, errors = [], {}
lock = threading.Lock()
stop_at = time.perf_counter() + 2.0 + duration  # 2 s warm-up, excluded
measure_from = time.perf_counter() + 2.0


def worker(w):
    stub = service_pb2_grpc.ImageSearchStub(grpc.insecure_channel(endpoint))
    i = w
    while True:
        t0 = time.perf_counter()
        if t0 >= stop_at:
            return
        q = queries[i % len(queries)]
        i += conc
        try:
            stub.Search(search_pb2.SearchRequest(query=q, k=k, routing=scoring_pb2.Routing(region=region, routing_key=f"user-{i % 1000}")), timeout=30)
            ok = True
        except grpc.RpcError as e:
            ok = False
            code = e.code().name
        t1 = time.perf_counter()
        if t0 >= measure_from:
            with lock:
                if ok:
                    latencies.append((t1 - t0) * 1000)
                else:
                    errors[code] = errors.get(code, 0) + 1


threads = [threading.Thread(target=worker, args=(w,)) for w in range(conc)]
for t in threads:
    t.start()
for t in threads:
    t.join()
latencies.sort()
q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else 0.0
print(json.dumps({"client": "python-grpcio", "concurrency": conc, "requests": len(latencies), "errors": errors,
                  "throughput_rps": len(latencies) / duration, "p50_ms": q(0.50), "p90_ms": q(0.90), "p99_ms": q(0.99)}))
