//! Keyword search over captions for the embedded store (PostgreSQL's full-text search does it
//! for `--store postgres`, [`crate::pg_store`]), and the reciprocal rank fusion of a keyword
//! ranking with the vector ranking.
//!
//! [`KeywordIndex`] is an inverted index kept with the gallery's state: for every term the
//! photos whose captions hold it, counted twice — over all captions, and over the *open*
//! captions only, those that do not describe a child. A search in a restricted region ranks by
//! the open counts and skips restricted photos, so a caption that describes a child is never a
//! route to a photo there. Ranking is BM25 (k1 = 1.2, b = 0.75) with any query term matching.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Terms too common to rank by.
const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "in", "into", "is", "it", "its", "of", "on", "or", "that",
    "the", "their", "there", "this", "to", "with",
];

const K1: f64 = 1.2;
const B: f64 = 0.75;

/// Reciprocal rank fusion's constant (Cormack et al., SIGIR 2009).
pub const RRF_K: f64 = 60.0;

/// A text's search terms: lower-case alphanumeric words of two or more characters, without
/// stopwords, a plural `s` taken off (`dogs` → `dog`).
pub fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .filter(|w| w.chars().count() >= 2 && !STOPWORDS.contains(&w.as_str()))
        .map(|w| match w.strip_suffix('s') {
            Some(stem) if stem.chars().count() >= 3 && !stem.ends_with('s') => stem.to_string(),
            _ => w,
        })
        .collect()
}

/// Term counts of one photo: over all its captions and over its open ones.
#[derive(Clone, Copy, Default)]
struct Counts {
    all: u32,
    open: u32,
}

/// The inverted index of the gallery's captions.
#[derive(Default)]
pub struct KeywordIndex {
    postings: HashMap<String, HashMap<Arc<str>, Counts>>,
    /// Each photo's caption length in terms.
    lengths: HashMap<Arc<str>, Counts>,
    /// Terms summed over all photos.
    total: Counts,
    /// Photos with at least one term (over all captions, over open ones).
    with_terms: Counts,
}

impl KeywordIndex {
    /// Indexes a photo's captions. Take a replaced photo out first with [`KeywordIndex::remove`]
    /// and its old captions; one still indexed is taken out here by a scan of every term.
    pub fn insert(&mut self, id: &Arc<str>, captions: &[String]) {
        if self.lengths.contains_key(id) {
            self.remove(id, None);
        }
        let mut per_term: HashMap<String, Counts> = HashMap::new();
        let mut len = Counts::default();
        for caption in captions {
            let open = imagesearch_compliance::describes_child(caption).is_none();
            for t in terms(caption) {
                let c = per_term.entry(t).or_default();
                c.all += 1;
                len.all += 1;
                if open {
                    c.open += 1;
                    len.open += 1;
                }
            }
        }
        for (t, c) in per_term {
            self.postings.entry(t).or_default().insert(id.clone(), c);
        }
        self.total.all += len.all;
        self.total.open += len.open;
        self.with_terms.all += u32::from(len.all > 0);
        self.with_terms.open += u32::from(len.open > 0);
        self.lengths.insert(id.clone(), len);
    }

    /// Takes a photo out; `captions` are those it was indexed with (all postings are scanned
    /// when they are not known).
    pub fn remove(&mut self, id: &Arc<str>, captions: Option<&[String]>) {
        let Some(len) = self.lengths.remove(id) else { return };
        self.total.all -= len.all;
        self.total.open -= len.open;
        self.with_terms.all -= u32::from(len.all > 0);
        self.with_terms.open -= u32::from(len.open > 0);
        let mut empty = Vec::new();
        let mut drop_from = |t: &str, postings: &mut HashMap<String, HashMap<Arc<str>, Counts>>| {
            if let Some(p) = postings.get_mut(t) {
                p.remove(id);
                if p.is_empty() {
                    empty.push(t.to_string());
                }
            }
        };
        match captions {
            Some(caps) => {
                let ts: HashSet<String> = caps.iter().flat_map(|c| terms(c)).collect();
                for t in ts {
                    drop_from(&t, &mut self.postings);
                }
            }
            None => {
                let ts: Vec<String> = self.postings.keys().cloned().collect();
                for t in ts {
                    drop_from(&t, &mut self.postings);
                }
            }
        }
        for t in empty {
            self.postings.remove(&t);
        }
    }

