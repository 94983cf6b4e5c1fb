//! The report's SVG charts, drawn by hand: line charts (training curves) and grouped-bar
//! histograms (score distributions), with nice ticks, axis labels and a wrapping legend, in a
//! colour-blind-friendly palette. Every label goes through `escape_html`.

use std::fmt::Write as _;

use imagesearch_compliance::escape_html;

use super::{fmt_value, Series};

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
pub(super) fn line_chart_svg(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
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
pub(super) fn histogram_svg(title: &str, lo: f64, hi: f64, series: &[(String, Vec<usize>)]) -> String {
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
    }
}
