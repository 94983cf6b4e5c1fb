//! The child lexicon: the one definition of "this text describes a child" (anyone
//! under [`CHILD_AGE_LIMIT`] years) shared by the trainer, the server and the client.
//!
//! # How text is read
//!
//! Text is split into words: maximal runs of letters and digits, with apostrophes
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

/// Anyone younger than this many years is a child.
pub const CHILD_AGE_LIMIT: u32 = 16;

/// Single words that describe a child, every accepted inflection spelled out.
/// Lower case, sorted by bytes (binary searched); possessives need no entry.
#[rustfmt::skip]
pub const CHILD_WORDS: &[&str] = &[
    "adolescent", "adolescents", "babies", "baby", "bairn", "bairns", "ballboy", "ballboys",
    "ballgirl", "ballgirls", "boy", "boys", "brat", "brats", "cherub", "cherubs", "child",
    "children", "childs", "choirboy", "choirboys", "choirgirl", "choirgirls", "daughter",
    "daughters", "girl", "girls", "godchild", "godchildren", "goddaughter", "goddaughters",
    "godson", "godsons", "grandchild", "grandchildren", "granddaughter", "granddaughters",
    "grandkid", "grandkids", "grandson", "grandsons", "infant", "infants", "juvenile",
    "juveniles", "kid", "kiddie", "kiddies", "kiddo", "kiddos", "kiddy", "kids", "kindergarten",
    "kindergartener", "kindergarteners", "kindergartens", "kindergartner", "kindergartners",
    "lad", "lads", "lass", "lasses", "minors", "moppet", "moppets", "nephew", "nephews",
    "newborn", "newborns", "newsboy", "newsboys", "niece", "nieces", "orphan", "orphans",
    "paperboy", "paperboys", "papoose", "papooses", "preadolescent", "preadolescents",
    "prepubescent", "prepubescents", "preschool", "preschooler", "preschoolers", "preschools",
    "preteen", "preteens", "pubescent", "quinceanera", "quinceaneras", "quinceañera",
    "quinceañeras", "schoolboy", "schoolboys", "schoolchild", "schoolchildren", "schoolgirl",
    "schoolgirls", "schoolkid", "schoolkids", "son", "sons", "stepchild", "stepchildren",
    "stepdaughter", "stepdaughters", "stepson", "stepsons", "teen", "teenage", "teenaged",
    "teenager", "teenagers", "teens", "teenybopper", "teenyboppers", "toddler", "toddlers",
    "tomboy", "tomboys", "tot", "tots", "tween", "tweens", "tyke", "tykes", "underage",
    "underaged", "urchin", "urchins", "whippersnapper", "whippersnappers", "youngster",
    "youngsters", "youth", "youths",
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
];

/// Uses of a child word that name no child; their words are skipped.
#[rustfmt::skip]
pub const EXEMPTIONS: &[&str] = &[
    "baby blue", "baby pink", "baby carrot", "baby carrots", "baby spinach", "baby corn",
    "baby grand", "baby back", "kid glove", "kid gloves", "oh boy", "sea urchin",
    "sea urchins",
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

/// One place where a text describes a child.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ChildMatch {
    /// The rule that matched.
    pub rule: Rule,
    /// The words of the text that matched, exactly as written (`text[start..end]`).
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
            self.rule, self.matched, self.start, self.end
        )
    }
}

/// The first place (in text order) where `text` describes a child, if any.
#[must_use]
pub fn describes_child(text: &str) -> Option<ChildMatch> {
    Scanner::new(text).next()
}

