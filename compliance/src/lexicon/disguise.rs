//! Words written to slip past a word list: spelled out (`k i d s`, `k.i.d.s`), cut by
//! punctuation (`todd.ler`, `ki*ds`, `little.one`), or in leetspeak (`k1ds`, `b@by`,
//! `$on`).
//!
//! Here a *word* is a run of letters, digits and the leet symbols `@ $ ! | € +`
//! (apostrophes allowed inside). From a word, the walk reads the following words and
//! the gaps between them as the letters they may stand for, following a trie of every
//! child word and phrase (and of the exemptions, so that `b.a.b.y blue` stays a
//! colour). A match starts at a word's start and ends at a word's end, so `k.idney` is
//! still `kidney`; inside spelled-out letters any child word is found (`c.o.w.b.o.y`
//! reads `boy`, as `cow-boy` does). Each character read moves one step down the trie,
//! so a walk is at most as long as the longest entry: the scan is linear.
//!
//! Inside a word, a digit stands for a letter (`0`→o, `1`→i or l, `3`→e, `4`→a, `5`→s,
//! `6`→b, `7`→t, `8`→b, `9`→g) if the word also has an ASCII letter or is one character
//! long; a leet symbol stands for its letter (`@`→a, `$`→s, `!`→i, `|`→i or l, `€`→e,
//! `+`→t), or for nothing or a space (`ki!ds`); an apostrophe stands for nothing.
//! A gap between two words is read as:
//! * one to three characters and no space (`ki*ds`, `ki...ds`): nothing or a space
//!   (`little.one`);
//! * whitespace between two one-character words (`k i d s`): nothing or a space;
//! * whitespace and one character between two one-character words (`k . i`): nothing;
//! * whitespace, or whitespace and one hyphen, elsewhere: a space (between phrase words);
//! * anything else ends the walk.
//!
//! A match must contain at least one real letter, so `7 0 7` is not `tot`.

use std::ops::Range;
use std::sync::LazyLock;

use super::{
    is_apostrophe, is_hyphen, Rule, Tokens, CHILD_PHRASE_TABLE, CHILD_WORDS, EXEMPTION_TABLE,
};

/// What a complete trie path means.
#[derive(Clone)]
pub(super) enum Entry {
    Child(Rule),
    Exempt,
}

#[derive(Default)]
struct Node {
    next: Vec<(char, u32)>,
    entry: Option<Entry>,
    /// Characters from the root.
    depth: usize,
}

struct Trie {
    nodes: Vec<Node>,
}

const ROOT: u32 = 0;

impl Trie {
    fn insert(&mut self, key: &str, entry: Entry) {
        let mut node = ROOT;
        for (depth, c) in key.chars().enumerate() {
            node = if let Some(next) = self.child(node, c) {
                next
            } else {
                let next = u32::try_from(self.nodes.len()).unwrap_or(u32::MAX);
                self.nodes.push(Node {
                    depth: depth + 1,
                    ..Node::default()
                });
                self.nodes[node as usize].next.push((c, next));
                next
            };
        }
        let slot = &mut self.nodes[node as usize].entry;
        if slot.is_none() {
            *slot = Some(entry);
        }
    }

    fn child(&self, node: u32, c: char) -> Option<u32> {
        let next = &self.nodes.get(node as usize)?.next;
        next.iter().find(|(k, _)| *k == c).map(|&(_, n)| n)
    }

    /// The entry ending at `node`, and the length of its key.
    fn entry(&self, node: u32) -> Option<(&Entry, usize)> {
        let node = self.nodes.get(node as usize)?;
        Some((node.entry.as_ref()?, node.depth))
    }
}

