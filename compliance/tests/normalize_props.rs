//! Properties of `normalize` and the lexicon over random input.

use imagesearch_compliance::lexicon::CHILD_WORDS;
use imagesearch_compliance::{child_matches, describes_child, is_ignorable, normalize, quote};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Characters random texts are drawn from, besides random code points.
const ALPHABET: &[char] = &[
    'a',
    'b',
    'k',
    'i',
    'd',
    's',
    'o',
    'y',
    'K',
    'I',
    'D',
    'S',
    '0',
    '1',
    '5',
    '@',
    '$',
    '!',
    ' ',
    ' ',
    '.',
    '-',
    '\'',
    '’',
    '*',
    '\t',
    '\n',
    '\r',
    '\u{0}',
    '\u{7}',
    '\u{85}',
    '\u{A0}',
    '\u{200B}',
    '\u{00AD}',
    '\u{2060}',
    '\u{200C}',
    '\u{200D}',
    '\u{FEFF}',
    '\u{202E}',
    '\u{2066}',
    '\u{200F}',
    '\u{FE0F}',
    '\u{E0020}',
    '\u{3164}',
    '\u{2028}',
    '\u{2800}',
    '\u{FFFD}',
    '\u{E000}',
    '\u{0301}',
    '\u{0308}',
    '\u{0327}',
    '\u{20DD}',
    '\u{0903}',
    '\u{1100}',
    '\u{1161}',
    '\u{11A8}',
    '가',
    '\u{0345}',
    'ǅ',
    'İ',
    'ß',
    'ﬁ',
    'ｋ',
    '𝐤',
    '𝓀',
    'ⓚ',
    '⒦',
    '🅺',
    '🇰',
    'ϲ',
    'Ϲ',
    'а',
    'е',
    'о',
    'κ',
    'ι',
    'ᴋ',
    'ɪ',
    'ı',
    'ø',
    '中',
    '文',
    'の',
    '😀',
    '👶',
    '\u{1F3FD}',
    '¨',
    '´',
    '㎏',
    '℡',
    'Ⅻ',
    '½',
    'ñ',
    'é',
    'Å',
    '\u{212B}',
    '\u{FB2C}',
    '\u{0F73}',
    '\u{1E9B}',
    'ᾷ',
];

fn random_char(rng: &mut ChaCha8Rng) -> char {
    if rng.gen_bool(0.8) {
        ALPHABET[rng.gen_range(0..ALPHABET.len())]
    } else {
        loop {
            if let Some(c) = char::from_u32(rng.gen_range(0..0x11_0000)) {
                return c;
            }
        }
    }
}

fn random_text(rng: &mut ChaCha8Rng, max_len: usize) -> String {
    let len = rng.gen_range(0..=max_len);
    (0..len).map(|_| random_char(rng)).collect()
}

#[test]
fn normalize_is_idempotent_and_clean() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for _ in 0..5000 {
        let text = random_text(&mut rng, 40);
        let once = normalize(&text);
        assert_eq!(normalize(&once), once, "not a fixed point for {text:?}");
        assert!(
            !once.chars().any(|c| is_ignorable(c) || c.is_control()),
            "{text:?} -> {once:?}"
        );
        assert!(!once.starts_with(' ') && !once.ends_with(' ') && !once.contains("  "));
        assert!(
            !once.chars().any(|c| c.is_whitespace() && c != ' '),
            "{once:?}"
        );
        // Neither the lexicon nor quoting panics, and matches point into the normal form.
        for found in child_matches(&text) {
            assert_eq!(
                once.get(found.start..found.end),
                Some(found.matched.as_str())
            );
        }
        let quoted = quote(&text, 16);
        assert!(quoted.len() <= 16 * 10 + 40);
        assert!(!quoted.chars().any(|c| c.is_control() || is_ignorable(c)));
    }
}

#[test]
fn ascii_text_is_unchanged_but_for_whitespace() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for _ in 0..2000 {
        let len = rng.gen_range(0..60);
        let text: String = (0..len)
            .map(|_| char::from(rng.gen_range(0x20u8..0x7F)))
            .collect();
        let collapsed = text
            .split(' ')
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(normalize(&text), collapsed);
    }
}

/// Disguises that may be put into a child word of an ASCII text.
fn disguise(rng: &mut ChaCha8Rng, word: &str) -> String {
    let chars: Vec<char> = word.chars().collect();
    let at = rng.gen_range(1..chars.len().max(2)).min(chars.len());
    let (head, tail): (String, String) =
        (chars[..at].iter().collect(), chars[at..].iter().collect());
    let invisible = [
        '\u{200B}', '\u{00AD}', '\u{2060}', '\u{200C}', '\u{200D}', '\u{FEFF}', '\u{202E}',
        '\u{2069}',
    ];
    let cut = ['.', '*', '_', '/', '~', '#', '😀'];
    match rng.gen_range(0..8) {
        0 => format!(
            "{head}{}{tail}",
            invisible.choose(rng).copied().unwrap_or('\u{200B}')
        ),
        1 => format!("{head}{}{tail}", cut.choose(rng).copied().unwrap_or('.')),
        2 => chars.iter().map(|c| format!("{c}\u{0301}")).collect(),
        3 => chars
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(" "),
        4 => chars
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join("."),
        5 => word.to_uppercase(),
        6 => word
            .chars()
            .map(|c| char::from_u32(u32::from(c) - u32::from('a') + 0xFF41).unwrap_or(c))
            .collect(),
        _ => word
            .chars()
            .map(|c| match c {
                'o' => '0',
                'i' => '1',
                'e' => '3',
                _ => c,
            })
            .collect(),
    }
}

#[test]
fn a_disguise_never_hides_a_child_word() {
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let ascii_words: Vec<&str> = CHILD_WORDS
        .iter()
        .copied()
        .filter(|w| w.is_ascii())
        .collect();
    let fillers = [
        "a", "the", "dog", "in", "park", "red", "runs", "with", "and", "of", "on",
    ];
    for _ in 0..5000 {
        let word = ascii_words[rng.gen_range(0..ascii_words.len())];
        let mut words: Vec<String> = (0..rng.gen_range(0..6))
            .map(|_| fillers[rng.gen_range(0..fillers.len())].to_string())
            .collect();
        let at = rng.gen_range(0..=words.len());
        words.insert(at, word.to_string());
        let plain = words.join(" ");
        assert!(describes_child(&plain).is_some(), "{plain:?}");
        words[at] = disguise(&mut rng, word);
        let disguised = words.join(" ");
        assert!(
            describes_child(&disguised).is_some(),
            "{disguised:?} (normalized {:?}) hides {word:?}",
            normalize(&disguised)
        );
    }
}

#[test]
fn long_hostile_input_completes() {
    let text = "k.\u{200B}".repeat(70_000);
    assert!(text.chars().count() >= 200_000);
    assert_eq!(describes_child(&text), None);
    let matches = child_matches(&"k.i.d.s \u{200B}".repeat(20_000));
    assert_eq!(matches.len(), 20_000);
    let marks = format!("k{}ids", "\u{0301}".repeat(200_000));
    assert!(describes_child(&marks).is_some());
    let spaced = "k ".repeat(100_000);
    assert_eq!(describes_child(&spaced), None);
    let _ = quote(&text, 64);
}
