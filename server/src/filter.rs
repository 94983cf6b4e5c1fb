//! What is stored with a photo besides its content — the attributes its uploader gave (owner,
//! album, camera, place …) and when it was added — and the search filter over them: checked
//! once at the edge, evaluated in memory for the in-memory index and turned into SQL
//! ([`crate::pg_filter`]) for an index in the database.

use std::collections::BTreeMap;

use imagesearch_compliance::quote;

use crate::error::ServeError;
use crate::gallery::PhotoMeta;

/// Most attributes on one photo.
pub const MAX_PHOTO_ATTRIBUTES: usize = 32;
/// Most conditions in one filter, and most values in one condition.
pub const MAX_FILTER_CONDITIONS: usize = 16;
pub const MAX_CONDITION_VALUES: usize = 64;
/// Longest attribute key and value, in characters.
pub const MAX_KEY_CHARS: usize = 64;
pub const MAX_VALUE_CHARS: usize = 256;

/// A photo's attributes, sorted by key (one value per key).
pub type Attributes = Vec<(String, String)>;

fn check_key(key: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-');
    if key.is_empty() || key.chars().count() > MAX_KEY_CHARS || !key.chars().all(ok_char) {
        return Err(format!("attribute key '{}' must be 1..={MAX_KEY_CHARS} characters of [a-z0-9_.-]", quote(key, 64)));
    }
    Ok(())
}

fn check_value(key: &str, value: &str) -> Result<(), String> {
    if value.chars().count() > MAX_VALUE_CHARS || value.chars().any(char::is_control) {
        return Err(format!(
            "attribute '{key}' has a value '{}' longer than {MAX_VALUE_CHARS} characters or with control characters",
            quote(value, 64)
        ));
    }
    Ok(())
}

/// Checks an upload's attributes and sorts them by key; the error names the first problem.
pub fn check_attributes(given: impl IntoIterator<Item = (String, String)>) -> Result<Attributes, String> {
    let sorted: BTreeMap<String, String> = given.into_iter().collect();
    if sorted.len() > MAX_PHOTO_ATTRIBUTES {
        return Err(format!("{} attributes, at most {MAX_PHOTO_ATTRIBUTES} are allowed", sorted.len()));
    }
    for (k, v) in &sorted {
        check_key(k)?;
        check_value(k, v)?;
    }
    Ok(sorted.into_iter().collect())
}

/// Holds when attribute `key` equals one of `any_of`.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub key: String,
    pub any_of: Vec<String>,
}

/// The photos a search ranks: every condition holds and the photo was added in
/// `[added_from_ms, added_before_ms)` (unbounded where `None`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PhotoFilter {
    pub conditions: Vec<Condition>,
    pub added_from_ms: Option<i64>,
    pub added_before_ms: Option<i64>,
}

impl PhotoFilter {
    /// Whether the filter lets every photo through.
    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty() && self.added_from_ms.is_none() && self.added_before_ms.is_none()
    }

    /// Checks the filter against the limits (INVALID_ARGUMENT naming the problem); sorts
    /// conditions and values so equal filters have one [`PhotoFilter::canonical`] form.
    pub fn checked(mut self) -> Result<Self, ServeError> {
        let bad = |m: String| ServeError::InvalidArgument(format!("filter: {m}"));
        if self.conditions.len() > MAX_FILTER_CONDITIONS {
            return Err(bad(format!("{} conditions, at most {MAX_FILTER_CONDITIONS} are allowed", self.conditions.len())));
        }
        for c in &mut self.conditions {
            check_key(&c.key).map_err(bad)?;
            if c.any_of.is_empty() || c.any_of.len() > MAX_CONDITION_VALUES {
                return Err(bad(format!("the condition on '{}' has {} values, it needs 1..={MAX_CONDITION_VALUES}", c.key, c.any_of.len())));
            }
            for v in &c.any_of {
                check_value(&c.key, v).map_err(bad)?;
            }
            c.any_of.sort();
            c.any_of.dedup();
        }
        self.conditions.sort_by(|a, b| a.key.cmp(&b.key).then_with(|| a.any_of.cmp(&b.any_of)));
        if let (Some(from), Some(before)) = (self.added_from_ms, self.added_before_ms) {
            if from >= before {
                return Err(bad(format!("added_from_unix_ms {from} is not before added_before_unix_ms {before}")));
            }
        }
        Ok(self)
    }

    /// Whether a photo passes.
    pub fn matches(&self, p: &PhotoMeta) -> bool {
        self.added_from_ms.is_none_or(|t| p.added_ms >= t)
            && self.added_before_ms.is_none_or(|t| p.added_ms < t)
            && self.conditions.iter().all(|c| {
                p.attributes.binary_search_by(|(k, _)| k.as_str().cmp(&c.key)).is_ok_and(|i| c.any_of.contains(&p.attributes[i].1))
            })
    }

    /// A text that is equal for equal (checked) filters, for page tokens.
    pub fn canonical(&self) -> String {
        let conds: Vec<String> = self.conditions.iter().map(|c| format!("{}={}", c.key, c.any_of.join("\u{1}"))).collect();
        format!("{:?}|{:?}|{}", self.added_from_ms, self.added_before_ms, conds.join("\u{2}"))
    }

    /// The same filter, also leaving out photos added at or after `ms`.
    pub fn added_before(&self, ms: i64) -> PhotoFilter {
        let mut f = self.clone();
        f.added_before_ms = Some(f.added_before_ms.map_or(ms, |t| t.min(ms)));
        f
    }
}

