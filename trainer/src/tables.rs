//! Reading and validating the dataset's tables with polars.
//!
//! Every table is read as strings (no type inference), then each row is checked and turned
//! into a typed record. A bad row becomes a [`Problem`] naming file, line and reason; the caller
//! decides whether problems stop the run or are skipped and counted (`--skip-bad-rows`).

use std::collections::{HashMap, HashSet};
use std::io::Cursor;
use std::path::{Path, PathBuf};

use polars::prelude::*;

/// One bad row (or file-level problem).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    /// 1-based physical line; 0 for a file-level problem.
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.reason)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.reason)
        }
    }
}

/// A table that could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
}

/// `<image file>#<n>`: the n-th caption written for an image.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueryId {
    pub image: String,
    pub n: u32,
}

impl QueryId {
    /// Parses `<image>#<n>`; the image part must be a valid image file name.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (image, n) = s
            .rsplit_once('#')
            .ok_or_else(|| format!("query id '{s}' is not of the form <image>#<n>"))?;
        check_image_name(image)?;
        let n = n
            .parse::<u32>()
            .map_err(|_| format!("query id '{s}': caption number '{n}' is not a number"))?;
        Ok(QueryId { image: image.to_string(), n })
    }
}

impl std::fmt::Display for QueryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.image, self.n)
    }
}

/// Checks an image file name: a plain `.jpg`/`.jpeg`/`.png` name, no directories.
pub fn check_image_name(name: &str) -> Result<(), String> {
    let lower = name.to_ascii_lowercase();
    if name.is_empty() {
        return Err("image name is empty".into());
    }
    if name.contains('/') || name.contains('\\') || name.starts_with('.') {
        return Err(format!("image name '{name}' must be a plain file name"));
    }
    if !(lower.ends_with(".jpg") || lower.ends_with(".jpeg") || lower.ends_with(".png")) {
        return Err(format!("image name '{name}' is not a .jpg/.jpeg/.png file"));
    }
    Ok(())
}

/// One row of `train_dataset.csv`.
#[derive(Clone, Debug)]
pub struct TrainQuery {
    pub line: usize,
    pub image: String,
    pub query: QueryId,
    pub text: String,
}

/// One row of `ExpertAnnotations.tsv`: three experts' ratings 1..4.
#[derive(Clone, Debug)]
pub struct ExpertRow {
    pub line: usize,
    pub image: String,
    pub query: QueryId,
    pub ratings: [u8; 3],
}

/// One row of `CrowdAnnotations.tsv`: share of yes votes and the vote counts.
#[derive(Clone, Debug)]
pub struct CrowdRow {
    pub line: usize,
    pub image: String,
    pub query: QueryId,
    pub share: f64,
    pub yes: u32,
    pub no: u32,
}

/// One row of `test_queries.csv`.
#[derive(Clone, Debug)]
pub struct TestQuery {
    pub line: usize,
    pub query: QueryId,
    pub text: String,
    pub image: String,
}

/// One caption of `Flickr8k.token.txt`.
#[derive(Clone, Debug)]
pub struct Caption {
    pub line: usize,
    pub query: QueryId,
    pub text: String,
}

/// A table as strings, with each row's physical line number.
struct RawTable {
    file: String,
    lines: Vec<usize>,
    columns: Vec<Vec<Option<String>>>,
}

impl RawTable {
    fn rows(&self) -> impl Iterator<Item = (usize, Vec<Option<&str>>)> + '_ {
        (0..self.lines.len())
            .map(move |i| (self.lines[i], self.columns.iter().map(|c| c[i].as_deref()).collect()))
    }
}

/// One physical record: its line, field count, and whether it is blank.
struct Record {
    line: usize,
    fields: usize,
    blank: bool,
}