/// Every place where `text` describes a child, in text order, not overlapping.
#[must_use]
pub fn child_matches(text: &str) -> Vec<ChildMatch> {
    Scanner::new(text).collect()
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
        if self.keys.ends_with("'s") {
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
// Ages.

#[derive(Clone, Copy)]
enum Amount {
    Exact(u32),
    /// "few", "couple", "several".
    Vague,
}

struct Quantity<'k> {
    amount: Amount,
    /// Letters glued to a number: "yo" in "4yo", "s" in "12s".
    suffix: &'k str,
    /// Index past the quantity's last token.
    end: usize,
}

struct StatedAge {
    value: Option<u32>,
    unit: AgeUnit,
    end: usize,
}

impl StatedAge {
    fn is_child(&self) -> bool {
        self.unit != AgeUnit::Years || self.value.is_none_or(|years| years < CHILD_AGE_LIMIT)
    }
}

/// Splits a key that starts with digits into its whole value and any glued letters.
/// Numbers too large for `u32` saturate (they are not child ages anyway).
fn split_number(key: &str) -> Option<(u32, &str)> {
    let digits_end = key.find(|c: char| !c.is_ascii_digit()).unwrap_or(key.len());
    if digits_end == 0 {
        return None;
    }
    let value = key[..digits_end].parse::<u32>().unwrap_or(u32::MAX);
    let mut rest = &key[digits_end..];
    if let Some(fraction) = rest.strip_prefix('.') {
        rest = fraction.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    Some((value, rest))
}

fn number_word(key: &str) -> Option<u32> {
    Some(match key {
        "zero" => 0,
        "one" => 1,
        "two" => 2,
        "three" => 3,
        "four" => 4,
        "five" => 5,
        "six" => 6,
        "seven" => 7,
        "eight" => 8,
        "nine" => 9,
        "ten" => 10,
        "eleven" => 11,
        "twelve" => 12,
        "thirteen" => 13,
        "fourteen" => 14,
        "fifteen" => 15,
        "sixteen" => 16,
        "seventeen" => 17,
        "eighteen" => 18,
        "nineteen" => 19,
        "twenty" => 20,
        "thirty" => 30,
        "forty" => 40,
        "fifty" => 50,
        "sixty" => 60,
        "seventy" => 70,
        "eighty" => 80,
        "ninety" => 90,
        _ => return None,
    })
}

fn age_unit(key: &str) -> Option<AgeUnit> {
    Some(match key {
        "year" | "years" | "yr" | "yrs" => AgeUnit::Years,
        "month" | "months" | "mo" | "mos" | "mth" | "mths" => AgeUnit::Months,
        "week" | "weeks" | "wk" | "wks" => AgeUnit::Weeks,
        "day" | "days" => AgeUnit::Days,
        _ => return None,
    })
}

impl Tokens<'_> {
    /// A number starting at token `i`. With `loose`, also "a"/"an" (one) and the
    /// vague "few", "couple (of)", "several".
    fn quantity(&self, i: usize, loose: bool) -> Option<Quantity<'_>> {
        let key = self.key(i)?;
        if let Some((value, suffix)) = split_number(key) {
            return Some(Quantity {
                amount: Amount::Exact(value),
                suffix,
                end: i + 1,
            });
        }
        let exact = |value, end| {
            Some(Quantity {
                amount: Amount::Exact(value),
                suffix: "",
                end,
            })
        };
        if let Some(value) = number_word(key) {
            // "twenty-one", "thirty five"
            if value >= 20 {
                let ones = self.joined_key(i + 1).and_then(number_word);
                if let Some(ones @ 1..=9) = ones {
                    return exact(value + ones, i + 2);
                }
            }
            return exact(value, i + 1);
        }
        if !loose {
            return None;
        }
        match key {
            "a" | "an" => exact(1, i + 1),
            "few" | "couple" | "several" => {
                let end = if self.joined_key(i + 1) == Some("of") {
                    i + 2
                } else {
                    i + 1
                };
                Some(Quantity {
                    amount: Amount::Vague,
                    suffix: "",
                    end,
                })
            }
            _ => None,
        }
    }

    /// The index past an "old"/"olds" joined to token `i - 1`.
    fn old_at(&self, i: usize) -> Option<usize> {
        matches!(self.joined_key(i), Some("old" | "olds")).then_some(i + 1)
    }

    /// "7-year-old", "12 years old", "two and a half year olds", "4yo", "2 y/o".
    fn stated_age(&self, i: usize) -> Option<StatedAge> {
        let quantity = self.quantity(i, true)?;
        let value = match quantity.amount {
            Amount::Exact(value) => Some(value),
            Amount::Vague => None,
        };
        let age = |unit, end| Some(StatedAge { value, unit, end });
        if !quantity.suffix.is_empty() {
            if quantity.suffix == "yo" {
                return age(AgeUnit::Years, quantity.end);
            }
            let unit = age_unit(quantity.suffix)?;
            return age(unit, self.old_at(quantity.end)?);
        }
        let mut j = quantity.end;
        if self.joined_key(j) == Some("and")
            && self.joined_key(j + 1) == Some("a")
            && self.joined_key(j + 2) == Some("half")
        {
            j += 3;
        }
        match self.joined_key(j)? {
            "yo" => age(AgeUnit::Years, j + 1),
            "y" if self.tight_key(j + 1) == Some("o") => age(AgeUnit::Years, j + 2),
            unit => age(age_unit(unit)?, self.old_at(j + 1)?),
        }
    }

    /// "age 5", "aged 9", "ages 3 to 5", "at the age of 4", "age: 3", "aged 18 months".
    fn age_statement(&self, i: usize) -> Option<StatedAge> {
        if !matches!(self.key(i)?, "age" | "aged" | "ages") {
            return None;
        }
        let mut j = i + 1;
        if self.joined_key(j) == Some("of") {
            j += 1;
        }
        if !is_label_gap(self.gap(j)?) {
            return None;
        }
        let quantity = self.quantity(j, false)?;
        let Amount::Exact(value) = quantity.amount else {
            return None;
        };
        let (unit, end) = match quantity.suffix {
            "" => match self.joined_key(quantity.end).and_then(age_unit) {
                Some(unit) => (unit, quantity.end + 1),
                None => (AgeUnit::Years, quantity.end),
            },
            "yo" => (AgeUnit::Years, quantity.end),
            suffix => (age_unit(suffix)?, quantity.end),
        };
        let end = self.old_at(end).unwrap_or(end);
        Some(StatedAge {
            value: Some(value),
            unit,
            end,
        })
    }
}