/// Now in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::wal::Flag;

    fn photo(attrs: &[(&str, &str)], added_ms: i64) -> PhotoMeta {
        PhotoMeta {
            id: Arc::from("p"),
            sha256: [0; 32],
            mime: "image/png".into(),
            captions: vec![],
            flag: Flag::Clear,
            vector: Arc::new(vec![]),
            attributes: Arc::new(check_attributes(attrs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()),
            added_ms,
        }
    }

    fn cond(key: &str, any_of: &[&str]) -> Condition {
        Condition { key: key.into(), any_of: any_of.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn conditions_all_hold_values_any_of() {
        let p = photo(&[("owner", "ana"), ("album", "tokyo")], 1_000);
        let f = |c: Vec<Condition>| PhotoFilter { conditions: c, ..Default::default() }.checked().unwrap();
        assert!(f(vec![cond("owner", &["bo", "ana"])]).matches(&p));
        assert!(f(vec![cond("owner", &["ana"]), cond("album", &["tokyo"])]).matches(&p));
        assert!(!f(vec![cond("owner", &["ana"]), cond("album", &["paris"])]).matches(&p));
        assert!(!f(vec![cond("camera", &["x"])]).matches(&p), "a missing attribute never matches");
        assert!(f(vec![]).matches(&p));
    }

    #[test]
    fn added_times_bound_from_inclusive_before_exclusive() {
        let p = photo(&[], 1_000);
        let f = |a, b| PhotoFilter { added_from_ms: a, added_before_ms: b, ..Default::default() };
        assert!(f(Some(1_000), None).matches(&p));
        assert!(!f(Some(1_001), None).matches(&p));
        assert!(!f(None, Some(1_000)).matches(&p));
        assert!(f(None, Some(1_001)).matches(&p));
        assert!(!f(None, None).added_before(1_000).matches(&p));
        assert!(f(Some(5), Some(5)).checked().is_err());
    }

    #[test]
    fn bad_attributes_and_filters_are_named() {
        let e = check_attributes([("Owner".to_string(), "x".to_string())]).unwrap_err();
        assert!(e.contains("Owner"), "{e}");
        let e = check_attributes([("place".to_string(), "a\u{0}b".to_string())]).unwrap_err();
        assert!(e.contains("control"), "{e}");
        let many = (0..=MAX_PHOTO_ATTRIBUTES).map(|i| (format!("k{i}"), String::new()));
        assert!(check_attributes(many).is_err());
        let f = PhotoFilter { conditions: vec![cond("owner", &[])], ..Default::default() };
        assert!(f.checked().unwrap_err().to_string().contains("owner"));
        let a = PhotoFilter { conditions: vec![cond("b", &["2", "1"]), cond("a", &["x"])], ..Default::default() }.checked().unwrap();
        let b = PhotoFilter { conditions: vec![cond("a", &["x"]), cond("b", &["1", "2", "1"])], ..Default::default() }.checked().unwrap();
        assert_eq!(a.canonical(), b.canonical());
    }
}