/// Child words, then child phrases (with single spaces and squeezed together:
/// `littleone`), then exemptions; the first entry for a key wins.
static TRIE: LazyLock<Trie> = LazyLock::new(|| {
    let mut trie = Trie {
        nodes: vec![Node::default()],
    };
    // Normalized text has no accents, so `quinceañera` is reached as `quinceanera`.
    for word in CHILD_WORDS.iter().filter(|word| word.is_ascii()) {
        trie.insert(word, Entry::Child(Rule::Word(word)));
    }
    let phrases = || CHILD_PHRASE_TABLE.by_first.values().flatten();
    for phrase in phrases() {
        trie.insert(&phrase.text, Entry::Child(Rule::Phrase(&phrase.text)));
    }
    for phrase in phrases() {
        let squeezed = phrase.text.replace(' ', "");
        trie.insert(&squeezed, Entry::Child(Rule::Phrase(&phrase.text)));
    }
    for phrase in EXEMPTION_TABLE.by_first.values().flatten() {
        trie.insert(&phrase.text, Entry::Exempt);
        trie.insert(&phrase.text.replace(' ', ""), Entry::Exempt);
    }
    trie
});

/// The letters a digit may stand for inside a word.
fn leet_digit(c: char) -> &'static [char] {
    match c {
        '0' => &['o'],
        '1' => &['i', 'l'],
        '3' => &['e'],
        '4' => &['a'],
        '5' => &['s'],
        '6' | '8' => &['b'],
        '7' => &['t'],
        '9' => &['g'],
        _ => &[],
    }
}

/// The letters a symbol may stand for inside a word.
fn leet_symbol(c: char) -> &'static [char] {
    match c {
        '@' => &['a'],
        '$' => &['s'],
        '!' => &['i'],
        '|' => &['i', 'l'],
        '€' => &['e'],
        '+' => &['t'],
        _ => &[],
    }
}

fn is_leet_symbol(c: char) -> bool {
    !leet_symbol(c).is_empty()
}

/// The most characters of a gap without spaces that may cut a word.
const MAX_TIGHT_GAP: usize = 3;

/// One way of reading a character or a gap.
#[derive(Clone, Copy)]
enum Read {
    Nothing,
    Char(char),
}

/// A walk in progress: a trie node, and whether a real letter was read on the way.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct State {
    node: u32,
    real: bool,
}

fn advance(states: &[State], reads: &[Read]) -> Vec<State> {
    let trie = &*TRIE;
    let mut next = Vec::new();
    for &state in states {
        for &read in reads {
            match read {
                Read::Nothing => next.push(state),
                Read::Char(c) => {
                    if let Some(node) = trie.child(state.node, c) {
                        next.push(State { node, ..state });
                    }
                }
            }
        }
    }
    next.sort_unstable();
    next.dedup();
    next
}

struct Word {
    span: Range<usize>,
    /// Lower case, apostrophes as `'`.
    key: String,
    single: bool,
}

/// The words of a text as the walk sees them.
pub(super) struct Words {
    list: Vec<Word>,
    text_len: usize,
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || is_leet_symbol(c)
}

impl Words {
    pub(super) fn new(text: &str) -> Self {
        let mut list = Vec::new();
        let mut chars = text.char_indices().peekable();
        while let Some((start, c)) = chars.next() {
            if !is_word_char(c) {
                continue;
            }
            let mut end = start + c.len_utf8();
            let mut count = 1;
            while let Some(&(at, c)) = chars.peek() {
                if is_word_char(c) {
                    end = at + c.len_utf8();
                    count += 1;
                } else if !is_apostrophe(c) {
                    break;
                }
                chars.next();
            }
            // A possessive `'s` is kept: [`Words::read_word`] reads the word both with
            // and without it (`k1d's` is `kid`, `babie's` is `babies`).
            let key: String = text[start..end]
                .chars()
                .flat_map(|c| {
                    let c = if is_apostrophe(c) { '\'' } else { c };
                    c.to_lowercase()
                })
                .collect();
            list.push(Word {
                span: start..end,
                key,
                single: count == 1,
            });
        }
        Words {
            list,
            text_len: text.len(),
        }
    }