/// Splits the text into records (a quoted field may hold the separator), with each record's
/// line and field count. Blank lines are kept (polars reads them as empty rows) but marked.
fn scan_records(text: &str, sep: u8, quote: Option<u8>) -> Vec<Record> {
    let body = text.strip_suffix('\n').unwrap_or(text);
    let mut out = Vec::new();
    for (i, raw) in body.split('\n').enumerate() {
        let record = raw.strip_suffix('\r').unwrap_or(raw);
        let mut fields = 1;
        let mut in_quotes = false;
        for &b in record.as_bytes() {
            if Some(b) == quote {
                in_quotes = !in_quotes;
            } else if b == sep && !in_quotes {
                fields += 1;
            }
        }
        out.push(Record { line: i + 1, fields, blank: record.trim().is_empty() });
    }
    if text.is_empty() {
        out.clear();
    }
    out
}

/// Reads a delimited file with polars as all-string columns; ragged rows become problems.
fn read_raw(
    path: &Path,
    sep: u8,
    quote: Option<u8>,
    header: Option<&[&str]>,
    n_fields: usize,
    problems: &mut Vec<Problem>,
) -> Result<RawTable, TableError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| TableError::Io { path: path.into(), source })?;
    let text = std::str::from_utf8(&bytes).map_err(|e| TableError::Format {
        path: path.into(),
        reason: format!("not UTF-8 ({e})"),
    })?;
    let mut records = scan_records(text, sep, quote);
    if let Some(expected) = header {
        let first = text.lines().next().unwrap_or("").trim_end_matches('\r');
        let names: Vec<&str> = first.split(sep as char).map(str::trim).collect();
        if names != expected {
            return Err(TableError::Format {
                path: path.into(),
                reason: format!("header is {names:?}, expected {expected:?}"),
            });
        }
        if !records.is_empty() {
            records.remove(0);
        }
    }
    for r in records.iter().filter(|r| !r.blank && r.fields != n_fields) {
        problems.push(Problem {
            file: file.clone(),
            line: r.line,
            reason: format!("expected {n_fields} fields, found {}", r.fields),
        });
    }
    let parse = CsvParseOptions::default()
        .with_separator(sep)
        .with_quote_char(quote)
        .with_truncate_ragged_lines(true);
    let df = CsvReadOptions::default()
        .with_has_header(header.is_some())
        .with_infer_schema_length(Some(0))
        .with_parse_options(parse)
        .into_reader_with_file_handle(Cursor::new(bytes.clone()))
        .finish()
        .map_err(|e| TableError::Format { path: path.into(), reason: e.to_string() })?;
    // polars reads inner blank lines as empty rows; trailing ones may or may not be rows.
    while df.height() < records.len() && records.last().is_some_and(|r| r.blank) {
        records.pop();
    }
    if df.height() != records.len() {
        return Err(TableError::Format {
            path: path.into(),
            reason: format!(
                "polars read {} rows but the file has {} records; is the quoting broken?",
                df.height(),
                records.len()
            ),
        });
    }
    let mut columns = Vec::with_capacity(n_fields);
    for i in 0..n_fields {
        let col = match df.columns().get(i) {
            Some(c) => c
                .str()
                .map_err(|e| TableError::Format { path: path.into(), reason: e.to_string() })?
                .iter()
                .map(|v| v.map(str::to_string))
                .collect(),
            None => vec![None; df.height()],
        };
        columns.push(col);
    }
    // Drop ragged rows: they were reported above and their fields cannot be trusted.
    let ragged: HashSet<usize> = problems.iter().filter(|p| p.file == file).map(|p| p.line).collect();
    let mut table = RawTable { file, lines: Vec::new(), columns: vec![Vec::new(); n_fields] };
    for (i, r) in records.iter().enumerate() {
        if r.blank || ragged.contains(&r.line) {
            continue;
        }
        table.lines.push(r.line);
        for (c, col) in columns.iter_mut().enumerate() {
            table.columns[c].push(col[i].take());
        }
    }
    Ok(table)
}

/// Collects a row's problems while its fields are parsed.
struct RowCheck<'a> {
    file: &'a str,
    line: usize,
    problems: &'a mut Vec<Problem>,
    ok: bool,
}

