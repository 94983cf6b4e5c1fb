//! The query detector's data: which texts it learns from and is measured on. It is the photo
//! detector's model (`detector::train`: standardised logistic regression, threshold for a
//! target recall) on text-encoder vectors, so it reads paraphrases the word list misses.
//!
//! - **Learns from** every own caption of the training photos (Flickr8k captions and judged
//!   queries; test photos and the scorer's held-out judged photos stay out), labelled by the
//!   word list ([`imagesearch_compliance::describes_child`]), plus the hand-written, hand-labelled
//!   paraphrases of `trainer/data/query_paraphrases.tsv`.
//! - **Measured on** two held-out hand-written lists, `trainer/data/query_heldout.tsv` and
//!   `query_heldout_2.tsv` (100 child, 100 adult texts each, in other words than the captions
//!   and the training paraphrases; the second written after the first had been used to find
//!   what the word list missed), the test queries and the held-out judged photos' captions
//!   (both labelled by the word list). On the lists it is also measured as the server decides:
//!   child when the word list **or** the detector says so ([`served`]).

use std::collections::{HashMap, HashSet};

use imagesearch_compliance::describes_child;
use imagesearch_model::DetectorWeights;

use crate::dataset::Dataset;
use crate::detector::{Confusion, Described, Example};

/// Hand-labelled training paraphrases: `child|adult<TAB>text` per line.
pub const PARAPHRASES: &str = include_str!("../data/query_paraphrases.tsv");
/// The held-out hand-labelled lists (never trained on), by group name.
pub const HELDOUT: &str = include_str!("../data/query_heldout.tsv");
pub const HELDOUT_2: &str = include_str!("../data/query_heldout_2.tsv");
pub const HELDOUT_LISTS: [(&str, &str); 2] = [("heldout_list", HELDOUT), ("heldout_list_2", HELDOUT_2)];

/// Copies of each hand-written paraphrase in the training pool (an example weight: 400
/// paraphrases beside ~30,000 captions would barely move the fit). Copies share their group,
/// so the split keeps them together.
pub const PARAPHRASE_WEIGHT: usize = 20;

/// How the labels are made, in words (stored in the manifest).
pub const LABEL_RULE: &str = "captions and judged queries: positive when the word list (imagesearch_compliance::describes_child) \
says the text describes a child; hand-written paraphrases (trainer/data/query_paraphrases.tsv): labelled by hand, each counted 20 times";

/// `(positive, text)` of a `label<TAB>text` list; lines that are not `child` or `adult` are
/// skipped.
pub fn parse_list(list: &str) -> Vec<(bool, String)> {
    list.lines()
        .filter_map(|l| {
            let (label, text) = l.split_once('\t')?;
            let positive = match label.trim() {
                "child" => true,
                "adult" => false,
                _ => return None,
            };
            Some((positive, text.trim().to_string())).filter(|(_, t)| !t.is_empty())
        })
        .collect()
}

/// Every text of the two hand-written lists (to be encoded with the rest).
pub fn list_texts() -> Vec<String> {
    let lists = HELDOUT_LISTS.iter().flat_map(|(_, l)| parse_list(l));
    parse_list(PARAPHRASES).into_iter().chain(lists).map(|(_, t)| t).collect()
}

/// How the server judges each text of the held-out lists, by list: the word list alone, and
/// the word list or the detector at `threshold` (a text the word list flags counts as
/// probability 1). Texts without a vector are left out.
pub fn served(texts: &HashMap<String, Vec<f32>>, weights: &DetectorWeights, threshold: f32) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (name, list) in HELDOUT_LISTS {
        let (mut words, mut either, mut labels) = (Vec::new(), Vec::new(), Vec::new());
        for (positive, text) in parse_list(list) {
            let Some(v) = texts.get(&text) else { continue };
            let listed = describes_child(&text).is_some();
            words.push(if listed { 1.0 } else { 0.0 });
            either.push(if listed { 1.0 } else { weights.probability(v) });
            labels.push(positive);
        }
        out.insert(
            name.to_string(),
            serde_json::json!({
                "word_list": Confusion::at(&words, &labels, 0.5),
                "word_list_or_detector": Confusion::at(&either, &labels, threshold),
            }),
        );
    }
    serde_json::Value::Object(out)
}