    /// Reads the characters of word `w`; also returns the states before a final `'s`.
    fn read_word(&self, w: usize, mut states: Vec<State>) -> (Vec<State>, Vec<State>) {
        let Some(word) = self.list.get(w) else {
            return (Vec::new(), Vec::new());
        };
        let leet = word.single || word.key.chars().any(|c| c.is_ascii_alphabetic());
        let possessive_at = word.key.strip_suffix("'s").map(str::len);
        let mut possessive = Vec::new();
        for (at, c) in word.key.char_indices() {
            if Some(at) == possessive_at {
                possessive.clone_from(&states);
            }
            states = if c == '\'' {
                states
            } else if c.is_ascii_alphabetic() {
                let mut next = advance(&states, &[Read::Char(c)]);
                for state in &mut next {
                    state.real = true;
                }
                next
            } else if is_leet_symbol(c) {
                let mut reads = vec![Read::Nothing, Read::Char(' ')];
                reads.extend(leet_symbol(c).iter().map(|&l| Read::Char(l)));
                advance(&states, &reads)
            } else if c.is_ascii_digit() && leet {
                let mut reads = vec![Read::Char(c)];
                reads.extend(leet_digit(c).iter().map(|&l| Read::Char(l)));
                advance(&states, &reads)
            } else {
                advance(&states, &[Read::Char(c)])
            };
            if states.is_empty() {
                break;
            }
        }
        (states, possessive)
    }

    /// How the gap between words `w` and `w + 1` may be read (`None`: it ends the walk).
    fn gap_reads(&self, text: &str, w: usize) -> Option<Vec<Read>> {
        let (left, right) = (self.list.get(w)?, self.list.get(w + 1)?);
        let gap = text.get(left.span.end..right.span.start)?;
        let spelled = left.single && right.single;
        let has_space = gap.chars().any(char::is_whitespace);
        let mut marks = gap.chars().filter(|c| !c.is_whitespace());
        let mark = marks.next();
        let mut reads = Vec::new();
        if !has_space {
            // Up to three characters: `ki*ds`, `ki…ds` (NFKC: `ki...ds`).
            if gap.chars().nth(MAX_TIGHT_GAP).is_some() {
                return None;
            }
            reads.extend([Read::Nothing, Read::Char(' ')]);
            return Some(reads);
        }
        if marks.next().is_some() {
            return None;
        }
        if mark.is_none_or(is_hyphen) {
            reads.push(Read::Char(' '));
        }
        if spelled {
            reads.push(Read::Nothing);
        }
        Some(reads)
    }

    /// The longest disguised child word, phrase or exemption starting at lexicon
    /// token `i` (or at a word that starts just before it with leet symbols: `$on`).
    pub(super) fn disguised(&self, tokens: &Tokens<'_>, i: usize) -> Option<Found> {
        let token_start = tokens.list.get(i)?.span.start;
        let previous_end = i
            .checked_sub(1)
            .and_then(|p| tokens.list.get(p))
            .map_or(0, |p| p.span.end);
        let first = self.list.partition_point(|w| w.span.end <= token_start);
        let start = self.list.get(first)?.span.start;
        if start < previous_end || start > token_start {
            return None; // the word was walked from an earlier token
        }
        let trie = &*TRIE;
        let mut best: Option<(Found, (bool, usize))> = None;
        let mut states = vec![State {
            node: ROOT,
            real: false,
        }];
        let mut w = first;
        loop {
            let (next, possessive) = self.read_word(w, states);
            states = next;
            let end = self.list.get(w).map_or(self.text_len, |word| word.span.end);
            let readings = possessive
                .iter()
                .map(|state| (state, true))
                .chain(states.iter().map(|state| (state, false)));
            for (state, is_possessive) in readings.filter(|(state, _)| state.real) {
                // Longest text first, then a possessive, then the longest entry (`kid$`
                // is `kids`).
                if let Some((entry, depth)) = trie.entry(state.node) {
                    let rank = (is_possessive, depth);
                    if best
                        .as_ref()
                        .is_none_or(|(b, r)| (end, rank) > (b.span.end, *r))
                    {
                        let found = Found {
                            entry: entry.clone(),
                            end: tokens.list.partition_point(|t| t.span.start < end),
                            span: start..end,
                        };
                        best = Some((found, rank));
                    }
                }
            }
            if states.is_empty() {
                break;
            }
            let Some(reads) = self.gap_reads(tokens.text, w) else {
                break;
            };
            states = advance(&states, &reads);
            w += 1;
        }
        best.map(|(found, _)| found)
    }
}

/// A disguised entry found by [`Words::disguised`].
pub(super) struct Found {
    pub(super) entry: Entry,
    /// Index past the last lexicon token read.
    pub(super) end: usize,
    /// Bytes of the text matched.
    pub(super) span: Range<usize>,
}