impl<'a> RowCheck<'a> {
    fn fail(&mut self, reason: impl Into<String>) {
        self.ok = false;
        self.problems.push(Problem { file: self.file.to_string(), line: self.line, reason: reason.into() });
    }

    fn text(&mut self, name: &str, v: Option<&str>) -> Option<String> {
        match v.map(str::trim) {
            Some(s) if !s.is_empty() => Some(s.to_string()),
            _ => {
                self.fail(format!("{name} is empty"));
                None
            }
        }
    }

    fn image(&mut self, name: &str, v: Option<&str>) -> Option<String> {
        let s = self.text(name, v)?;
        match check_image_name(&s) {
            Ok(()) => Some(s),
            Err(e) => {
                self.fail(e);
                None
            }
        }
    }

    fn query(&mut self, v: Option<&str>) -> Option<QueryId> {
        let s = self.text("query id", v)?;
        match QueryId::parse(&s) {
            Ok(q) => Some(q),
            Err(e) => {
                self.fail(e);
                None
            }
        }
    }

    fn number<T: std::str::FromStr>(&mut self, name: &str, v: Option<&str>) -> Option<T> {
        let s = self.text(name, v)?;
        match s.parse::<T>() {
            Ok(x) => Some(x),
            Err(_) => {
                self.fail(format!("{name} '{s}' is not a valid number"));
                None
            }
        }
    }
}

fn check_row<'a, T>(
    file: &'a str,
    line: usize,
    problems: &'a mut Vec<Problem>,
    f: impl FnOnce(&mut RowCheck<'a>) -> Option<T>,
) -> Option<T> {
    let mut check = RowCheck { file, line, problems, ok: true };
    let value = f(&mut check);
    if check.ok {
        value
    } else {
        None
    }
}

/// Keeps the first row of each (image, query) pair; a repeat is reported as a problem.
fn keep_first<T>(
    seen: &mut HashSet<(String, QueryId)>,
    key: (String, QueryId),
    row: T,
    out: &mut Vec<T>,
    problems: &mut Vec<Problem>,
    file: &str,
    line: usize,
) {
    if seen.contains(&key) {
        problems.push(Problem {
            file: file.to_string(),
            line,
            reason: format!("pair ({}, {}) is judged twice", key.0, key.1),
        });
    } else {
        seen.insert(key);
        out.push(row);
    }
}

/// Reads `train_dataset.csv` (`image,query_id,query_text`).
pub fn read_train_queries(path: &Path, problems: &mut Vec<Problem>) -> Result<Vec<TrainQuery>, TableError> {
    let raw = read_raw(path, b',', Some(b'"'), Some(&["image", "query_id", "query_text"]), 3, problems)?;
    let mut out = Vec::new();
    let mut texts: HashMap<QueryId, String> = HashMap::new();
    for (line, f) in raw.rows() {
        let row = check_row(&raw.file, line, problems, |c| {
            let image = c.image("image", f[0]);
            let query = c.query(f[1]);
            let text = c.text("query text", f[2]);
            Some(TrainQuery { line, image: image?, query: query?, text: text? })
        });
        if let Some(row) = row {
            match texts.get(&row.query) {
                Some(seen) if seen != &row.text => problems.push(Problem {
                    file: raw.file.clone(),
                    line,
                    reason: format!("query {} has a different text than on an earlier line", row.query),
                }),
                _ => {
                    texts.insert(row.query.clone(), row.text.clone());
                    out.push(row);
                }
            }
        }
    }
    Ok(out)
}

