//! The self-contained HTML report of one scorer version: plain string
//! generation (no template engine), inline SVG line and histogram charts, and
//! photos embedded as base64 JPEG thumbnails so the file stands alone.
//!
//! All text that reaches the page goes through [`escape_html`]. Queries that
//! describe a child carry a `withheld_reason`; their photos and file names are
//! never written, only the report's disclaimer in grey placeholder boxes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

/// Images with more pixels than this are refused before decoding.
pub const MAX_PIXELS: u64 = 50_000_000;

/// Why a thumbnail could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The file could not be opened or read.
    #[error("reading {path}: {source}")]
    Io {
        /// The image file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The image could not be decoded or the thumbnail encoded.
    #[error("image {path}: {source}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: image::ImageError,
    },
    /// The image is above [`MAX_PIXELS`].
    #[error("image {path} is {width}x{height}, above the limit of {MAX_PIXELS} pixels")]
    TooLarge {
        /// The image file.
        path: PathBuf,
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
}

/// Makes a `data:image/jpeg;base64,…` thumbnail of the image at `path`.
///
/// The image is refused if above [`MAX_PIXELS`] (checked from its header,
/// before decoding), decoded, turned upright by its EXIF orientation,
/// shrunk with a Triangle filter so its longest side is `max_side` (aspect
/// kept; smaller images are not enlarged), flattened onto white if it has
/// alpha, and encoded as JPEG quality 80.
pub fn thumbnail_data_uri(path: &Path, max_side: u32) -> Result<String, ReportError> {
    let io_err = |source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    };
    let img_err = |source| ReportError::Image {
        path: path.to_path_buf(),
        source,
    };

    let (width, height) = ImageReader::open(path)
        .map_err(io_err)?
        .with_guessed_format()
        .map_err(io_err)?
        .into_dimensions()
        .map_err(img_err)?;
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(ReportError::TooLarge {
            path: path.to_path_buf(),
            width,
            height,
        });
    }

    let mut decoder = ImageReader::open(path)
        .map_err(io_err)?
        .with_guessed_format()
        .map_err(io_err)?
        .into_decoder()
        .map_err(img_err)?;
    let orientation = decoder.orientation().map_err(img_err)?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(img_err)?;
    img.apply_orientation(orientation);

    let side = max_side.max(1);
    if img.width() > side || img.height() > side {
        img = img.resize(side, side, FilterType::Triangle);
    }
    let rgb = flatten_on_white(img);

    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, 80)
        .encode_image(&rgb)
        .map_err(img_err)?;
    Ok(format!(
        "data:image/jpeg;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&jpeg)
    ))
}

/// Converts to 8-bit RGB, compositing any alpha channel over white.
fn flatten_on_white(img: DynamicImage) -> RgbImage {
    if !img.color().has_alpha() {
        return img.into_rgb8();
    }
    let rgba = img.into_rgba8();
    let (w, h) = rgba.dimensions();
    let mut out = RgbImage::new(w, h);
    for (dst, src) in out.pixels_mut().zip(rgba.pixels()) {
        let a = u32::from(src[3]);
        for c in 0..3 {
            dst[c] = ((u32::from(src[c]) * a + 255 * (255 - a) + 127) / 255) as u8;
        }
    }
    out
}

/// Escapes `&`, `<`, `>`, `"` and `'` so `s` is safe in HTML text and in
/// quoted attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Report data
// ---------------------------------------------------------------------------

/// One row of the metrics table.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    /// Metric name, e.g. "Kendall τb".
    pub name: String,
    /// The measured value.
    pub value: f64,
    /// 95% confidence interval (lo, hi), if computed.
    pub interval: Option<(f64, f64)>,
    /// Chance level or baseline, if known.
    pub baseline: Option<f64>,
    /// Target value, if one is set.
    pub goal: Option<f64>,
    /// Whether larger values are better (decides how the goal is checked).
    pub higher_is_better: bool,
}

/// One line of a line chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// (x, y) points, drawn in the given order; non-finite points are skipped.
    pub points: Vec<(f64, f64)>,
}

