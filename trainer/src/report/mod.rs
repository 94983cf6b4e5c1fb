//! The self-contained HTML report of one scorer version. This module owns the report's data
//! model ([`Report`] and its parts) and its entry points; the page lives in `page`, the SVG
//! charts in `charts`, the photo thumbnails in `thumbnails`, and the view of a trained version
//! (what its manifest, evaluation and data show) in `version`.
//!
//! All text that reaches the page goes through [`imagesearch_compliance::escape_html`]. Queries
//! that describe a child carry a `withheld_reason`; their photos and file names are never
//! written, only the report's disclaimer in grey placeholder boxes.

mod charts;
mod page;
mod thumbnails;
mod version;

pub use page::render;
pub use thumbnails::{thumbnail_data_uri, ReportError};
pub use version::version_report;

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

/// A plain table with a title and a note under it (e.g. the test-time levers).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Rows drawn in bold (e.g. the chosen candidate).
    pub highlighted: Vec<usize>,
    pub note: String,
}

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
    /// Further tables after the metrics.
    pub tables: Vec<Table>,
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

/// Formats a metric value with about four significant digits (shared by the page's tables
/// and the charts' tooltips).
fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        return "n/a".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "∞".into() } else { "−∞".into() };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_have_about_four_significant_digits() {
        assert_eq!(fmt_value(0.41234), "0.4123");
        assert_eq!(fmt_value(1234.6), "1235");
        assert_eq!(fmt_value(7.0), "7");
        assert_eq!(fmt_value(f64::NAN), "n/a");
        assert_eq!(fmt_value(-0.00001), "-1.000e-5");
        assert_eq!(fmt_value(f64::INFINITY), "∞");
    }
}