/// Reads `ExpertAnnotations.tsv` (no header: `image, query_id, e1, e2, e3`, ratings 1..4).
pub fn read_expert(path: &Path, problems: &mut Vec<Problem>) -> Result<Vec<ExpertRow>, TableError> {
    let raw = read_raw(path, b'\t', None, None, 5, problems)?;
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (line, f) in raw.rows() {
        let row = check_row(&raw.file, line, problems, |c| {
            let image = c.image("image", f[0]);
            let query = c.query(f[1]);
            let mut ratings = [0u8; 3];
            for (i, r) in ratings.iter_mut().enumerate() {
                match c.number::<u8>(&format!("expert rating {}", i + 1), f[2 + i]) {
                    Some(v @ 1..=4) => *r = v,
                    Some(v) => c.fail(format!("expert rating {} is {v}, expected 1..4", i + 1)),
                    None => {}
                }
            }
            Some(ExpertRow { line, image: image?, query: query?, ratings })
        });
        if let Some(row) = row {
            let key = (row.image.clone(), row.query.clone());
            keep_first(&mut seen, key, row, &mut out, problems, &raw.file, line);
        }
    }
    Ok(out)
}

/// Reads `CrowdAnnotations.tsv` (no header: `image, query_id, share_yes, n_yes, n_no`).
pub fn read_crowd(path: &Path, problems: &mut Vec<Problem>) -> Result<Vec<CrowdRow>, TableError> {
    let raw = read_raw(path, b'\t', None, None, 5, problems)?;
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (line, f) in raw.rows() {
        let row = check_row(&raw.file, line, problems, |c| {
            let image = c.image("image", f[0]);
            let query = c.query(f[1]);
            let share = c.number::<f64>("share of yes votes", f[2]);
            let yes = c.number::<u32>("yes votes", f[3]);
            let no = c.number::<u32>("no votes", f[4]);
            if let (Some(share), Some(yes), Some(no)) = (share, yes, no) {
                if yes + no == 0 {
                    c.fail("no crowd votes (0 yes, 0 no)");
                } else {
                    let expected = f64::from(yes) / f64::from(yes + no);
                    if !(0.0..=1.0).contains(&share) || (share - expected).abs() > 0.01 {
                        c.fail(format!(
                            "share of yes votes {share} disagrees with {yes} yes / {no} no ({expected:.3})"
                        ));
                    }
                }
            }
            Some(CrowdRow { line, image: image?, query: query?, share: share?, yes: yes?, no: no? })
        });
        if let Some(row) = row {
            let key = (row.image.clone(), row.query.clone());
            keep_first(&mut seen, key, row, &mut out, problems, &raw.file, line);
        }
    }
    Ok(out)
}

/// Reads `test_queries.csv` (`|`-separated, header `,query_id,query_text,image`).
pub fn read_test_queries(path: &Path, problems: &mut Vec<Problem>) -> Result<Vec<TestQuery>, TableError> {
    let raw = read_raw(path, b'|', Some(b'"'), Some(&["", "query_id", "query_text", "image"]), 4, problems)?;
    let mut out = Vec::new();
    for (line, f) in raw.rows() {
        let row = check_row(&raw.file, line, problems, |c| {
            let query = c.query(f[1]);
            let text = c.text("query text", f[2]);
            let image = c.image("image", f[3]);
            if let (Some(q), Some(img)) = (&query, &image) {
                if &q.image != img {
                    c.fail(format!("query {q} was written for {}, but the row names {img}", q.image));
                }
            }
            Some(TestQuery { line, query: query?, text: text?, image: image? })
        });
        out.extend(row);
    }
    Ok(out)
}

/// Reads `test_images.csv` (header `image`).
pub fn read_image_list(path: &Path, problems: &mut Vec<Problem>) -> Result<Vec<String>, TableError> {
    let raw = read_raw(path, b',', Some(b'"'), Some(&["image"]), 1, problems)?;
    let mut out = Vec::new();
    for (line, f) in raw.rows() {
        out.extend(check_row(&raw.file, line, problems, |c| c.image("image", f[0])));
    }
    Ok(out)
}

