//! The report's HTML page: one self-contained document (inline CSS, inline SVG charts,
//! embedded thumbnails) rendered from a [`Report`] by plain string generation, no template
//! engine. Every text goes through `escape_html`; a withheld query or photo shows the
//! disclaimer, never its pixels or its file name.

use std::fmt::Write as _;
use std::path::Path;

use imagesearch_compliance::escape_html;

use super::charts::{histogram_svg, line_chart_svg};
use super::{fmt_value, Hit, MetricRow, QueryResult, Report, Table};

const CSS: &str = r#"
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--ok:#1a7f37;--bad:#cf222e;--card:#fff}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--fg);background:#f6f8fa}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{margin:0;font-size:26px}
h2{margin:32px 0 12px;font-size:20px;border-bottom:1px solid var(--line);padding-bottom:4px}
.meta{color:var(--muted);margin:4px 0 0}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:4px 20px;margin:0}
dl.facts dt{font-weight:600}
dl.facts dd{margin:0;overflow-wrap:anywhere}
table.metrics{border-collapse:collapse;width:100%;background:var(--card);font-variant-numeric:tabular-nums}
table.metrics th,table.metrics td{padding:6px 10px;border-bottom:1px solid var(--line);text-align:right}
table.metrics th:first-child,table.metrics td:first-child{text-align:left}
table.metrics th{background:#eef1f4}
.ok{color:var(--ok);font-weight:700}
.bad{color:var(--bad);font-weight:700}
.na{color:var(--muted)}
figure.chart{margin:0 0 16px;background:var(--card);border:1px solid var(--line);border-radius:6px;padding:8px 12px}
figure.chart figcaption{font-weight:600;margin-bottom:4px}
figure.chart svg{display:block;width:100%;height:auto}
section.query{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:12px 16px;margin:0 0 16px}
section.query h3{margin:0 0 10px;font-size:16px}
.hits{display:flex;flex-wrap:wrap;gap:10px}
figure.hit{margin:0;width:158px;padding:3px;border:3px solid transparent;border-radius:6px}
figure.hit.relevant{border-color:var(--ok)}
figure.hit img,figure.hit .noimg{display:block;width:146px;height:120px;object-fit:cover;border-radius:3px}
.noimg{background:#eaeef2;color:var(--muted);display:flex;align-items:center;justify-content:center;font-size:12px}
figure.hit figcaption{font-size:12px;line-height:1.35;margin-top:3px}
figure.hit .name{display:block;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
figure.hit .score{font-variant-numeric:tabular-nums;color:var(--muted)}
.withheld{width:158px;height:132px;background:#d0d7de;color:#424a53;border-radius:6px;display:flex;align-items:center;justify-content:center;text-align:center;font-size:12px;padding:10px}
.reason{font-size:12px;color:var(--muted);margin:8px 0 0}
.empty{color:var(--muted);font-style:italic}
ul.notes li{margin:2px 0}
"#;

/// Renders the report as one self-contained HTML page.
pub fn render(report: &Report) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let title = escape_html(&report.title);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title} — v{v}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n\
         <header>\n<h1>{title}</h1>\n<p class=\"meta\">Version {v} · created {created}</p>\n</header>\n",
        v = report.version,
        created = escape_html(&report.created),
    );

    if !report.summary.is_empty() {
        h.push_str("<h2>Summary</h2>\n<dl class=\"facts\">\n");
        for (k, v) in &report.summary {
            let _ = writeln!(h, "<dt>{}</dt><dd>{}</dd>", escape_html(k), escape_html(v));
        }
        h.push_str("</dl>\n");
    }

    h.push_str("<h2>Metrics</h2>\n");
    render_metrics(&mut h, &report.metrics);
    for t in &report.tables {
        render_table(&mut h, t);
    }

    if !report.curves.is_empty() {
        h.push_str("<h2>Curves</h2>\n");
        for (title, xl, yl, series) in &report.curves {
            let _ = write!(
                h,
                "<figure class=\"chart\"><figcaption>{}</figcaption>\n{}</figure>\n",
                escape_html(title),
                line_chart_svg(title, xl, yl, series)
            );
        }
    }

    if !report.histograms.is_empty() {
        h.push_str("<h2>Distributions</h2>\n");
        for (title, lo, hi, series) in &report.histograms {
            let _ = write!(
                h,
                "<figure class=\"chart\"><figcaption>{}</figcaption>\n{}</figure>\n",
                escape_html(title),
                histogram_svg(title, *lo, *hi, series)
            );
        }
    }

    if !report.queries.is_empty() {
        h.push_str("<h2>Example queries</h2>\n");
        for q in &report.queries {
            render_query(&mut h, q, &report.disclaimer);
        }
    }

    if !report.notes.is_empty() {
        h.push_str("<h2>Notes</h2>\n<ul class=\"notes\">\n");
        for n in &report.notes {
            let _ = writeln!(h, "<li>{}</li>", escape_html(n));
        }
        h.push_str("</ul>\n");
    }

    h.push_str("</main>\n</body>\n</html>\n");
    h
}

fn render_table(h: &mut String, t: &Table) {
    let _ = writeln!(h, "<h2>{}</h2>", escape_html(&t.title));
    h.push_str("<table class=\"metrics\">\n<thead><tr>");
    for c in &t.header {
        let _ = write!(h, "<th>{}</th>", escape_html(c));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for (i, row) in t.rows.iter().enumerate() {
        let style = if t.highlighted.contains(&i) { " style=\"font-weight:bold\"" } else { "" };
        let _ = write!(h, "<tr{style}>");
        for c in row {
            let _ = write!(h, "<td>{}</td>", escape_html(c));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table>\n");
    if !t.note.is_empty() {
        let _ = writeln!(h, "<p class=\"meta\">{}</p>", escape_html(&t.note));
    }
}

fn render_metrics(h: &mut String, rows: &[MetricRow]) {
    if rows.is_empty() {
        h.push_str("<p class=\"empty\">No metrics.</p>\n");
        return;
    }
    h.push_str(
        "<table class=\"metrics\">\n<thead><tr><th>Metric</th><th>Value</th><th>95% CI</th>\
         <th>Chance / baseline</th><th>Goal</th><th>Met</th></tr></thead>\n<tbody>\n",
    );
    let dash = "<span class=\"na\">—</span>";
    for m in rows {
        let ci = match m.interval {
            Some((lo, hi)) => format!("[{}, {}]", fmt_value(lo), fmt_value(hi)),
            None => dash.to_string(),
        };
        let baseline = m.baseline.map_or_else(|| dash.to_string(), fmt_value);
        let (goal, met) = match m.goal {
            Some(g) => {
                let ok = if m.higher_is_better {
                    m.value >= g
                } else {
                    m.value <= g
                };
                let sign = if m.higher_is_better { "≥" } else { "≤" };
                let mark = if ok {
                    "<span class=\"ok\" title=\"goal met\">✓</span>"
                } else {
                    "<span class=\"bad\" title=\"goal not met\">✗</span>"
                };
                (format!("{sign} {}", fmt_value(g)), mark.to_string())
            }
            None => (dash.to_string(), dash.to_string()),
        };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{ci}</td><td>{baseline}</td><td>{goal}</td><td>{met}</td></tr>",
            escape_html(&m.name),
            fmt_value(m.value),
        );
    }
    h.push_str("</tbody>\n</table>\n");
}

fn render_query(h: &mut String, q: &QueryResult, disclaimer: &str) {
    let _ = write!(
        h,
        "<section class=\"query\">\n<h3>“{}”</h3>\n<div class=\"hits\">\n",
        escape_html(&q.query)
    );
    match &q.withheld_reason {
        Some(reason) => {
            let d = escape_html(disclaimer);
            for _ in 0..q.hits.len().max(1) {
                let _ = writeln!(h, "<div class=\"withheld\">{d}</div>");
            }
            let _ = write!(
                h,
                "</div>\n<p class=\"reason\">Photos withheld: {}</p>\n",
                escape_html(reason)
            );
        }
        None => {
            if q.hits.is_empty() {
                h.push_str("<p class=\"empty\">No results.</p>\n");
            }
            for hit in &q.hits {
                if hit.withheld {
                    let _ = writeln!(
                        h,
                        "<figure class=\"hit\"><div class=\"withheld\">{}</div>\
                         <figcaption><span class=\"score\">score {:.3}</span></figcaption></figure>",
                        escape_html(disclaimer),
                        hit.score
                    );
                } else {
                    render_hit(h, hit);
                }
            }
            h.push_str("</div>\n");
        }
    }
    h.push_str("</section>\n");
}

fn render_hit(h: &mut String, hit: &Hit) {
    let name = Path::new(&hit.image)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| hit.image.clone());
    let name = escape_html(&name);
    let class = if hit.relevant { "hit relevant" } else { "hit" };
    let tip = if hit.relevant {
        " title=\"relevant\""
    } else {
        ""
    };
    let _ = write!(h, "<figure class=\"{class}\"{tip}>");
    match &hit.thumbnail {
        // Only embedded images: never let a caller-supplied URI point elsewhere.
        Some(uri) if uri.starts_with("data:image/") => {
            let _ = write!(h, "<img src=\"{}\" alt=\"{name}\">", escape_html(uri));
        }
        _ => h.push_str("<div class=\"noimg\">no thumbnail</div>"),
    }
    let _ = writeln!(
        h,
        "<figcaption><span class=\"name\" title=\"{}\">{name}</span>\
         <span class=\"score\">score {:.3}</span></figcaption></figure>",
        escape_html(&hit.image),
        hit.score
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Series;

    fn sample_report() -> Report {
        Report {
            title: "Scorer <v3> & co".into(),
            version: 3,
            created: "2025-01-02 03:04:05".into(),
            summary: vec![
                ("Seed".into(), "42".into()),
                ("Image encoder".into(), "clip-vit-b32".into()),
            ],
            metrics: vec![
                MetricRow {
                    name: "Kendall τb".into(),
                    value: 0.41234,
                    interval: Some((0.38, 0.44)),
                    baseline: Some(0.0),
                    goal: Some(0.4),
                    higher_is_better: true,
                },
                MetricRow {
                    name: "RMSE".into(),
                    value: 0.9,
                    interval: None,
                    baseline: Some(1.2),
                    goal: Some(0.8),
                    higher_is_better: false,
                },
                MetricRow {
                    name: "Median rank".into(),
                    value: 7.0,
                    interval: None,
                    baseline: None,
                    goal: None,
                    higher_is_better: false,
                },
            ],
            tables: vec![Table {
                title: "Levers <chosen>".into(),
                header: vec!["views".into(), "R@1".into()],
                rows: vec![vec!["both".into(), "0.45".into()], vec!["crops".into(), "0.49".into()]],
                highlighted: vec![1],
                note: "picked by validation MRR".into(),
            }],
            curves: vec![(
                "Loss".into(),
                "epoch".into(),
                "loss".into(),
                vec![
                    Series {
                        name: "train".into(),
                        points: vec![(1.0, 0.9), (2.0, 0.6), (3.0, 0.5)],
                    },
                    Series {
                        name: "val".into(),
                        points: vec![(1.0, 0.95), (2.0, f64::NAN), (3.0, 0.7)],
                    },
                ],
            )],
            histograms: vec![(
                "Scores".into(),
                0.0,
                1.0,
                vec![
                    ("relevant".into(), vec![0, 1, 3, 6]),
                    ("other".into(), vec![5, 3, 1, 0]),
                ],
            )],
            queries: vec![
                QueryResult {
                    query: "a dog on a beach".into(),
                    withheld_reason: None,
                    hits: vec![
                        Hit {
                            image: "photos/dog_001.jpg".into(),
                            score: 0.87654,
                            relevant: true,
                            thumbnail: Some("data:image/jpeg;base64,AAAA".into()),
                            withheld: false,
                        },
                        Hit {
                            image: "photos/cat.jpg".into(),
                            score: 0.5,
                            relevant: false,
                            thumbnail: Some("javascript:alert(1)".into()),
                            withheld: false,
                        },
                    ],
                },
                QueryResult {
                    query: "a toddler in a bath".into(),
                    withheld_reason: Some("queries describing a child".into()),
                    hits: vec![
                        Hit {
                            image: "photos/secret_kid.jpg".into(),
                            score: 0.9,
                            relevant: true,
                            thumbnail: Some("data:image/jpeg;base64,BBBB".into()),
                            withheld: false,
                        },
                        Hit {
                            image: "photos/secret_kid2.jpg".into(),
                            score: 0.8,
                            relevant: false,
                            thumbnail: None,
                            withheld: false,
                        },
                    ],
                },
            ],
            disclaimer: "Photos not shown for this query.".into(),
            notes: vec!["Evaluated on the <held-out> split.".into()],
        }
    }

    /// The HTML of the query card whose heading contains `query`.
    fn card<'a>(html: &'a str, query: &str) -> &'a str {
        let start = html
            .find(&format!("<h3>“{query}”</h3>"))
            .expect("query card");
        let start = html[..start].rfind("<section class=\"query\">").unwrap();
        let end = start + html[start..].find("</section>").unwrap();
        &html[start..end]
    }

    #[test]
    fn render_contains_sections_and_escapes() {
        let html = render(&sample_report());
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("Scorer &lt;v3&gt; &amp; co"));
        assert!(!html.contains("<v3>"));
        assert!(html.contains("Version 3"));
        assert!(html.contains("2025-01-02 03:04:05"));
        for name in ["Kendall τb", "RMSE", "Median rank"] {
            assert!(html.contains(&format!("<td>{name}</td>")), "{name}");
        }
        assert!(html.contains("<dt>Seed</dt><dd>42</dd>"));
        assert!(html.contains("[0.38, 0.44]"));
        assert!(html.contains("0.4123"));
        // τb 0.412 ≥ 0.4 met; RMSE 0.9 ≤ 0.8 not met.
        assert_eq!(html.matches("title=\"goal met\"").count(), 1);
        assert_eq!(html.matches("title=\"goal not met\"").count(), 1);
        assert!(html.contains("≤ 0.8"));
        assert_eq!(html.matches("<svg ").count(), 2);
        assert!(html.contains("Evaluated on the &lt;held-out&gt; split."));
        assert!(html.contains("<h2>Levers &lt;chosen&gt;</h2>"));
        assert!(html.contains("<tr><td>both</td><td>0.45</td></tr>"));
        assert!(html.contains("<tr style=\"font-weight:bold\"><td>crops</td><td>0.49</td></tr>"));
    }

    #[test]
    fn withheld_query_shows_disclaimer_not_photos() {
        let html = render(&sample_report());
        let kid = card(&html, "a toddler in a bath");
        assert!(!kid.contains("<img"));
        assert!(!kid.contains("secret_kid"));
        assert!(!kid.contains("BBBB"));
        assert_eq!(kid.matches("Photos not shown for this query.").count(), 2);
        assert!(kid.contains("queries describing a child"));
        assert!(!html.contains("secret_kid"));

        let dog = card(&html, "a dog on a beach");
        assert_eq!(
            dog.matches("<img").count(),
            1,
            "only data: URIs are embedded"
        );
        assert!(!dog.contains("javascript:"));
        assert!(dog.contains("dog_001.jpg"));
        assert!(
            dog.contains(">dog_001.jpg</span>"),
            "caption shows the file name"
        );
        assert!(dog.contains("score 0.877"));
        assert!(dog.contains("score 0.500"));
        assert_eq!(dog.matches("class=\"hit relevant\"").count(), 1);
        assert!(!dog.contains("Photos not shown"));
    }

    #[test]
    fn restricted_photo_is_replaced_by_the_disclaimer() {
        let mut r = sample_report();
        r.queries[0].hits[0].withheld = true;
        let html = render(&r);
        let dog = card(&html, "a dog on a beach");
        assert_eq!(dog.matches("Photos not shown for this query.").count(), 1);
        assert!(!dog.contains("dog_001.jpg"), "a withheld photo's name is not shown");
        assert!(!dog.contains("AAAA"), "a withheld photo's pixels are not embedded");
        assert!(dog.contains("score 0.877"));
    }

    #[test]
    fn withheld_query_without_hits_still_shows_disclaimer() {
        let mut r = sample_report();
        r.queries[1].hits.clear();
        let html = render(&r);
        assert_eq!(
            card(&html, "a toddler in a bath")
                .matches("class=\"withheld\"")
                .count(),
            1
        );
    }
}