// ---------------------------------------------------------------------------
// Scanning.

enum Step {
    /// A child is described by tokens `i..end`.
    Child(Rule, usize),
    /// Tokens `i..end` were read (an exemption or an adult age): skip them.
    Skip(usize),
    Nothing,
}

/// Walks the tokens of one text, yielding matches lazily so that
/// [`describes_child`] stops at the first.
struct Scanner<'t> {
    tokens: Tokens<'t>,
    next: usize,
}

impl<'t> Scanner<'t> {
    fn new(text: &'t str) -> Self {
        Scanner {
            tokens: Tokens::new(text),
            next: 0,
        }
    }

    fn step(&self, i: usize) -> Step {
        let tokens = &self.tokens;
        if let Some((_, end)) = EXEMPTION_TABLE.longest_match(tokens, i) {
            return Step::Skip(end);
        }
        if let Some((phrase, end)) = CHILD_PHRASE_TABLE.longest_match(tokens, i) {
            return Step::Child(Rule::Phrase(&phrase.text), end);
        }
        if let Some(age) = tokens.stated_age(i).or_else(|| tokens.age_statement(i)) {
            let rule = Rule::Age {
                value: age.value,
                unit: age.unit,
            };
            return if age.is_child() {
                Step::Child(rule, age.end)
            } else {
                Step::Skip(age.end)
            };
        }
        if let Some(word) = tokens.key(i).and_then(child_word) {
            return Step::Child(Rule::Word(word), i + 1);
        }
        Step::Nothing
    }
}

