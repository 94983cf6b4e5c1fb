//! The child lexicon: the one definition of "this text describes a child" (anyone
//! under [`CHILD_AGE_LIMIT`] years) shared by the trainer, the server and the client.
//!
//! # How text is read
//!
//! The text read is [`normalize`]`(text)`, exactly what the text encoder reads:
//! invisible characters, accents and lookalike letters are gone (`k\u{200B}íds`,
//! `ｋｉｄｓ`, `bоys` with a Cyrillic `о` all read as plain words), and
//! [`ChildMatch`] offsets refer to that normalized text. It is split into words: maximal runs of letters and digits, with apostrophes
//! allowed inside a word (`boy's`) and a `.` allowed between two digits (`1.5`).
//! Everything else — spaces, punctuation, hyphens — separates words. Words are
//! compared in lower case after a possessive `'s` or `'` is removed (`’` counts as an
//! apostrophe), so `Boy's`, `BOYS'` and `children’s` find `boy`, `boys` and `children`.
//!
//! Matching is by whole word against an explicit list of inflections, never by
//! substring: `kidney`, `kidnap`, `cowboy`, `cowgirl`, `boyfriend`, `girlfriend`,
//! `childish` and `infantry` are not in the list and never match.
//!
//! Phrases and ages span several words, which must be separated by a *soft* gap:
//! whitespace and at most one hyphen (`7-year-old`, `cub scouts`). A sentence break
//! (`little. One`) never joins words. Hyphenated compounds are therefore read as their
//! parts: `pre-teen` matches `teen`, `kid-friendly` matches `kid`.
//!
//! # Disguises
//!
//! Words written to slip past the list are read too: spelled out (`k i d s`,
//! `k.i.d.s`, `b-o-y`), cut by up to three punctuation characters (`todd.ler`, `ki*ds`,
//! `ki...ds`), phrases run together or cut (`littleone`, `little.one`) and leetspeak
//! (`k1ds`, `b0ys`, `b@by`, `$on`, `kid$`). They are reported as the word or phrase
//! they spell ([`Rule::Word`], [`Rule::Phrase`]), over the text they span. Leet digits
//! count only in a word that has a letter or stands alone, so `k9`, `4x4`, `1990s` and
//! `7 0 7` are not words; an exemption in disguise (`b.a.b.y blue`) is still exempt.
//! Spelled-out letters are searched for any child word (`c.o.w.b.o.y` reads `boy`).
//! Ages in disguise (`7-ye.ar-old`) are not read.
//!
//! # Policy
//!
//! This is a legal promise, so when a word is ambiguous the lexicon prefers a false
//! alarm (it fails closed): `girls` said of adult women, `son` of a grown man, `kid`
//! of a goat and `a 5 year old car` all match. The exceptions are words whose usual
//! sense is not a person: `minor` (almost always "minor details"; the plural `minors`
//! is almost always people and does match), `pupil` (also the eye; `school pupils`
//! matches), `nursery` and `daycare` (plants, pets) and `cub` (animals). Adjectives
//! said of adults — `childish`, `childlike`, `boyish`, `girly`, `babe` — are not
//! children; `tomboy` is, as it nearly always describes a girl. The lexicon is
//! English only.
//!
//! Slang and nicknames for children count (`nipper`, `sprogs`, `rugrats`, `ankle biters`,
//! `small fry`, `little fella`), and so do the things only a baby or toddler uses (`pram`,
//! `stroller`, `pushchair`, `nappies`, `high chair`, `sippy cup`): a text about a pram is about
//! the baby in it. `baby boomers` are adults.
//!
//! `young` alone is not a child (`young woman`, `young man`, `young adult`), nor is
//! `little` alone; `little one`, `young ones` and the other phrases in
//! [`CHILD_PHRASES`] are. A few fixed uses of a child word that name no child are
//! exempt: see [`EXEMPTIONS`] (`baby blue`, `baby carrots`, `sea urchin`, ...).
//!
//! # Ages
//!
//! A stated age is a child when it is under 16 years or counted in months, weeks or
//! days: `a 7-year-old`, `10 year old boy`, `two-year-old`, `12 years old`,
//! `5 yr old`, `4yo`, `2 y/o`, `3-month-old baby`, `6 months old`, `a few weeks old`,
//! `age 5`, `aged 9`, `age: 3`. Numbers may be digits (`1.5` counts as 1), words from
//! `zero` to `ninety-nine`, `a`/`an` (one) or, before a unit, `few`, `couple` and
//! `several`. Ages of 16 and over (`16-year-old`, `30 year old man`, `aged 45`) are
//! not a child by the age rule, and their words are skipped so that `twenty-one-year-old`
//! does not read as `one-year-old`.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::LazyLock;

