"""Writes `make soak`'s report (report.md, soak.svg) from var/soak/windows.jsonl; exits 1 when
RSS after warm-up moves past ±10% of its median, or descriptors or threads grow.

  python bench/soak_report.py var/soak RATE
"""

import json
import pathlib
import statistics
import sys


def line_chart(x0, y0, w, h, xs, ys, title, colour):
    top = max(ys + [1e-9]) * 1.1
    xmax = max(xs + [1])
    pts = " ".join(f"{x0 + w * x / xmax:.1f},{y0 + h - h * y / top:.1f}" for x, y in zip(xs, ys))
    return (f'<text x="{x0}" y="{y0 - 6}" font-size="12">{title} (max {max(ys + [0]):.1f})</text>'
            f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#ccc"/>'
            f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.5"/>'
            f'<text x="{x0 + w}" y="{y0 + h + 12}" font-size="10" text-anchor="end">{xmax:.0f} s</text>')


def main():
    out, rate = pathlib.Path(sys.argv[1]), float(sys.argv[2])
    windows = [json.loads(l) for l in (out / "windows.jsonl").read_text().splitlines() if l.strip()]
    if not windows:
        sys.exit("no soak windows were measured")
    t = [w["t_s"] for w in windows]
    rss = [w["rss_kb"] / 1024 for w in windows]
    p99 = [w["report"]["latency"]["p99_ms"] for w in windows]
    rps = [w["report"]["throughput_rps"] for w in windows]
    errors = sum(sum(w["report"]["errors"].values()) for w in windows)
    warm = max(1, len(windows) // 5)  # the first fifth is warm-up
    after = rss[warm:] or rss
    med = statistics.median(after)
    drift = max(abs(r - med) / med for r in after)
    fds, threads = [w["fds"] for w in windows[warm:] or windows], [w["threads"] for w in windows[warm:] or windows]
    ok = drift <= 0.10 and max(fds) - min(fds) <= 8 and max(threads) - min(threads) <= 8
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" width="640" height="560" font-family="sans-serif">'
           + line_chart(50, 30, 560, 130, t, rss, "server RSS, MB", "#1f77b4")
           + line_chart(50, 210, 560, 130, t, p99, "p99 latency per window, ms", "#d62728")
           + line_chart(50, 390, 560, 130, t, rps, f"answered req/s (offered {rate:.1f})", "#2ca02c")
           + "</svg>\n")
    (out / "soak.svg").write_text(svg)
    lines = [f"# Soak: {t[-1]} s at {rate:.1f} req/s offered, {len(windows)} windows", "",
             f"- RSS after warm-up: median {med:.0f} MB, largest move {100 * drift:.1f}% (limit ±10%); "
             f"first window {rss[0]:.0f} MB, last {rss[-1]:.0f} MB",
             f"- file descriptors {min(fds)}..{max(fds)}, threads {min(threads)}..{max(threads)} after warm-up",
             f"- p99 per window {min(p99):.1f}..{max(p99):.1f} ms (median {statistics.median(p99):.1f}); "
             f"answered {statistics.median(rps):.1f} req/s median; errors {errors}",
             f"- verdict: {'steady' if ok else 'NOT steady'}", "", "![soak](soak.svg)"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
