"""Writes `make bench`'s report from the points it measured: report.md, report.json, compare.svg.

  python bench/report.py var/bench
"""

import json
import pathlib
import statistics
import sys
from html import escape


def load_points(out):
    rows = []
    for d in sorted((out / "points").glob("*")):
        proc = json.loads((d / "proc.json").read_text())
        sweep = json.loads((d / "sweep.json").read_text())[0]["report"]
        ok_total = sweep["throughput_rps"] * proc["wall_s"]  # warm-up included, as the CPU time is
        rows.append({**proc, "rps": sweep["throughput_rps"], "p50": sweep["latency"]["p50_ms"],
                     "p99": sweep["latency"]["p99_ms"], "errors": sum(sweep["errors"].values()),
                     "cpu_ms_per_req": 1000 * proc["cpu_s"] / ok_total if ok_total else None})
    return rows


def summary(rows):
    """One entry per (cache, op, concurrency, server): medians over the repeats."""
    groups = {}
    for r in rows:
        groups.setdefault((r["cache"], r["op"], r["concurrency"], r["server"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        med = lambda k: statistics.median(x[k] for x in rs if x[k] is not None) if any(x[k] is not None for x in rs) else None  # noqa: E731
        out[key] = {"rps": med("rps"), "rps_each": [x["rps"] for x in rs], "p50": med("p50"), "p99": med("p99"),
                    "cpu_ms_per_req": med("cpu_ms_per_req"), "rss_mb": max(x["rss_kb"] for x in rs) / 1024,
                    "errors": sum(x["errors"] for x in rs)}
    return out


def svg(summ, caches, ops, concurrencies):
    """Grouped bars: req/s of Rust and the peer per (op, concurrency), one panel per cache setting."""
    w, h, pad = 300 * max(1, len(ops)), 240, 40
    panels = []
    for pi, cache in enumerate(caches):
        y0 = pi * (h + 30)
        top = max([v["rps"] or 0 for k, v in summ.items() if k[0] == cache] + [1])
        bars, labels = [], []
        groups = [(op, c) for op in ops for c in concurrencies]
        gw = (w - 2 * pad) / max(1, len(groups))
        for gi, (op, c) in enumerate(groups):
            for si, (server, colour) in enumerate((("rust", "#1f77b4"), ("peer", "#ff7f0e"))):
                v = summ.get((cache, op, c, server))
                if not v or v["rps"] is None:
                    continue
                bh = (h - 2 * pad) * v["rps"] / top
                x = pad + gi * gw + 4 + si * (gw - 8) / 2
                bars.append(f'<rect x="{x:.1f}" y="{y0 + h - pad - bh:.1f}" width="{(gw - 8) / 2 - 2:.1f}" height="{bh:.1f}" fill="{colour}"/>'
                            f'<text x="{x + 2:.1f}" y="{y0 + h - pad - bh - 3:.1f}" font-size="9">{v["rps"]:.0f}</text>')
            labels.append(f'<text x="{pad + gi * gw + gw / 2:.1f}" y="{y0 + h - pad + 14}" font-size="10" text-anchor="middle">{escape(op)} c={c}</text>')
        panels.append(f'<text x="{pad}" y="{y0 + 16}" font-size="13">req/s, caches {escape(cache)}: '
                      f'<tspan fill="#1f77b4">imagesearch (Rust)</tspan> vs <tspan fill="#ff7f0e">Python peer</tspan></text>'
                      f'<line x1="{pad}" y1="{y0 + h - pad}" x2="{w - pad}" y2="{y0 + h - pad}" stroke="#333"/>'
                      + "".join(bars) + "".join(labels))
    total_h = len(caches) * (h + 30)
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{total_h}" font-family="sans-serif">' + "".join(panels) + "</svg>\n"


def main():
    out = pathlib.Path(sys.argv[1])
    rows = load_points(out)
    summ = summary(rows)
    caches = sorted({k[0] for k in summ}, key=lambda c: c != "off")
    ops = sorted({k[1] for k in summ}, key=lambda o: o != "score")
    concurrencies = sorted({k[2] for k in summ})
    models = json.loads((out / "models.json").read_text())
    lines = [f"# imagesearch against a plain Python server ({models['device']}, scorer version {models['version']}, "
             f"gallery {models['gallery_photos']} photos)", "",
             "Same work on both: one image view, the same TorchScript encoders and scorer files, the same "
             "load generator (closed loop), points alternating between the servers; medians over repeats. "
             "`CPU ms/req` is the server's CPU time per answered request.", ""]
    for cache in caches:
        lines += [f"## Caches {cache}", "",
                  "| op | concurrency | Rust req/s | peer req/s | **Rust ÷ peer** | Rust p50 / p99 ms | peer p50 / p99 ms | Rust CPU ms/req | peer CPU ms/req | Rust / peer RSS MB | errors R/P |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for op in ops:
            for c in concurrencies:
                r, p = summ.get((cache, op, c, "rust")), summ.get((cache, op, c, "peer"))
                if not r or not p:
                    continue
                ratio = r["rps"] / p["rps"] if p["rps"] else float("inf")
                each = ", ".join(f"{a / b:.2f}" for a, b in zip(r["rps_each"], p["rps_each"]) if b)
                cpu = lambda v: f"{v['cpu_ms_per_req']:.1f}" if v["cpu_ms_per_req"] else "–"  # noqa: E731
                lines.append(f"| {op} | {c} | {r['rps']:.1f} | {p['rps']:.1f} | **{ratio:.2f}** ({each}) | "
                             f"{r['p50']:.1f} / {r['p99']:.1f} | {p['p50']:.1f} / {p['p99']:.1f} | {cpu(r)} | {cpu(p)} | "
                             f"{r['rss_mb']:.0f} / {p['rss_mb']:.0f} | {r['errors']} / {p['errors']} |")
        lines.append("")
    ceil = models
    lines += ["Ceiling (the modules in a loop, one thread, no server): "
              f"Score {ceil['score_batch1']['pairs_per_s']:.1f} pairs/s at batch 1, {ceil['score_batch8']['pairs_per_s']:.1f} at batch 8; "
              f"Search {ceil['search_batch1']['searches_per_s']:.1f}/s at batch 1, {ceil['search_batch8']['searches_per_s']:.1f} at batch 8.", ""]
    report = {"points": rows, "summary": [dict(zip(("cache", "op", "concurrency", "server"), k), **v) for k, v in summ.items()],
              "models": models}
    if (out / "overload.json").exists():
        o = json.loads((out / "overload.json").read_text())
        total = o["ok"] + sum(o["errors"].values())
        shed_codes = ("RESOURCE_EXHAUSTED", "ResourceExhausted")
        shed = sum(n for code, n in o["errors"].items() if code in shed_codes)
        rec = {a: json.loads((out / f"recovery-{a}.json").read_text()) for a in (1, 5) if (out / f"recovery-{a}.json").exists()}
        el, ol = o["error_latency"], o["latency"]
        lines += ["## Overload (open loop, Score, caches off)", "",
                  f"Offered {o['mode'].get('rate', 0):.0f}/s for {o['measured_s']:.0f} s: {o['ok']} answered ({o['throughput_rps']:.1f}/s), "
                  f"{shed} of {total} ({100 * shed / max(1, total):.0f}%) refused with RESOURCE_EXHAUSTED, other errors "
                  f"{ {k: v for k, v in o['errors'].items() if k not in shed_codes} }.", "",
                  "| | p50 ms | p99 ms | max ms |", "|---|---:|---:|---:|",
                  f"| refusals | {el['p50_ms']:.2f} | {el['p99_ms']:.2f} | {el['max_ms']:.2f} |",
                  f"| answered | {ol['p50_ms']:.1f} | {ol['p99_ms']:.1f} | {ol['max_ms']:.1f} |"]
        for a, r in rec.items():
            lines.append(f"| a single Score {a} s after the load | {r['latency']['p50_ms']:.1f} | {r['latency']['p99_ms']:.1f} | {r['latency']['max_ms']:.1f} |")
        lines.append("")
        report["overload"] = {"run": o, "recovery": rec}
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "compare.svg").write_text(svg(summ, caches, ops, concurrencies))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