use serde::Serialize;

use crate::normalize::normalize;
use crate::quote::quote;

mod age;
mod disguise;

use disguise::{Entry, Found, Words};

/// Anyone younger than this many years is a child.
pub const CHILD_AGE_LIMIT: u32 = 16;

/// Single words that describe a child, every accepted inflection spelled out.
/// Lower case, sorted by bytes (binary searched); possessives need no entry.
#[rustfmt::skip]
pub const CHILD_WORDS: &[&str] = &[
    "adolescent", "adolescents", "babies", "baby", "bairn", "bairns", "ballboy", "ballboys",
    "ballgirl", "ballgirls", "bambina", "bambinas", "bambini", "bambino", "bambinos",
    "bassinet", "bassinets", "boy", "boys", "brat", "brats", "cherub", "cherubs", "child",
    "children", "childs", "choirboy", "choirboys", "choirgirl", "choirgirls", "daughter",
    "daughters", "diaper", "diapers", "girl", "girls", "godchild", "godchildren", "goddaughter",
    "goddaughters", "godson", "godsons", "grandchild", "grandchildren", "granddaughter",
    "granddaughters", "grandkid", "grandkids", "grandson", "grandsons", "infant", "infants",
    "juvenile", "juveniles", "kid", "kiddie", "kiddies", "kiddo", "kiddos", "kiddy", "kids",
    "kindergarten", "kindergartener", "kindergarteners", "kindergartens", "kindergartner",
    "kindergartners", "lad", "lads", "lass", "lasses", "minors", "moppet", "moppets",
    "munchkin", "munchkins", "nappies", "nappy", "neonate", "neonates", "nephew", "nephews",
    "newborn", "newborns", "newsboy", "newsboys", "niece", "nieces", "nipper", "nippers",
    "orphan", "orphans", "pacifier", "pacifiers", "paperboy", "paperboys", "papoose",
    "papooses", "pipsqueak", "pipsqueaks", "playpen", "playpens", "pram", "prams",
    "preadolescent", "preadolescents", "preemie", "preemies", "prepubescent", "prepubescents",
    "preschool", "preschooler", "preschoolers", "preschools", "preteen", "preteens",
    "pubescent", "pushchair", "pushchairs", "quinceanera", "quinceaneras", "quinceañera",
    "quinceañeras", "rugrat", "rugrats", "schoolboy", "schoolboys", "schoolchild",
    "schoolchildren", "schoolgirl", "schoolgirls", "schoolkid", "schoolkids", "son", "sons",
    "sprog", "sprogs", "stepchild", "stepchildren", "stepdaughter", "stepdaughters", "stepson",
    "stepsons", "stroller", "strollers", "teen", "teenage", "teenaged", "teenager", "teenagers",
    "teens", "teenybopper", "teenyboppers", "toddler", "toddlers", "tomboy", "tomboys", "tot",
    "tots", "tween", "tweenager", "tweenagers", "tweens", "tyke", "tykes", "underage",
    "underaged", "urchin", "urchins", "whippersnapper", "whippersnappers", "youngin",
    "youngins", "youngling", "younglings", "youngster", "youngsters", "youngun", "younguns",
    "youth", "youths",
];