impl Iterator for Scanner<'_> {
    type Item = ChildMatch;

    fn next(&mut self) -> Option<ChildMatch> {
        while self.next < self.tokens.len() {
            let i = self.next;
            match self.step(i) {
                Step::Child(rule, end) => {
                    self.next = end;
                    let span = self.tokens.span(i, end)?;
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
mod tests {
    use super::*;

    fn assert_child(text: &str) -> ChildMatch {
        match describes_child(text) {
            Some(found) => found,
            None => panic!("expected a child in {text:?}"),
        }
    }

    fn assert_no_child(text: &str) {
        assert_eq!(describes_child(text), None, "expected no child in {text:?}");
    }

    fn age(value: u32) -> Rule {
        Rule::Age {
            value: Some(value),
            unit: AgeUnit::Years,
        }
    }

    #[test]
    fn tables_are_sorted_lower_case_and_unique() {
        assert!(
            CHILD_WORDS.windows(2).all(|w| w[0] < w[1]),
            "CHILD_WORDS must be sorted"
        );
        for word in CHILD_WORDS.iter().chain(CHILD_PHRASES).chain(EXEMPTIONS) {
            assert_eq!(*word, word.to_lowercase(), "{word} must be lower case");
        }
        for word in CHILD_WORDS {
            assert!(child_word(word).is_some(), "{word} must be found");
        }
    }

    #[test]
    fn realistic_captions_describing_children() {
        let captions = [
            "Two blonde boys , one in a camouflage shirt and the other in a green shirt , are playing .",
            "A little girl climbing into a wooden playhouse .",
            "A 7-year-old plays soccer",
            "a toddler's shoes",
            "CHILDREN run",
            "A child in a pink dress is climbing up a set of stairs in an entry way .",
            "A boy smiles in front of a stony wall in a city .",
            "A girl going into a wooden building .",
            "Kids playing in a fountain on a hot day .",
            "A baby sleeping in a crib .",
            "Infants lie on a blanket .",
            "A teenager skateboards down a railing .",
            "Teen girls shopping at the mall .",
            "A schoolboy in uniform waits for the bus .",
            "The kindergartners line up for lunch .",
            "A mother holds her newborn .",
            "Grandchildren visit their grandmother at the lake .",
            "A father and son fishing on a lake .",
            "The daughter's birthday cake has five candles .",
            "A tween texting on her phone .",
            "A pre-teen rides a bicycle .",
            "The little ones splash in the pool .",
            "Cub Scouts sit around a campfire .",
            "A Little League pitcher winds up .",
            "Third-graders on a field trip to the museum .",
            "A 10 year old boy jumps off a diving board .",
            "two-year-old eating cake",
            "She is 12 years old and loves horses .",
            "Portrait, age 5, in the garden",
            "A reader aged 9 on the sofa .",
            "5 yr old at the beach",
            "A 3-month-old baby smiles .",
            "The twins are 6 months old .",
            "My fifteen-year-old nephew plays the drums .",
            "A 4yo on a scooter .",
            "Sitting in a sandbox, 2 y/o, with a bucket .",
            "A puppy and a few weeks old kitten",
            "Youngsters play football in the street .",
            "High school students throw their caps .",
            "Elementary school pupils in a classroom .",
            "A preschooler painting with her fingers .",
            "The kid's bike leans against the fence .",
            "Signs on the boys' locker room .",
            "The children’s playground is empty .",
            "A youth soccer team celebrates a goal .",
            "A one and a half year old with a ball .",
            "Under-12s football tournament .",
            "A kiddo with a popsicle .",
            "A tot in a stroller at the zoo .",
            "Schoolchildren cross the road .",
            "A tomboy climbing a tree .",
            "Trick-or-treaters walk down the street on Halloween .",
            "BABY BOY IN A SWING",
            "An 18-month-old in a high chair .",
            "An eleven year old at the piano .",
            "A toddler in a baby blue shirt .",
            "The 1st grader reads a book .",
            "Grade 3 students at the science fair .",
        ];
        assert!(captions.len() >= 40);
        for caption in captions {
            assert_child(caption);
        }
    }

    #[test]
    fn captions_not_describing_children() {
        let captions = [
            "A young woman in a red dress .",
            "A young man jumps off a cliff into the water .",
            "Young adults at a concert .",
            "A man with kidney beans .",
            "The cowboy rides a bull .",
            "A cowgirl ropes a calf at the rodeo .",
            "A dog jumps into a pool .",
            "a 30 year old man",
            "A 16-year-old skater does a trick .",
            "Please ignore the minor details .",
            "A woman and her boyfriend sit on a bench .",
            "Two girlfriends drink coffee .",
            "A poster for a kidnap thriller .",
            "A man in a baby blue shirt .",
            "A plate of baby carrots .",
            "Sea urchins on the rocks .",
            "Oh boy , what a wave !",
            "A childish prank by two grown men .",
            "A 100-year-old oak tree .",
            "Music from the 1990s and the 80's .",
            "A man aged 45 sits at his desk .",
            "At age 30 she moved to Paris .",
            "A skier in the snow .",
            "A black and white dog running in a grassy garden .",
            "A woman wearing kid gloves .",
            "College students at a lecture .",
            "The school bus is yellow .",
            "A bride and groom dance .",
            "Infantry soldiers march .",
            "A boyish grin on an old man .",
            "An eighteen-year-old woman .",
            "A twenty-one-year-old woman at her party .",
            "She is sixteen years old .",
            "A high school reunion .",
            "I am kidding .",
            "A man with a little dog .",
            "The old man ages .",
            "",
            "   ,,, ---",
        ];
        for caption in captions {
            assert_no_child(caption);
        }
    }

    #[test]
    fn whole_words_only() {
        for word in [
            "kidney",
            "kidnap",
            "cowboy",
            "boyfriend",
            "girlfriend",
            "childish",
            "sonar",
            "tottering",
            "lassoing",
            "bratwurst",
            "teenies",
            "babysitter",
            "brownie",
        ] {
            assert_no_child(word);
        }
        for word in [
            "kid",
            "Kids",
            "BOY'S",
            "boys'",
            "children's",
            "Child",
            "tomboy",
        ] {
            assert_child(word);
        }
    }

    #[test]
    fn ages() {
        let cases: &[(&str, Option<Rule>)] = &[
            ("a 7-year-old", Some(age(7))),
            ("10 year old boy", Some(age(10))),
            ("two-year-old", Some(age(2))),
            ("12 years old", Some(age(12))),
            ("age 5", Some(age(5))),
            ("aged 9", Some(age(9))),
            ("age: 3", Some(age(3))),
            ("at the age of 4", Some(age(4))),
            ("ages 3 to 5", Some(age(3))),
            ("5 yr old", Some(age(5))),
            ("2yrs old", Some(age(2))),
            ("a 4yo", Some(age(4))),
            ("a 6 y.o.", Some(age(6))),
            ("a year old", Some(age(1))),
            ("1.5 years old", Some(age(1))),
            ("fifteen year olds", Some(age(15))),
            ("fifteen - year - old", Some(age(15))),
            ("thirteen-year-old", Some(age(13))),
            (
                "a few years old",
                Some(Rule::Age {
                    value: None,
                    unit: AgeUnit::Years,
                }),
            ),
            (
                "3-month-old baby",
                Some(Rule::Age {
                    value: Some(3),
                    unit: AgeUnit::Months,
                }),
            ),
            (
                "6 months old",
                Some(Rule::Age {
                    value: Some(6),
                    unit: AgeUnit::Months,
                }),
            ),
            (
                "a 30-month-old",
                Some(Rule::Age {
                    value: Some(30),
                    unit: AgeUnit::Months,
                }),
            ),
            (
                "two weeks old",
                Some(Rule::Age {
                    value: Some(2),
                    unit: AgeUnit::Weeks,
                }),
            ),
            (
                "3 day old calf",
                Some(Rule::Age {
                    value: Some(3),
                    unit: AgeUnit::Days,
                }),
            ),
            (
                "aged 18 months",
                Some(Rule::Age {
                    value: Some(18),
                    unit: AgeUnit::Months,
                }),
            ),
            (
                "a couple of weeks old",
                Some(Rule::Age {
                    value: None,
                    unit: AgeUnit::Weeks,
                }),
            ),
            ("16-year-old", None),
            ("16 years old", None),
            ("30 year old man", None),
            ("twenty-one year old", None),
            ("aged 16", None),
            ("99999999999999 years old", None),
            ("16.5 years old", None),
            // No "old": a duration, not an age.
            ("5 years ago", None),
            ("6 months later", None),
            ("a 10 year anniversary", None),
        ];
        for (text, expected) in cases {
            let rule = describes_child(text).map(|found| found.rule);
            assert_eq!(rule.as_ref(), expected.as_ref(), "for {text:?}");
        }
    }

    #[test]
    fn phrases() {
        let cases = [
            ("the little one sleeps", "little one"),
            ("Little Ones at play", "little ones"),
            ("young ones feeding", "young ones"),
            ("a little-league game", "little league"),
            ("cub scouts", "cub scouts"),
            ("brownie scouts selling cookies", "brownie scouts"),
            ("middle school class photo", "middle school class"),
            ("junior high school students", "junior high school students"),
            ("middle schoolers", "middle schoolers"),
            ("a fifth grade classroom", "fifth grade classroom"),
            ("5th-graders", "5th graders"),
            ("pre-K", "pre k"),
            ("under 16s rugby", "under 16s"),
            ("peewee hockey", "peewee hockey"),
            ("school-aged", "school aged"),
            ("a little man in a suit", "little man"),
        ];
        for (text, phrase) in cases {
            assert_eq!(
                assert_child(text).rule,
                Rule::Phrase(phrase),
                "for {text:?}"
            );
        }
        // A sentence break does not make a phrase.
        assert_no_child("It is little. One more step .");
        // Adult phrases stay adult.
        assert_no_child("a college class");
        assert_no_child("under 18s");
    }

    #[test]
    fn offsets_and_matched_text() {
        let found = assert_child("A little girl");
        assert_eq!(found.rule, Rule::Word("girl"));
        assert_eq!(
            (found.matched.as_str(), found.start, found.end),
            ("girl", 9, 13)
        );

        let found = assert_child("The Boy's kite");
        assert_eq!(found.rule, Rule::Word("boy"));
        assert_eq!(
            (found.matched.as_str(), found.start, found.end),
            ("Boy's", 4, 9)
        );

        let found = assert_child("the boys' room");
        assert_eq!(found.rule, Rule::Word("boys"));
        assert_eq!(
            (found.matched.as_str(), found.start, found.end),
            ("boys", 4, 8)
        );

        let found = assert_child("Meet a 7-year-old");
        assert_eq!(found.rule, age(7));
        assert_eq!(
            (found.matched.as_str(), found.start, found.end),
            ("7-year-old", 7, 17)
        );

        let found = assert_child("Cub Scouts camp");
        assert_eq!(found.rule, Rule::Phrase("cub scouts"));
        assert_eq!(
            (found.matched.as_str(), found.start, found.end),
            ("Cub Scouts", 0, 10)
        );

        // Multi-byte text before the match keeps byte offsets right.
        let text = "Über café — ein Kind? No: the child’s toy";
        let found = assert_child(text);
        assert_eq!(found.matched, "child’s");
        assert_eq!(&text[found.start..found.end], found.matched);
    }

    #[test]
    fn all_matches_in_order() {
        let text = "A boy and a girl with their 3-year-old son, and a 40 year old man";
        let found = child_matches(text);
        let rules: Vec<&Rule> = found.iter().map(|m| &m.rule).collect();
        assert_eq!(
            rules,
            [
                &Rule::Word("boy"),
                &Rule::Word("girl"),
                &age(3),
                &Rule::Word("son")
            ]
        );
        for m in &found {
            assert_eq!(&text[m.start..m.end], m.matched);
        }
        assert!(child_matches("nothing here").is_empty());
        // The first of all matches is what describes_child reports.
        assert_eq!(describes_child(text).as_ref(), found.first());
    }

    #[test]
    fn rule_display() {
        assert_eq!(Rule::Word("boys").to_string(), "child word 'boys'");
        assert_eq!(
            Rule::Phrase("little one").to_string(),
            "phrase 'little one'"
        );
        assert_eq!(age(7).to_string(), "age 7 under 16");
        let months = Rule::Age {
            value: Some(3),
            unit: AgeUnit::Months,
        };
        assert_eq!(months.to_string(), "age 3 months under 16");
        let vague = Rule::Age {
            value: None,
            unit: AgeUnit::Weeks,
        };
        assert_eq!(vague.to_string(), "age of a few weeks under 16");
        let found = assert_child("two boys");
        assert_eq!(found.to_string(), "child word 'boys': 'boys' at bytes 4..8");
    }

    #[test]
    fn odd_input_does_not_panic() {
        for text in [
            "'",
            "''s",
            "1.",
            ".5",
            "5.",
            "a-",
            "-a",
            "👶 baby 👶",
            "ǅ",
            "İ",
            "y/o",
            "7 y/",
            "age",
            "aged of",
            "and a half",
            "twenty-",
            "x\u{0301}",
        ] {
            let _ = child_matches(text);
        }
        assert_child("👶 baby 👶");
    }

    #[test]
    fn many_captions_are_fast_enough() {
        // Not a benchmark; guards against accidental quadratic behaviour.
        let caption = "A black dog and a spotted dog are fighting on the grass near a man .";
        let started = std::time::Instant::now();
        for _ in 0..20_000 {
            assert!(describes_child(caption).is_none());
        }
        assert!(
            started.elapsed().as_secs() < 20,
            "took {:?}",
            started.elapsed()
        );
    }
}