/// One retrieved photo for an example query.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// Image path or name; its file name is shown.
    pub image: String,
    /// The scorer's score.
    pub score: f64,
    /// Whether this is a relevant (ground-truth) photo.
    pub relevant: bool,
    /// `data:image/...` URI from [`thumbnail_data_uri`], if available.
    pub thumbnail: Option<String>,
    /// True when the photo itself is restricted (it depicts a child): its slot shows the
    /// disclaimer instead of the photo and its name.
    pub withheld: bool,
}

/// An example query with its top hits.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    /// The query text.
    pub query: String,
    /// `Some(rule)` when the query describes a child: its photos are replaced
    /// by the report's disclaimer and the rule is shown.
    pub withheld_reason: Option<String>,
    /// Hits, best first.
    pub hits: Vec<Hit>,
}

/// A line chart: (title, x label, y label, series).
pub type Curve = (String, String, String, Vec<Series>);

/// A histogram chart: (title, lo, hi, [(series name, bin counts)]); each
/// series' bins split [lo, hi] evenly.
pub type Histogram = (String, f64, f64, Vec<(String, Vec<usize>)>);

/// Everything shown in the report of one scorer version.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    /// Page title.
    pub title: String,
    /// Scorer version.
    pub version: u32,
    /// Creation time, preformatted.
    pub created: String,
    /// Key/value facts: encoders, data, aggregation, seed, wall time.
    pub summary: Vec<(String, String)>,
    /// The metrics table.
    pub metrics: Vec<MetricRow>,
    /// Line charts.
    pub curves: Vec<Curve>,
    /// Histogram charts.
    pub histograms: Vec<Histogram>,
    /// Example queries.
    pub queries: Vec<QueryResult>,
    /// Text shown in place of withheld photos.
    pub disclaimer: String,
    /// Free-form notes listed at the end.
    pub notes: Vec<String>,
}

// ---------------------------------------------------------------------------
// Page
// ---------------------------------------------------------------------------

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

/// Formats a metric value with about four significant digits.
fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        return "n/a".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "∞".into()
        } else {
            "−∞".into()
        };
    }
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-4..1e9).contains(&a) {
        return format!("{v:.3e}");
    }
    let decimals = (3 - a.log10().floor() as i32).clamp(0, 7) as usize;
    trim_zeros(format!("{v:.decimals$}"))
}

fn trim_zeros(s: String) -> String {
    if s.contains('.') {
        let t = s.trim_end_matches('0').trim_end_matches('.');
        if t == "-0" {
            "0".into()
        } else {
            t.into()
        }
    } else {
        s
    }
}

// ---------------------------------------------------------------------------
// SVG charts
// ---------------------------------------------------------------------------

/// Colour-blind-friendly palette (Okabe–Ito, without yellow), cycled.
const PALETTE: [&str; 8] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999999",
];

const W: f64 = 760.0;
const PLOT_H: f64 = 300.0;
const ML: f64 = 72.0;
const MR: f64 = 20.0;
const MT: f64 = 14.0;
/// Room under the plot for tick labels and the x label.
const AXIS_H: f64 = 52.0;
const LEGEND_ROW: f64 = 20.0;