    /// The best `limit` photos for `query`, best first (equal scores by id), among those
    /// `allowed` lets through; `open_only` ranks by the open captions alone.
    pub fn rank(&self, query: &str, open_only: bool, limit: usize, allowed: impl Fn(&Arc<str>) -> bool) -> Vec<Arc<str>> {
        let pick = |c: &Counts| if open_only { c.open } else { c.all };
        let n = f64::from(pick(&self.with_terms));
        if n == 0.0 || limit == 0 {
            return Vec::new();
        }
        let avg = pick(&self.total) as f64 / n;
        let mut scores: HashMap<&Arc<str>, f64> = HashMap::new();
        let unique: HashSet<String> = terms(query).into_iter().collect();
        for t in &unique {
            let Some(p) = self.postings.get(t) else { continue };
            let df = p.values().filter(|c| pick(c) > 0).count() as f64;
            if df == 0.0 {
                continue;
            }
            let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
            for (id, c) in p {
                let tf = f64::from(pick(c));
                if tf == 0.0 {
                    continue;
                }
                let len = f64::from(self.lengths.get(id).map_or(0, pick));
                *scores.entry(id).or_insert(0.0) += idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * len / avg));
            }
        }
        let mut ranked: Vec<(&Arc<str>, f64)> = scores.into_iter().filter(|(id, _)| allowed(id)).collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        ranked.into_iter().take(limit).map(|(id, _)| id.clone()).collect()
    }
}

/// Fuses a vector ranking and a keyword ranking (each best first) by reciprocal rank fusion,
/// the keyword ranking weighing `w` and the vector ranking `1 − w`; best first, equal values by
/// id. A photo in neither ranking is not in the answer; with `w` = 1 only keyword hits are.
pub fn fuse(vector: &[Arc<str>], keyword: &[Arc<str>], w: f64) -> Vec<Arc<str>> {
    let mut fused: HashMap<&Arc<str>, f64> = HashMap::new();
    if w < 1.0 {
        for (r, id) in vector.iter().enumerate() {
            *fused.entry(id).or_insert(0.0) += (1.0 - w) / (RRF_K + r as f64 + 1.0);
        }
    }
    if w > 0.0 {
        for (r, id) in keyword.iter().enumerate() {
            *fused.entry(id).or_insert(0.0) += w / (RRF_K + r as f64 + 1.0);
        }
    }
    let mut out: Vec<(&Arc<str>, f64)> = fused.into_iter().collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    out.into_iter().map(|(id, _)| id.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<Arc<str>> {
        v.iter().map(|s| Arc::from(*s)).collect()
    }

    #[test]
    fn terms_drop_stopwords_and_plurals() {
        assert_eq!(terms("Two DOGS in the grass!"), vec!["two", "dog", "grass"]);
        assert_eq!(terms("a bus"), vec!["bus"]);
    }

    #[test]
    fn ranks_by_bm25_and_keeps_child_captions_out_of_open_rankings() {
        let mut k = KeywordIndex::default();
        k.insert(&Arc::from("dog"), &["a dog on the grass".into(), "a brown dog".into()]);
        k.insert(&Arc::from("cat"), &["a cat on the grass".into()]);
        k.insert(&Arc::from("kid"), &["a little girl in a pink dress".into(), "a pink balloon".into()]);
        assert_eq!(k.rank("dog", false, 10, |_| true), ids(&["dog"]));
        assert_eq!(k.rank("grass", false, 10, |_| true).len(), 2);
        assert_eq!(k.rank("pink dress", false, 10, |_| true), ids(&["kid"]));
        // The child caption is not matched in an open-only ranking; the harmless one is.
        assert!(k.rank("dress", true, 10, |_| true).is_empty());
        assert_eq!(k.rank("balloon", true, 10, |_| true), ids(&["kid"]));
        assert!(k.rank("balloon", true, 10, |id| &**id != "kid").is_empty());
        // Replacing and removing take the old terms away.
        k.insert(&Arc::from("dog"), &["a red car".into()]);
        assert!(k.rank("dog", false, 10, |_| true).is_empty());
        k.remove(&Arc::from("cat"), Some(&["a cat on the grass".to_string()]));
        assert!(k.rank("grass", false, 10, |_| true).is_empty());
        assert_eq!(k.rank("car", false, 10, |_| true), ids(&["dog"]));
    }

    #[test]
    fn fusion_weighs_the_two_rankings() {
        let v = ids(&["a", "b", "c"]);
        let kw = ids(&["c", "d"]);
        assert_eq!(fuse(&v, &kw, 0.0), ids(&["a", "b", "c"]));
        assert_eq!(fuse(&v, &kw, 1.0), ids(&["c", "d"]));
        let half = fuse(&v, &kw, 0.5);
        assert_eq!(half[0], Arc::from("c"), "in both rankings: first");
        assert_eq!(half.len(), 4);
    }
}