/// Fixed phrases that describe a child (words separated by single spaces). Besides
/// these, generated families are matched: `<school> school <student|pupil|class|...>`
/// and `<school> schooler(s)` (elementary, primary, grade, middle, junior high, high,
/// secondary, grammar, nursery, pre), `<1st..10th|first..tenth> grader(s)`,
/// `<ordinal> grade <student|...>`, `grade <1..10> <student|...>`, `under <1..16>s`
/// and `pee wee`/`peewee` + a sport or `league`/`team`. High school is included although
/// some of its students are 16 or older: fail closed.
#[rustfmt::skip]
pub const CHILD_PHRASES: &[&str] = &[
    "little one", "little ones", "young one", "young ones", "wee one", "wee ones",
    "little man", "little lady", "little prince", "little princess", "little league",
    "cub scout", "cub scouts", "brownie scout", "brownie scouts", "brownie guide",
    "brownie guides", "school age", "school aged", "pre k", "pre school", "pre schools",
    "nursery school", "nursery schools", "bar mitzvah", "bar mitzvahs", "bat mitzvah",
    "bat mitzvahs", "first communion", "trick or treat", "trick or treating",
    "trick or treater", "trick or treaters",
    // Slang and nicknames for children, and what only a baby or toddler uses.
    "ankle biter", "ankle biters", "small fry", "little rascal", "little rascals",
    "little squirt", "little squirts", "little fella", "little fellas", "little feller",
    "little fellers", "little fellow", "little fellows", "little chap", "little chaps",
    "little guy", "little guys", "lil guy", "lil guys", "lil one", "lil ones", "lil man",
    "lil lady", "young un", "young uns", "little leaguer", "little leaguers", "brownie pack",
    "high chair", "high chairs", "sippy cup", "sippy cups",
];

/// Uses of a child word that name no child; their words are skipped.
#[rustfmt::skip]
pub const EXEMPTIONS: &[&str] = &[
    "baby blue", "baby pink", "baby carrot", "baby carrots", "baby spinach", "baby corn",
    "baby grand", "baby back", "kid glove", "kid gloves", "oh boy", "sea urchin",
    "sea urchins", "baby boomer", "baby boomers",
];

#[rustfmt::skip]
const SCHOOL_KINDS: &[&str] = &[
    "elementary", "primary", "grade", "middle", "junior high", "high", "secondary",
    "grammar", "nursery", "pre",
];
#[rustfmt::skip]
const SCHOOL_NOUNS: &[&str] = &[
    "student", "students", "pupil", "pupils", "class", "classes", "classroom", "classrooms",
];
/// School years whose pupils are (mostly) under 16.
#[rustfmt::skip]
const ORDINALS: &[&str] = &[
    "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth",
    "tenth", "1st", "2nd", "3rd", "4th", "5th", "6th", "7th", "8th", "9th", "10th",
];
#[rustfmt::skip]
const YOUTH_SPORTS: &[&str] = &[
    "football", "hockey", "soccer", "baseball", "basketball", "league", "team",
];

/// The unit a stated age is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum AgeUnit {
    Years,
    Months,
    Weeks,
    Days,
}

impl fmt::Display for AgeUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AgeUnit::Years => "years",
            AgeUnit::Months => "months",
            AgeUnit::Weeks => "weeks",
            AgeUnit::Days => "days",
        })
    }
}

/// Why a piece of text was taken to describe a child.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum Rule {
    /// A word of [`CHILD_WORDS`] (the entry, possessive removed, e.g. `"boys"`).
    Word(&'static str),
    /// A multi-word phrase, in lower case with single spaces (e.g. `"little one"`).
    Phrase(&'static str),
    /// A stated age under 16 years, or any age in months, weeks or days.
    /// `value` is `None` for a vague amount (`a few weeks old`).
    Age { value: Option<u32>, unit: AgeUnit },
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Word(word) => write!(f, "child word '{word}'"),
            Rule::Phrase(phrase) => write!(f, "phrase '{phrase}'"),
            Rule::Age {
                value: Some(value),
                unit: AgeUnit::Years,
            } => {
                write!(f, "age {value} under {CHILD_AGE_LIMIT}")
            }
            Rule::Age {
                value: Some(value),
                unit,
            } => {
                write!(f, "age {value} {unit} under {CHILD_AGE_LIMIT}")
            }
            Rule::Age { value: None, unit } => {
                write!(f, "age of a few {unit} under {CHILD_AGE_LIMIT}")
            }
        }
    }
}