fn colour(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// A tick step of 1, 2 or 5 × 10^k giving about `target` intervals over `span`.
fn nice_step(span: f64, target: f64) -> f64 {
    let raw = span / target;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm < 1.5 {
        1.0
    } else if norm < 3.0 {
        2.0
    } else if norm < 7.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// Widens a data range to nice bounds; returns (lo, hi, step).
fn nice_domain(lo: f64, hi: f64) -> (f64, f64, f64) {
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        (lo - pad, hi + pad)
    };
    let step = nice_step(hi - lo, 5.0);
    ((lo / step).floor() * step, (hi / step).ceil() * step, step)
}

/// Tick values at multiples of `step` within [lo, hi].
fn ticks(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    let eps = step * 1e-9;
    let first = (lo / step - 1e-9).ceil();
    (0..)
        .map(|i| (first + i as f64) * step)
        .take_while(|&v| v <= hi + eps)
        .take(50)
        .map(|v| if v.abs() < eps { 0.0 } else { v })
        .collect()
}

fn tick_label(v: f64, step: f64) -> String {
    let a = v.abs();
    if a <= step * 1e-9 {
        return "0".into();
    }
    if !(1e-4..1e7).contains(&a) {
        return format!("{v:.1e}");
    }
    let decimals = (-step.log10().floor()).clamp(0.0, 8.0) as usize;
    let s = format!("{v:.decimals$}");
    if s.trim_start_matches('-')
        .chars()
        .all(|c| c == '0' || c == '.')
    {
        "0".into()
    } else {
        s
    }
}

/// Lays out legend entries left to right, wrapping; returns (x, y) per
/// entry and the number of rows.
fn legend_layout(names: &[&str]) -> (Vec<(f64, f64)>, usize) {
    let mut pos = Vec::with_capacity(names.len());
    let (mut x, mut row) = (ML, 0usize);
    for name in names {
        let w = 26.0 + 7.0 * name.chars().count().min(60) as f64 + 18.0;
        if x + w > W - MR && x > ML {
            x = ML;
            row += 1;
        }
        pos.push((x, row as f64 * LEGEND_ROW));
        x += w;
    }
    (pos, if names.is_empty() { 0 } else { row + 1 })
}

/// Opens an SVG of the chart size (with room for `legend_rows`) and returns
/// the y where the legend starts.
fn svg_open(s: &mut String, aria: &str, legend_rows: usize) -> f64 {
    let legend_top = MT + PLOT_H + AXIS_H;
    let height = legend_top + legend_rows as f64 * LEGEND_ROW + 6.0;
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {height:.0}\" role=\"img\" \
         aria-label=\"{}\" font-family=\"system-ui, sans-serif\" font-size=\"12\" fill=\"#1f2328\">",
        escape_html(aria)
    );
    let _ = writeln!(
        s,
        "<rect x=\"{ML}\" y=\"{MT}\" width=\"{:.1}\" height=\"{PLOT_H}\" fill=\"#fafbfc\" stroke=\"#d1d9e0\"/>",
        W - ML - MR
    );
    legend_top
}

fn svg_legend(s: &mut String, names: &[&str], top: f64, as_bars: bool) {
    let (pos, _) = legend_layout(names);
    for (i, (name, (x, y))) in names.iter().zip(pos).enumerate() {
        let c = colour(i);
        let y = top + y + 10.0;
        if as_bars {
            let _ = write!(
                s,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"18\" height=\"10\" fill=\"{c}\"/>",
                y - 5.0
            );
        } else {
            let _ = write!(
                s,
                "<line x1=\"{x:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{c}\" stroke-width=\"2.5\"/>",
                x + 18.0
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            x + 24.0,
            y + 4.0,
            escape_html(name)
        );
    }
}

fn svg_axis_labels(s: &mut String, x_label: &str, y_label: &str) {
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-weight=\"600\">{}</text>",
        ML + (W - ML - MR) / 2.0,
        MT + PLOT_H + 40.0,
        escape_html(x_label)
    );
    let cy = MT + PLOT_H / 2.0;
    let _ = writeln!(
        s,
        "<text x=\"16\" y=\"{cy:.1}\" transform=\"rotate(-90 16 {cy:.1})\" text-anchor=\"middle\" \
         font-weight=\"600\">{}</text>",
        escape_html(y_label)
    );
}

fn svg_no_data(s: &mut String) {
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#59636e\">no data</text>",
        ML + (W - ML - MR) / 2.0,
        MT + PLOT_H / 2.0
    );
}

/// Grid lines and tick labels for both axes of the plot area.
fn svg_grid(
    s: &mut String,
    (x0, x1, xs): (f64, f64, f64),
    (y0, y1, ys): (f64, f64, f64),
    sx: &dyn Fn(f64) -> f64,
    sy: &dyn Fn(f64) -> f64,
) {
    for v in ticks(x0, x1, xs) {
        let x = sx(v);
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{MT}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#e6e9ed\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            MT + PLOT_H + 5.0,
            MT + PLOT_H + 18.0,
            tick_label(v, xs)
        );
    }
    for v in ticks(y0, y1, ys) {
        let y = sy(v);
        let _ = writeln!(
            s,
            "<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#e6e9ed\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            ML - 5.0,
            W - MR,
            ML - 8.0,
            y + 4.0,
            tick_label(v, ys)
        );
    }
    // Axes on top of the grid.
    let _ = writeln!(
        s,
        "<path d=\"M{ML} {MT}V{:.1}H{:.1}\" fill=\"none\" stroke=\"#59636e\"/>",
        MT + PLOT_H,
        W - MR
    );
}