/// The query detector's description for its manifest entry.
pub fn described(dim: usize) -> Described<'static> {
    Described {
        name: "query detector",
        features: format!("the text-encoder vector of the normalised text ({dim}-d), standardised"),
        labels: LABEL_RULE,
    }
}

/// What the query detector learns from and is measured on.
pub struct QueryExamples {
    pub pool: Vec<Example>,
    /// Named groups only measured on.
    pub groups: Vec<(&'static str, Vec<Example>)>,
}

/// The examples, from the dataset's own captions, the lists and the text vectors (texts
/// without a vector are left out). `heldout` are the scorer's held-out judged photos.
pub fn examples(data: &Dataset, heldout: &HashSet<String>, texts: &HashMap<String, Vec<f32>>) -> QueryExamples {
    let test: HashSet<&str> = data.test_images.iter().map(String::as_str).collect();
    let example = |group: String, text: &str, positive: bool| {
        texts.get(text).map(|v| Example { photo: group, vector: v.clone(), positive })
    };
    let mut pool = Vec::new();
    let mut judged_heldout = Vec::new();
    let mut photos: Vec<&String> = data.own_captions.keys().filter(|p| !test.contains(p.as_str())).collect();
    photos.sort();
    for photo in photos {
        let seen: HashSet<&str> = data.own_captions[photo].iter().map(String::as_str).collect();
        let mut seen: Vec<&str> = seen.into_iter().collect();
        seen.sort();
        let into = if heldout.contains(photo) { &mut judged_heldout } else { &mut pool };
        into.extend(seen.into_iter().filter_map(|t| example(photo.clone(), t, describes_child(t).is_some())));
    }
    for (i, (p, t)) in parse_list(PARAPHRASES).iter().enumerate() {
        pool.extend((0..PARAPHRASE_WEIGHT).filter_map(|_| example(format!("paraphrase:{i}"), t, *p)));
    }
    let mut groups = Vec::new();
    for (name, list) in HELDOUT_LISTS {
        let rows = parse_list(list).iter().enumerate().filter_map(|(i, (p, t))| example(format!("{name}:{i}"), t, *p)).collect();
        groups.push((name, rows));
    }
    let test_queries: Vec<Example> = data
        .test_queries
        .iter()
        .filter_map(|q| example(q.image.clone(), &q.text, describes_child(&q.text).is_some()))
        .collect();
    groups.push(("test_queries", test_queries));
    groups.push(("judged_heldout", judged_heldout));
    QueryExamples { pool, groups }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lists_parse_and_do_not_overlap() {
        let train = parse_list(PARAPHRASES);
        assert!(train.iter().filter(|(p, _)| *p).count() >= 100, "training paraphrases of children");
        assert!(train.iter().filter(|(p, _)| !*p).count() >= 100, "training adult texts");
        let norm = |t: &str| imagesearch_compliance::normalize(t);
        let mut seen: HashSet<String> = train.iter().map(|(_, t)| norm(t)).collect();
        for (name, list) in HELDOUT_LISTS {
            let held = parse_list(list);
            assert_eq!(held.iter().filter(|(p, _)| *p).count(), 100, "{name}");
            assert_eq!(held.iter().filter(|(p, _)| !*p).count(), 100, "{name}");
            for (_, t) in &held {
                assert!(seen.insert(norm(t)), "{name}: text also in training or another list: {t}");
            }
        }
        let held = parse_list(HELDOUT);
        for must in ["a little fella on a pony", "a mom pushing a pram", "three young sisters", "the junior high band"] {
            assert!(held.iter().any(|(p, t)| *p && t == must), "{must} is in the held-out list");
        }
        assert_eq!(parse_list("child\ta tot\nnonsense line\nadult\t \nadult\ta man"), vec![
            (true, "a tot".to_string()),
            (false, "a man".to_string())
        ]);
    }
}