/// Longest part of a match shown by `ChildMatch`'s `Display`.
const MATCH_QUOTE_CHARS: usize = 64;

/// One place where a text describes a child. Offsets and text refer to the text's
/// [`normalize`]d form, which is what was read.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ChildMatch {
    /// The rule that matched.
    pub rule: Rule,
    /// The words that matched, as in the normalized text (`normalize(text)[start..end]`).
    pub matched: String,
    /// Byte offset of the first matched character.
    pub start: usize,
    /// Byte offset just past the last matched character.
    pub end: usize,
}

impl fmt::Display for ChildMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: '{}' at bytes {}..{}",
            self.rule,
            quote(&self.matched, MATCH_QUOTE_CHARS),
            self.start,
            self.end
        )
    }
}

/// The first place (in text order) where `text` ([`normalize`]d) describes a child.
#[must_use]
pub fn describes_child(text: &str) -> Option<ChildMatch> {
    let normalized = normalize(text);
    Scanner::new(&normalized).next()
}

/// Every place where `text` ([`normalize`]d) describes a child, in text order, not
/// overlapping.
#[must_use]
pub fn child_matches(text: &str) -> Vec<ChildMatch> {
    let normalized = normalize(text);
    Scanner::new(&normalized).collect()
}

// ---------------------------------------------------------------------------
// Phrase tables, built once.

struct Phrase {
    /// Canonical form: lower-case words joined by single spaces.
    text: String,
    words: Vec<String>,
}

/// Phrases indexed by their first word, longest first within a bucket.
struct PhraseTable {
    by_first: HashMap<String, Vec<Phrase>>,
}

impl PhraseTable {
    fn new(phrases: impl IntoIterator<Item = String>) -> Self {
        let mut by_first: HashMap<String, Vec<Phrase>> = HashMap::new();
        for text in phrases {
            let words: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
            let Some(first) = words.first().cloned() else {
                continue;
            };
            by_first
                .entry(first)
                .or_default()
                .push(Phrase { text, words });
        }
        for bucket in by_first.values_mut() {
            bucket.sort_by_key(|phrase| std::cmp::Reverse(phrase.words.len()));
        }
        PhraseTable { by_first }
    }

    /// The longest phrase that starts at token `i`, and the index past its last token.
    fn longest_match(&self, tokens: &Tokens<'_>, i: usize) -> Option<(&Phrase, usize)> {
        let bucket = self.by_first.get(tokens.key(i)?)?;
        bucket.iter().find_map(|phrase| {
            for (k, word) in phrase.words.iter().enumerate().skip(1) {
                if tokens.joined_key(i + k)? != word.as_str() {
                    return None;
                }
            }
            Some((phrase, i + phrase.words.len()))
        })
    }
}

static CHILD_PHRASE_TABLE: LazyLock<PhraseTable> = LazyLock::new(|| {
    let mut phrases: Vec<String> = CHILD_PHRASES.iter().map(|p| (*p).to_owned()).collect();
    for kind in SCHOOL_KINDS {
        for noun in SCHOOL_NOUNS {
            phrases.push(format!("{kind} school {noun}"));
        }
        phrases.push(format!("{kind} schooler"));
        phrases.push(format!("{kind} schoolers"));
    }
    for ordinal in ORDINALS {
        phrases.push(format!("{ordinal} grader"));
        phrases.push(format!("{ordinal} graders"));
        for noun in SCHOOL_NOUNS {
            phrases.push(format!("{ordinal} grade {noun}"));
        }
    }
    for year in 1..=10 {
        for noun in SCHOOL_NOUNS {
            phrases.push(format!("grade {year} {noun}"));
        }
    }
    // "under-12s": a youth age group; "under-16s" are still under 16.
    for age in 1..=CHILD_AGE_LIMIT {
        phrases.push(format!("under {age}s"));
    }
    for prefix in ["pee wee", "peewee"] {
        for sport in YOUTH_SPORTS {
            phrases.push(format!("{prefix} {sport}"));
        }
    }
    PhraseTable::new(phrases)
});

