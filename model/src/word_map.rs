//! The query word map: child words the scorer never trained on — the law keeps every caption
//! that describes a child out of training — replaced by adult words it did train on (`boy` →
//! `man`, `children` → `people`), in queries the law lets through (open regions). The table is
//! data (`model/data/query_words.tsv`); a version names the table it was chosen and measured
//! with in its manifest (`query_word_map`, the table's id), and only then is it applied.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::LazyLock;

use sha2::{Digest, Sha256};

/// The built-in table, `from<TAB>to` per line, `#` comments.
pub const QUERY_WORDS_TSV: &str = include_str!("../data/query_words.tsv");

/// A whole-word replacement table for query texts.
#[derive(Debug, Clone)]
pub struct WordMap {
    words: HashMap<String, String>,
    id: String,
}

static BUILTIN: LazyLock<WordMap> =
    LazyLock::new(|| WordMap::parse(QUERY_WORDS_TSV).expect("the built-in query word map parses (tested)"));

impl WordMap {
    /// The table compiled into this build.
    pub fn builtin() -> &'static WordMap {
        &BUILTIN
    }

    /// Reads a `from<TAB>to` table; lines starting with `#` and blank lines are skipped.
    pub fn parse(tsv: &str) -> Result<WordMap, String> {
        let mut words = HashMap::new();
        for (n, line) in tsv.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let (from, to) = line.split_once('\t').ok_or_else(|| format!("line {}: expected from<TAB>to", n + 1))?;
            let (from, to) = (from.trim(), to.trim());
            if from.is_empty() || to.is_empty() || from.chars().any(|c| !c.is_alphanumeric()) || from != from.to_lowercase() {
                return Err(format!("line {}: '{from}' must be one lower-case word with a replacement", n + 1));
            }
            if words.insert(from.to_string(), to.to_string()).is_some() {
                return Err(format!("line {}: '{from}' appears twice", n + 1));
            }
        }
        let mut sorted: Vec<_> = words.iter().collect();
        sorted.sort();
        let mut h = Sha256::new();
        for (from, to) in sorted {
            h.update(from.as_bytes());
            h.update(b"\t");
            h.update(to.as_bytes());
            h.update(b"\n");
        }
        let id = format!("query-words-{}", &hex::encode(h.finalize())[..16]);
        Ok(WordMap { words, id })
    }

    /// Names the table's content (what a manifest records): `query-words-<sha256 prefix>`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The (from, to) pairs, in no particular order.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.words.iter().map(|(f, t)| (f.as_str(), t.as_str()))
    }

    /// `text` with every mapped word replaced. Words are maximal runs of letters and digits
    /// (apostrophes inside), compared in lower case after a possessive `'s` or `'` is set
    /// aside and put back after the replacement (`boys'` → `men's`); everything else is kept as it is. Borrowed
    /// when nothing changes.
    pub fn apply<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out: Option<String> = None;
        let mut copied = 0;
        for (start, end) in words(text) {
            let word = &text[start..end];
            let (stem, possessive) = split_possessive(word);
            let Some(to) = self.words.get(&stem.to_lowercase()) else { continue };
            let o = out.get_or_insert_with(|| String::with_capacity(text.len() + 16));
            o.push_str(&text[copied..start]);
            o.push_str(to);
            // `boys'` → `men's`: a bare apostrophe only follows a plural in s.
            o.push_str(if matches!(possessive, "'" | "’") && !to.ends_with('s') { "'s" } else { possessive });
            copied = end;
        }
        match out {
            None => Cow::Borrowed(text),
            Some(mut o) => {
                o.push_str(&text[copied..]);
                Cow::Owned(o)
            }
        }
    }
}

fn is_apostrophe(c: char) -> bool {
    c == '\'' || c == '’'
}

/// Byte ranges of the words of `text`: runs of alphanumerics, apostrophes allowed inside and
/// at the end (`boys'`).
fn words(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let next_is_word = chars.peek().is_some_and(|(_, n)| n.is_alphanumeric());
        let in_word = c.is_alphanumeric() || (start.is_some() && is_apostrophe(c));
        match (start, in_word) {
            (None, true) => start = Some(i),
            (Some(s), false) => {
                out.push((s, i));
                start = None;
            }
            _ => {}
        }
        // An apostrophe ends the word unless a letter follows or it closes a plural (`boys'`).
        if let Some(s) = start {
            if is_apostrophe(c) && !next_is_word {
                out.push((s, i + c.len_utf8()));
                start = None;
            }
        }
    }
    if let Some(s) = start {
        out.push((s, text.len()));
    }
    out
}

/// (`boy`, `'s`) of `boy's`; (`boys`, `'`) of `boys'`; (`word`, ``) otherwise.
fn split_possessive(word: &str) -> (&str, &str) {
    for suffix in ["'s", "’s", "'", "’"] {
        if let Some(stem) = word.strip_suffix(suffix) {
            if !stem.is_empty() {
                return (stem, &word[stem.len()..]);
            }
        }
    }
    (word, "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use imagesearch_compliance::describes_child;

    #[test]
    fn whole_words_are_replaced_and_the_rest_is_kept() {
        let m = WordMap::builtin();
        assert_eq!(m.apply("a little boy on a pony"), "a little man on a pony");
        assert_eq!(m.apply("Two Girls, three boys."), "Two women, three men.");
        assert_eq!(m.apply("the boy's kite and the boys' bikes"), "the man's kite and the men's bikes");
        assert_eq!(m.apply("a teen girl"), "a young woman");
        assert!(matches!(m.apply("a cowboy with his boyfriend"), Cow::Borrowed(_)));
        assert!(matches!(m.apply(""), Cow::Borrowed(_)));
        assert_eq!(m.apply("kids"), "people");
    }

    #[test]
    fn every_entry_maps_a_child_word_to_words_that_describe_no_child() {
        let m = WordMap::builtin();
        assert!(m.pairs().count() > 50);
        for (from, to) in m.pairs() {
            assert!(describes_child(from).is_some(), "'{from}' is not a word of the child lexicon");
            assert!(describes_child(to).is_none(), "'{to}' (for '{from}') describes a child");
        }
        // The most frequent child words in captions are covered.
        for w in ["boy", "boys", "girl", "girls", "child", "children", "kid", "kids", "baby", "toddler", "son", "daughter"] {
            assert!(m.apply(w) != w, "'{w}' is not mapped");
        }
    }

    #[test]
    fn the_id_names_the_content_and_bad_tables_are_refused() {
        let a = WordMap::parse("boy\tman\ngirl\twoman\n").unwrap();
        let b = WordMap::parse("# comment\ngirl\twoman\nboy\tman\n").unwrap();
        let c = WordMap::parse("boy\tperson\ngirl\twoman\n").unwrap();
        assert_eq!(a.id(), b.id());
        assert_ne!(a.id(), c.id());
        assert!(a.id().starts_with("query-words-"));
        assert!(WordMap::parse("boy man").is_err());
        assert!(WordMap::parse("Boy\tman").is_err());
        assert!(WordMap::parse("boy\tman\nboy\tperson").is_err());
        assert!(WordMap::parse("little boy\tman").is_err());
    }
}