/// An SVG line chart of `series` with ticked axes, axis labels and a legend.
/// Non-finite points are skipped; a single point is drawn as a marker and an
/// empty chart says "no data".
fn line_chart_svg(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let names: Vec<&str> = series.iter().map(|s| s.name.as_str()).collect();
    let (_, rows) = legend_layout(&names);
    let mut s = String::new();
    let legend_top = svg_open(&mut s, title, rows);

    let finite: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|se| {
            se.points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect()
        })
        .collect();
    let all = finite.iter().flatten();
    let (mut xmin, mut xmax, mut ymin, mut ymax) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in all {
        xmin = xmin.min(x);
        xmax = xmax.max(x);
        ymin = ymin.min(y);
        ymax = ymax.max(y);
    }

    if xmin > xmax {
        svg_no_data(&mut s);
    } else {
        let xd = nice_domain(xmin, xmax);
        let yd = nice_domain(ymin, ymax);
        let pw = W - ML - MR;
        let sx = move |v: f64| ML + (v - xd.0) / (xd.1 - xd.0) * pw;
        let sy = move |v: f64| MT + PLOT_H - (v - yd.0) / (yd.1 - yd.0) * PLOT_H;
        svg_grid(&mut s, xd, yd, &sx, &sy);
        for (i, pts) in finite.iter().enumerate() {
            let c = colour(i);
            if pts.len() >= 2 {
                s.push_str("<polyline fill=\"none\" stroke=\"");
                s.push_str(c);
                s.push_str("\" stroke-width=\"2\" stroke-linejoin=\"round\" points=\"");
                for (k, &(x, y)) in pts.iter().enumerate() {
                    if k > 0 {
                        s.push(' ');
                    }
                    let _ = write!(s, "{:.1},{:.1}", sx(x), sy(y));
                }
                s.push_str("\"/>\n");
            }
            if pts.len() <= 60 {
                let r = if pts.len() == 1 { 4.0 } else { 2.5 };
                for &(x, y) in pts {
                    let _ = writeln!(
                        s,
                        "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"{r}\" fill=\"{c}\"><title>{}: ({}, {})</title></circle>",
                        sx(x),
                        sy(y),
                        escape_html(&series[i].name),
                        fmt_value(x),
                        fmt_value(y)
                    );
                }
            }
        }
    }
    svg_axis_labels(&mut s, x_label, y_label);
    svg_legend(&mut s, &names, legend_top, false);
    s.push_str("</svg>\n");
    s
}