static EXEMPTION_TABLE: LazyLock<PhraseTable> =
    LazyLock::new(|| PhraseTable::new(EXEMPTIONS.iter().map(|p| (*p).to_owned())));

fn child_word(key: &str) -> Option<&'static str> {
    CHILD_WORDS
        .binary_search(&key)
        .ok()
        .map(|index| CHILD_WORDS[index])
}

// ---------------------------------------------------------------------------
// Tokenisation.

struct Token {
    /// Where the word is in the text (without leading or trailing apostrophes).
    span: Range<usize>,
    /// Where its lookup key (lower case, possessive removed) is in `Tokens::keys`.
    key: Range<usize>,
}

/// The words of one text, with their lookup keys stored in one shared buffer.
struct Tokens<'t> {
    text: &'t str,
    keys: String,
    list: Vec<Token>,
}

fn is_apostrophe(c: char) -> bool {
    matches!(c, '\'' | '\u{2019}' | '\u{02BC}')
}

fn is_hyphen(c: char) -> bool {
    matches!(c, '-' | '\u{2010}' | '\u{2011}' | '\u{2013}')
}

/// Whitespace (and stray apostrophes) with at most one separator from `separators`.
fn gap_with_at_most_one(gap: &str, separators: fn(char) -> bool) -> bool {
    let mut seen = false;
    for c in gap.chars() {
        if c.is_whitespace() || is_apostrophe(c) {
            continue;
        }
        if separators(c) && !seen {
            seen = true;
        } else {
            return false;
        }
    }
    true
}

/// Words joined into a phrase or an age: whitespace and at most one hyphen.
fn is_soft_gap(gap: &str) -> bool {
    gap_with_at_most_one(gap, is_hyphen)
}

/// Between "age" and its number a colon is also allowed: "age: 5".
fn is_label_gap(gap: &str) -> bool {
    gap_with_at_most_one(gap, |c| c == ':' || is_hyphen(c))
}

impl<'t> Tokens<'t> {
    fn new(text: &'t str) -> Self {
        let mut tokens = Tokens {
            text,
            keys: String::new(),
            list: Vec::new(),
        };
        let bytes = text.as_bytes();
        let mut pos = 0;
        while let Some(c) = text[pos..].chars().next() {
            if !c.is_alphanumeric() {
                pos += c.len_utf8();
                continue;
            }
            let start = pos;
            let mut end = pos;
            while let Some(c) = text[pos..].chars().next() {
                if c.is_alphanumeric() {
                    pos += c.len_utf8();
                    end = pos;
                } else if is_apostrophe(c) {
                    // Kept only if a letter follows ("boy's"); trailing ones are trimmed.
                    pos += c.len_utf8();
                } else if c == '.'
                    && pos > 0
                    && bytes[pos - 1].is_ascii_digit()
                    && bytes.get(pos + 1).is_some_and(u8::is_ascii_digit)
                {
                    pos += 1; // decimal point: "1.5"
                } else {
                    break;
                }
            }
            tokens.push(start..end);
        }
        tokens
    }

    fn push(&mut self, span: Range<usize>) {
        let key_start = self.keys.len();
        for c in self.text[span.clone()].chars() {
            if is_apostrophe(c) {
                self.keys.push('\'');
            } else if c.is_ascii() {
                self.keys.push(c.to_ascii_lowercase());
            } else {
                self.keys.extend(c.to_lowercase());
            }
        }
        // Only this token's own key may lose its possessive (a key of just "s" after one
        // ending in "'" must not cut into the previous key).
        if self.keys[key_start..].ends_with("'s") {
            self.keys.truncate(self.keys.len() - 2);
        }
        self.list.push(Token {
            span,
            key: key_start..self.keys.len(),
        });
    }

    fn len(&self) -> usize {
        self.list.len()
    }

    /// The lookup key of token `i`.
    fn key(&self, i: usize) -> Option<&str> {
        self.list.get(i).map(|token| &self.keys[token.key.clone()])
    }