/// Reads Flickr8k's `Flickr8k.token.txt` (`<image>#<n>\t<caption>`, no quoting).
pub fn read_captions(path: &Path, problems: &mut Vec<Problem>) -> Result<Vec<Caption>, TableError> {
    let raw = read_raw(path, b'\t', None, None, 2, problems)?;
    let mut out = Vec::new();
    for (line, f) in raw.rows() {
        out.extend(check_row(&raw.file, line, problems, |c| {
            let query = c.query(f[0]);
            let text = c.text("caption", f[1]);
            Some(Caption { line, query: query?, text: text? })
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn query_ids() {
        let q = QueryId::parse("1056338697_4f7d7ce270.jpg#2").unwrap();
        assert_eq!((q.image.as_str(), q.n), ("1056338697_4f7d7ce270.jpg", 2));
        assert!(QueryId::parse("1056338697_4f7d7ce270.jpg").is_err());
        assert!(QueryId::parse("foo.txt#1").is_err());
        assert!(QueryId::parse("a.jpg#x").is_err());
    }

    #[test]
    fn expert_rows_are_validated_with_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "e.tsv",
            "a.jpg\tb.jpg#2\t1\t1\t2\n\
             a.jpg\tb.jpg#3\t1\t5\t2\n\
             a.jpg\tnot-an-id\t1\t1\t1\n\
             a.jpg\tb.jpg#4\t1\t1\n\
             \n\
             c.jpg\tb.jpg#2\t4\tx\t3\n\
             a.jpg\tb.jpg#2\t2\t2\t2\n\
             d.jpg\te.jpg#0\t4\t4\t3\n",
        );
        let mut problems = Vec::new();
        let rows = read_expert(&p, &mut problems).unwrap();
        let lines: Vec<usize> = rows.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![1, 8]);
        assert_eq!(rows[1].ratings, [4, 4, 3]);
        let bad: Vec<(usize, &str)> = problems.iter().map(|p| (p.line, p.reason.as_str())).collect();
        assert!(bad.iter().any(|(l, r)| *l == 2 && r.contains("expected 1..4")), "{bad:?}");
        assert!(bad.iter().any(|(l, r)| *l == 3 && r.contains("not of the form")), "{bad:?}");
        assert!(bad.iter().any(|(l, r)| *l == 4 && r.contains("expected 5 fields, found 4")), "{bad:?}");
        assert!(bad.iter().any(|(l, r)| *l == 6 && r.contains("not a valid number")), "{bad:?}");
        assert!(bad.iter().any(|(l, r)| *l == 7 && r.contains("judged twice")), "{bad:?}");
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(problems[0].to_string().starts_with(&format!("{}:", p.display())));
    }

    #[test]
    fn crowd_share_must_match_counts() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "c.tsv",
            "a.jpg\tb.jpg#2\t0.333333\t1\t2\na.jpg\tb.jpg#3\t1\t0\t3\na.jpg\tb.jpg#4\t0\t0\t0\n",
        );
        let mut problems = Vec::new();
        let rows = read_crowd(&p, &mut problems).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].yes, rows[0].no), (1, 2));
        assert_eq!(problems.len(), 2);
        assert!(problems[0].reason.contains("disagrees"));
        assert!(problems[1].reason.contains("no crowd votes"));
    }

    #[test]
    fn quoted_csv_and_headers() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "t.csv",
            "image,query_id,query_text\n\
             a.jpg,b.jpg#2,\"A boy , in a tube .\"\n\
             a.jpg,b.jpg#3,A dog runs .\n\
             c.jpg,b.jpg#3,A cat runs .\n",
        );
        let mut problems = Vec::new();
        let rows = read_train_queries(&p, &mut problems).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].text, "A boy , in a tube .");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line, 4);

        let wrong = write(dir.path(), "w.csv", "img,query_id,query_text\na.jpg,b.jpg#2,x\n");
        assert!(matches!(read_train_queries(&wrong, &mut Vec::new()), Err(TableError::Format { .. })));
    }

    #[test]
    fn test_queries_pipe_separated() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "q.csv",
            "|query_id|query_text|image\n0|a.jpg#0|Two boys .|a.jpg\n1|a.jpg#1|A dog .|b.jpg\n",
        );
        let mut problems = Vec::new();
        let rows = read_test_queries(&p, &mut problems).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].reason.contains("was written for a.jpg"));
    }
}