/// An SVG histogram: each series' counts split [lo, hi] evenly, and series
/// are drawn side by side within each bin (grouped bars) with a legend.
fn histogram_svg(title: &str, lo: f64, hi: f64, series: &[(String, Vec<usize>)]) -> String {
    let names: Vec<&str> = series.iter().map(|(n, _)| n.as_str()).collect();
    let (_, rows) = legend_layout(&names);
    let mut s = String::new();
    let legend_top = svg_open(&mut s, title, rows);

    let any_bins = series.iter().any(|(_, c)| !c.is_empty());
    if !(lo.is_finite() && hi.is_finite() && hi > lo && any_bins) {
        svg_no_data(&mut s);
    } else {
        let max = series
            .iter()
            .flat_map(|(_, c)| c.iter().copied())
            .max()
            .unwrap_or(0);
        let (_, y1, ys) = nice_domain(0.0, max.max(1) as f64);
        let xs = nice_step(hi - lo, 5.0);
        let pw = W - ML - MR;
        let sx = move |v: f64| ML + (v - lo) / (hi - lo) * pw;
        let sy = move |v: f64| MT + PLOT_H - v / y1 * PLOT_H;
        svg_grid(&mut s, (lo, hi, xs), (0.0, y1, ys.max(1.0)), &sx, &sy);
        let k = series.len() as f64;
        for (j, (name, counts)) in series.iter().enumerate() {
            if counts.is_empty() {
                continue;
            }
            let c = colour(j);
            let bw = (hi - lo) / counts.len() as f64;
            for (i, &n) in counts.iter().enumerate() {
                if n == 0 {
                    continue;
                }
                let b0 = lo + i as f64 * bw;
                let x0 = sx(b0 + j as f64 * bw / k);
                let x1 = sx(b0 + (j as f64 + 1.0) * bw / k);
                let gap = ((x1 - x0) * 0.1).min(1.0);
                let _ = writeln!(
                    s,
                    "<rect x=\"{:.2}\" y=\"{:.1}\" width=\"{:.2}\" height=\"{:.1}\" fill=\"{c}\">\
                     <title>{}: {n} in [{}, {})</title></rect>",
                    x0 + gap / 2.0,
                    sy(n as f64),
                    (x1 - x0 - gap).max(0.5),
                    PLOT_H - (sy(n as f64) - MT),
                    escape_html(name),
                    fmt_value(b0),
                    fmt_value(b0 + bw)
                );
            }
        }
    }
    svg_axis_labels(&mut s, "", "count");
    svg_legend(&mut s, &names, legend_top, true);
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rough well-formedness: every opened element of the given names is
    /// closed (or self-closed), no NaN/inf leaked into the markup.
    fn assert_svg_ok(svg: &str) {
        assert!(svg.starts_with("<svg "), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<svg").count(), 1);
        for tag in [
            "text", "title", "circle", "rect", "line", "polyline", "path",
        ] {
            let open =
                svg.matches(&format!("<{tag} ")).count() + svg.matches(&format!("<{tag}>")).count();
            let closed = svg.matches(&format!("</{tag}>")).count();
            let selfclosed = svg
                .split(&format!("<{tag} "))
                .skip(1)
                .filter(|rest| rest.split('>').next().is_some_and(|t| t.ends_with('/')))
                .count();
            assert_eq!(open, closed + selfclosed, "unbalanced <{tag}> in {svg}");
        }
        for bad in ["NaN", "inf", "\"-0.0\""] {
            assert!(!svg.contains(bad), "{bad} in {svg}");
        }
        assert_eq!(svg.matches('<').count(), svg.matches('>').count());
    }

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
    fn escapes_html() {
        assert_eq!(
            escape_html(r#"<a href="x">Tom & Jerry's</a>"#),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; Jerry&#39;s&lt;/a&gt;"
        );
        assert_eq!(escape_html("plain τ ✓"), "plain τ ✓");
        assert_eq!(escape_html(""), "");
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

    #[test]
    fn line_chart_handles_empty_single_and_degenerate() {
        let empty = line_chart_svg("t", "x", "y", &[]);
        assert_svg_ok(&empty);
        assert!(empty.contains("no data"));

        let empty_series = line_chart_svg(
            "t",
            "x",
            "y",
            &[Series {
                name: "none".into(),
                points: vec![],
            }],
        );
        assert_svg_ok(&empty_series);
        assert!(empty_series.contains("no data") && empty_series.contains(">none</text>"));

        let one = line_chart_svg(
            "t",
            "x",
            "y",
            &[Series {
                name: "one".into(),
                points: vec![(2.0, 5.0)],
            }],
        );
        assert_svg_ok(&one);
        assert_eq!(one.matches("<circle").count(), 1);
        assert!(!one.contains("<polyline"));
        assert!(
            one.matches("text-anchor=\"end\"").count() >= 3,
            "y tick labels"
        );

        let many: Vec<Series> = (0..10)
            .map(|i| Series {
                name: format!("series number {i}"),
                points: (0..200).map(|k| (k as f64, (k * i) as f64)).collect(),
            })
            .collect();
        let svg = line_chart_svg("t", "step", "value", &many);
        assert_svg_ok(&svg);
        assert_eq!(svg.matches("<polyline").count(), 10);
        assert!(svg.contains(PALETTE[0]) && svg.contains(PALETTE[7]));

        let flat = line_chart_svg(
            "t",
            "x",
            "y",
            &[Series {
                name: "f".into(),
                points: vec![(0.0, 0.0), (0.0, 0.0)],
            }],
        );
        assert_svg_ok(&flat);
    }

    #[test]
    fn histogram_chart_markup() {
        let svg = histogram_svg(
            "h",
            0.0,
            1.0,
            &[("a".into(), vec![1, 0, 4]), ("b".into(), vec![2, 2, 2])],
        );
        assert_svg_ok(&svg);
        // 5 non-zero bars + plot background + 2 legend swatches.
        assert_eq!(svg.matches("<rect").count(), 8);
        assert!(svg.contains(">a</text>") && svg.contains(">b</text>"));

        for svg in [
            histogram_svg("h", 0.0, 1.0, &[]),
            histogram_svg("h", 0.0, 1.0, &[("z".into(), vec![])]),
            histogram_svg("h", 1.0, 1.0, &[("z".into(), vec![3])]),
            histogram_svg("h", 0.0, f64::NAN, &[("z".into(), vec![3])]),
        ] {
            assert_svg_ok(&svg);
            assert!(svg.contains("no data"));
        }
        let zeros = histogram_svg("h", -1.0, 1.0, &[("z".into(), vec![0, 0])]);
        assert_svg_ok(&zeros);
    }

    #[test]
    fn ticks_are_nice() {
        assert_eq!(nice_domain(0.03, 0.97), (0.0, 1.0, 0.2));
        let (lo, hi, step) = nice_domain(5.0, 5.0);
        assert!(lo < 5.0 && hi > 5.0 && step > 0.0);
        let t = ticks(0.0, 1.0, 0.2);
        assert_eq!(t.len(), 6);
        assert_eq!(tick_label(t[3], 0.2), "0.6");
        assert_eq!(tick_label(-1e-17, 0.2), "0");
        assert_eq!(fmt_value(0.41234), "0.4123");
        assert_eq!(fmt_value(1234.6), "1235");
        assert_eq!(fmt_value(7.0), "7");
        assert_eq!(fmt_value(f64::NAN), "n/a");
    }

    /// CRC-32 (IEEE) for hand-made PNG chunks.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    fn temp_path(tag: &str) -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        std::env::temp_dir().join(format!(
            "report-test-{}-{nanos}-{}-{tag}.png",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ))
    }

    #[test]
    fn thumbnail_of_tiny_png() {
        let path = temp_path("tiny");
        let img = image::RgbaImage::from_fn(40, 20, |x, y| {
            image::Rgba([(x * 6) as u8, (y * 12) as u8, 90, 255 - x as u8])
        });
        img.save(&path).unwrap();
        let uri = thumbnail_data_uri(&path, 10);
        let small = thumbnail_data_uri(&path, 100);
        std::fs::remove_file(&path).unwrap();

        let b64 = uri
            .unwrap()
            .strip_prefix("data:image/jpeg;base64,")
            .expect("prefix")
            .to_string();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let thumb = image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg).unwrap();
        assert_eq!((thumb.width(), thumb.height()), (10, 5));

        let b64 = small
            .unwrap()
            .strip_prefix("data:image/jpeg;base64,")
            .unwrap()
            .to_string();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let thumb = image::load_from_memory(&bytes).unwrap();
        assert_eq!((thumb.width(), thumb.height()), (40, 20), "never enlarged");
    }

    #[test]
    fn thumbnail_refuses_huge_and_missing_images() {
        // A PNG header claiming 10000×6000 (60 MP) with no pixel data: it must
        // be refused from the header alone.
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend_from_slice(&10_000u32.to_be_bytes());
        ihdr.extend_from_slice(&6_000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend_from_slice(&13u32.to_be_bytes());
        png.extend_from_slice(&ihdr);
        png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
        // A truncated IDAT chunk: enough for the header parser to stop.
        png.extend_from_slice(&4u32.to_be_bytes());
        png.extend_from_slice(b"IDAT\x78\x9c\x00\x00");
        let path = temp_path("huge");
        std::fs::write(&path, &png).unwrap();
        let res = thumbnail_data_uri(&path, 64);
        std::fs::remove_file(&path).unwrap();
        match res {
            Err(ReportError::TooLarge {
                width: 10_000,
                height: 6_000,
                ..
            }) => {}
            other => panic!("expected TooLarge, got {other:?}"),
        }

        let missing = temp_path("missing");
        assert!(matches!(
            thumbnail_data_uri(&missing, 64),
            Err(ReportError::Io { .. })
        ));
    }
}