    /// The text between token `i - 1` and token `i`.
    fn gap(&self, i: usize) -> Option<&'t str> {
        let before = self.list.get(i.checked_sub(1)?)?;
        let token = self.list.get(i)?;
        self.text.get(before.span.end..token.span.start)
    }

    /// The key of token `i` if it is joined to token `i - 1` by a soft gap.
    fn joined_key(&self, i: usize) -> Option<&str> {
        if is_soft_gap(self.gap(i)?) {
            self.key(i)
        } else {
            None
        }
    }

    /// The key of token `i` if it follows token `i - 1` after just "/" or "." ("y/o").
    fn tight_key(&self, i: usize) -> Option<&str> {
        matches!(self.gap(i)?, "/" | ".")
            .then(|| self.key(i))
            .flatten()
    }

    fn span(&self, first: usize, end: usize) -> Option<Range<usize>> {
        Some(self.list.get(first)?.span.start..self.list.get(end.checked_sub(1)?)?.span.end)
    }
}

// ---------------------------------------------------------------------------
// Scanning.

enum Step {
    /// A child is described by tokens `i..end` (or, for a disguise, by these bytes).
    Child(Rule, usize, Option<Range<usize>>),
    /// Tokens `i..end` were read (an exemption or an adult age): skip them.
    Skip(usize),
    Nothing,
}

/// Walks the tokens of one (normalized) text, yielding matches lazily so that
/// [`describes_child`] stops at the first.
struct Scanner<'t> {
    tokens: Tokens<'t>,
    words: Words,
    next: usize,
}

impl<'t> Scanner<'t> {
    fn new(normalized: &'t str) -> Self {
        Scanner {
            tokens: Tokens::new(normalized),
            words: Words::new(normalized),
            next: 0,
        }
    }

    fn step(&self, i: usize) -> Step {
        let tokens = &self.tokens;
        if let Some((_, end)) = EXEMPTION_TABLE.longest_match(tokens, i) {
            return Step::Skip(end);
        }
        if let Some((phrase, end)) = CHILD_PHRASE_TABLE.longest_match(tokens, i) {
            return Step::Child(Rule::Phrase(&phrase.text), end, None);
        }
        if let Some(age) = tokens.stated_age(i).or_else(|| tokens.age_statement(i)) {
            let rule = Rule::Age {
                value: age.value,
                unit: age.unit,
            };
            return if age.is_child() {
                Step::Child(rule, age.end, None)
            } else {
                Step::Skip(age.end)
            };
        }
        let disguised = self.words.disguised(tokens, i);
        if let Some(word) = tokens.key(i).and_then(child_word) {
            // A longer disguise reads better (`son.s` is `sons`, `kid$` is `kids`), and an
            // exemption in disguise is still one (`kid gl0ves`).
            let plain_len = tokens.span(i, i + 1).map_or(0, |span| span.len());
            return match disguised {
                Some(found) if found.end > i + 1 || found.span.len() > plain_len => {
                    match found.entry {
                        Entry::Child(rule) => Step::Child(rule, found.end, Some(found.span)),
                        Entry::Exempt => Step::Skip(found.end),
                    }
                }
                _ => Step::Child(Rule::Word(word), i + 1, None),
            };
        }
        match disguised {
            Some(Found {
                entry: Entry::Child(rule),
                end,
                span,
            }) => Step::Child(rule, end, Some(span)),
            Some(Found {
                entry: Entry::Exempt,
                end,
                ..
            }) => Step::Skip(end),
            None => Step::Nothing,
        }
    }
}

impl Iterator for Scanner<'_> {
    type Item = ChildMatch;

    fn next(&mut self) -> Option<ChildMatch> {
        while self.next < self.tokens.len() {
            let i = self.next;
            match self.step(i) {
                Step::Child(rule, end, span) => {
                    self.next = end.max(i + 1);
                    let span = match span {
                        Some(span) => span,
                        None => self.tokens.span(i, end)?,
                    };
                    let matched = self.tokens.text.get(span.clone())?.to_owned();
                    return Some(ChildMatch {
                        rule,
                        matched,
                        start: span.start,
                        end: span.end,
                    });
                }
                Step::Skip(end) => self.next = end.max(i + 1),
                Step::Nothing => self.next = i + 1,
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;
