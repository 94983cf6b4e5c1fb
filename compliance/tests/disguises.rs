//! Every child word and phrase, in every disguise and in pairs of disguises, is still
//! refused in a restricted region and still allowed elsewhere.

use imagesearch_compliance::lexicon::{CHILD_PHRASES, CHILD_WORDS};
use imagesearch_compliance::{describes_child, normalize, RegionPolicy};
use unicode_normalization::UnicodeNormalization;

/// Characters a tokenizer drops without a trace.
const INVISIBLE: &[char] = &[
    '\u{200B}',
    '\u{00AD}',
    '\u{2060}',
    '\u{200C}',
    '\u{200D}',
    '\u{FEFF}',
    '\u{202A}',
    '\u{202B}',
    '\u{202C}',
    '\u{202D}',
    '\u{202E}',
    '\u{2066}',
    '\u{2067}',
    '\u{2068}',
    '\u{2069}',
    '\u{200E}',
    '\u{200F}',
    '\u{FE0F}',
    '\u{FE00}',
    '\u{034F}',
    '\u{180E}',
    '\u{061C}',
    '\u{E0020}',
    '\u{E0001}',
    '\u{3164}',
    '\u{E000}',
    '\u{FFFD}',
];

const MARKS: &[char] = &[
    '\u{0301}', '\u{0300}', '\u{0308}', '\u{0303}', '\u{0327}', '\u{030C}',
];

/// Lookalikes of each ASCII letter (written independently of the crate's table).
fn lookalikes(c: char) -> &'static [char] {
    match c {
        'a' => &['а', 'α', 'ɑ', 'ᴀ'],
        'b' => &['ь', 'в', 'ʙ', 'ƀ'],
        'c' => &['с', 'ϲ', 'ᴄ', 'ƈ'],
        'd' => &['ԁ', 'ᴅ', 'đ'],
        'e' => &['е', 'ε', 'ᴇ', 'ɛ'],
        'f' => &['ꜰ'],
        'g' => &['ɡ', 'ɢ', 'ǥ'],
        'h' => &['һ', 'н', 'ʜ', 'ħ'],
        'i' => &['і', 'ι', 'ı', 'ɪ', 'ɩ'],
        'j' => &['ј', 'ϳ', 'ᴊ', 'ȷ'],
        'k' => &['к', 'κ', 'ᴋ', 'ƙ'],
        'l' => &['ӏ', 'ʟ', 'ł', 'ǀ'],
        'm' => &['м', 'ᴍ'],
        'n' => &['η', 'п', 'ɴ', 'ո'],
        'o' => &['о', 'ο', 'ᴏ', 'ø', 'օ'],
        'p' => &['р', 'ρ', 'ᴘ'],
        'q' => &['ԛ', 'ꞯ', 'զ'],
        'r' => &['г', 'ʀ', 'ɍ'],
        's' => &['ѕ', 'ꜱ', 'ʂ'],
        't' => &['т', 'τ', 'ᴛ', 'ŧ'],
        'u' => &['υ', 'ս', 'ᴜ', 'ʉ'],
        'v' => &['ν', 'ѵ', 'ᴠ'],
        'w' => &['ԝ', 'ω', 'ᴡ'],
        'x' => &['х', 'χ'],
        'y' => &['у', 'γ', 'ү', 'ʏ'],
        'z' => &['ᴢ', 'ƶ'],
        _ => &[],
    }
}

/// Leet spellings of each letter.
fn leet(c: char) -> &'static [char] {
    match c {
        'a' => &['4', '@'],
        'b' => &['8', '6'],
        'e' => &['3', '€'],
        'g' => &['9'],
        'i' => &['1', '!', '|'],
        'l' => &['1', '|'],
        'o' => &['0'],
        's' => &['5', '$'],
        't' => &['7', '+'],
        _ => &[],
    }
}

fn offset(c: char, lower: u32, upper: u32) -> char {
    let base = if c.is_ascii_lowercase() { lower } else { upper };
    let index = u32::from(c.to_ascii_lowercase()) - u32::from('a');
    char::from_u32(base + index).unwrap_or(c)
}

/// Whole-text letter styles: each maps every ASCII letter (others unchanged).
type Style = (&'static str, fn(char) -> String);

fn styles() -> Vec<Style> {
    fn keep(c: char) -> String {
        c.to_string()
    }
    let styles: Vec<Style> = vec![
        ("upper", |c| c.to_ascii_uppercase().to_string()),
        ("fullwidth", |c| offset(c, 0xFF41, 0xFF21).to_string()),
        ("bold", |c| offset(c, 0x1D41A, 0x1D400).to_string()),
        ("bold script", |c| offset(c, 0x1D4EA, 0x1D4D0).to_string()),
        ("sans bold", |c| offset(c, 0x1D5EE, 0x1D5D4).to_string()),
        ("monospace", |c| offset(c, 0x1D68A, 0x1D670).to_string()),
        ("circled", |c| offset(c, 0x24D0, 0x24B6).to_string()),
        ("parenthesized", |c| offset(c, 0x249C, 0x1F110).to_string()),
        ("negative squared", |c| {
            offset(c, 0x1F170, 0x1F170).to_string()
        }),
        ("regional", |c| offset(c, 0x1F1E6, 0x1F1E6).to_string()),
        ("lookalike", |c| {
            let low = c.to_ascii_lowercase();
            lookalikes(low)
                .first()
                .map_or_else(|| c.to_string(), |l| l.to_string())
        }),
        ("small caps", |c| {
            let low = c.to_ascii_lowercase();
            lookalikes(low)
                .iter()
                .find(|l| {
                    ('\u{0250}'..='\u{02AF}').contains(l)
                        || ('\u{1D00}'..='\u{1D7F}').contains(l)
                        || ('\u{A700}'..='\u{A7FF}').contains(l)
                })
                .map_or_else(|| c.to_string(), |l| l.to_string())
        }),
        ("accent", |c| format!("{c}\u{0301}")),
        ("precomposed", |c| {
            let composed: String = format!("{c}\u{0308}").nfc().collect();
            if composed.chars().count() == 1 {
                composed
            } else {
                c.to_string()
            }
        }),
        ("leet", |c| {
            let low = c.to_ascii_lowercase();
            leet(low)
                .first()
                .map_or_else(|| c.to_string(), |l| l.to_string())
        }),
        ("plain", keep),
    ];
    styles
}

/// Ways of joining the letters of a word.
const JOINERS: &[&str] = &[
    " ", ".", "-", ". ", " - ", ", ", "\u{200B}", "\u{00AD}", "\u{2060}", "\u{200D}", "_",
    "\u{00A0}", "  ", "\t",
];

/// Characters that cut a word in two.
const CUTS: &[char] = &[
    '.', '*', '_', '-', '/', '\'', '~', '#', '😀', '…', '·', '^', '"', ':',
];

/// `text` with each letter styled and each word's letters joined by `joiner`.
fn render(text: &str, style: fn(char) -> String, joiner: &str) -> String {
    text.split(' ')
        .map(|word| {
            let letters: Vec<String> = word
                .chars()
                .map(|c| {
                    if c.is_ascii_alphabetic() {
                        style(c)
                    } else {
                        c.to_string()
                    }
                })
                .collect();
            letters.join(joiner)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `text` with `insert` put before the character at each index in `at`.
fn insert_at(text: &str, at: usize, insert: &str) -> String {
    let mut out = String::new();
    for (index, c) in text.chars().enumerate() {
        if index == at {
            out.push_str(insert);
        }
        out.push(c);
    }
    out
}

/// Character positions strictly inside a word of `text`.
fn inner_positions(text: &str) -> Vec<usize> {
    let chars: Vec<char> = text.chars().collect();
    (1..chars.len())
        .filter(|&i| chars[i - 1] != ' ' && chars[i] != ' ')
        .collect()
}

/// All disguised forms of `text` (lower-case words separated by single spaces).
fn variants(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut add = |how: String, variant: String| out.push((how, variant));
    let chars: Vec<char> = text.chars().collect();
    let inner = inner_positions(text);

    for &c in INVISIBLE {
        for &at in &inner {
            add(
                format!("{c:?} at {at}"),
                insert_at(text, at, &c.to_string()),
            );
        }
        add(format!("{c:?} around"), format!("{c}{text}{c}"));
        add(
            format!("{c:?} for spaces"),
            text.replace(' ', &c.to_string()),
        );
    }
    for (at, &letter) in chars.iter().enumerate() {
        if !letter.is_ascii_alphabetic() {
            continue;
        }
        let swap = |with: &str| {
            let mut swapped: Vec<String> = chars.iter().map(char::to_string).collect();
            swapped[at] = with.to_string();
            swapped.concat()
        };
        for &mark in MARKS {
            add(
                format!("mark {mark:?} on {at}"),
                insert_at(text, at + 1, &mark.to_string()),
            );
            let composed: String = format!("{letter}{mark}").nfc().collect();
            if composed.chars().count() == 1 {
                add(format!("precomposed {composed} at {at}"), swap(&composed));
            }
        }
        for &look in lookalikes(letter) {
            add(format!("lookalike {look} at {at}"), swap(&look.to_string()));
        }
        for &l in leet(letter) {
            add(format!("leet {l} at {at}"), swap(&l.to_string()));
        }
    }
    for &cut in CUTS {
        for &at in &inner {
            add(
                format!("cut {cut:?} at {at}"),
                insert_at(text, at, &cut.to_string()),
            );
        }
    }
    // Every style and every joiner, and each pair of two.
    let styles = styles();
    for (name, style) in &styles {
        add((*name).to_string(), render(text, *style, ""));
        for joiner in JOINERS {
            add(
                format!("{name} joined by {joiner:?}"),
                render(text, *style, joiner),
            );
        }
        for (second, then) in &styles {
            let once = render(text, *style, "");
            let twice: String = once
                .chars()
                .map(|c| {
                    if c.is_ascii_alphabetic() {
                        then(c)
                    } else {
                        c.to_string()
                    }
                })
                .collect();
            add(format!("{name} then {second}"), twice);
        }
        for &c in &INVISIBLE[..6] {
            if let Some(&at) = inner.first() {
                let styled = render(text, *style, "");
                let at = styled.chars().count().min(at + 1) / 2 + 1;
                add(
                    format!("{name} with {c:?}"),
                    insert_at(&styled, at, &c.to_string()),
                );
            }
        }
    }
    // Mixed case, and leet written everywhere it can be (keeping a real letter).
    let mixed: String = chars
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i % 2 == 0 {
                c.to_ascii_uppercase()
            } else {
                *c
            }
        })
        .collect();
    add("mixed case".into(), mixed);
    let all_leet: String = chars
        .iter()
        .map(|&c| leet(c).first().copied().unwrap_or(c))
        .collect();
    if all_leet.chars().any(|c| c.is_ascii_alphabetic()) {
        add("all leet".into(), all_leet);
    }
    out
}

/// Whether the lexicon is meant to read `variant` as a word: a word of two or more
/// digits and no letter is a number, and digits alone never spell a word (`707` and
/// `7 0 7` are not `tot`).
fn is_readable(variant: &str) -> bool {
    let normalized = normalize(variant);
    normalized.bytes().any(|b| b.is_ascii_alphabetic())
        && !normalized
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|word| word.len() >= 2 && word.bytes().all(|b| b.is_ascii_digit()))
}

fn policy() -> RegionPolicy {
    match RegionPolicy::parse_list("DE,FR") {
        Ok(policy) => policy,
        Err(error) => panic!("policy: {error}"),
    }
}

fn assert_blocked_everywhere_restricted(policy: &RegionPolicy, entry: &str, how: &str, text: &str) {
    assert!(
        describes_child(text).is_some(),
        "{entry:?} as {how}: {text:?} (normalized {:?}) was not caught",
        normalize(text)
    );
    for region in [Some("DE"), Some("fr"), None] {
        let verdict = policy.check_query(region, text);
        assert!(
            verdict.as_ref().is_ok_and(|v| v.is_blocked()),
            "{entry:?} as {how}: {text:?} in {region:?}: {verdict:?}"
        );
    }
    assert!(
        policy
            .check_query(Some("US"), text)
            .is_ok_and(|v| !v.is_blocked()),
        "{text:?} must be allowed in US"
    );
}

#[test]
fn every_child_word_in_every_disguise_is_blocked() {
    let policy = policy();
    let mut count = 0;
    for word in CHILD_WORDS {
        for (how, text) in variants(&normalize(word)) {
            if !is_readable(&text) {
                continue;
            }
            assert_blocked_everywhere_restricted(&policy, word, &how, &text);
            // And inside a sentence.
            let sentence = format!("Look at the {text} over there");
            assert_blocked_everywhere_restricted(&policy, word, &how, &sentence);
            count += 1;
        }
    }
    assert!(count > 100_000, "only {count} variants");
}

#[test]
fn every_child_phrase_in_every_disguise_is_blocked() {
    let policy = policy();
    for phrase in CHILD_PHRASES {
        for (how, text) in variants(phrase) {
            if !is_readable(&text) {
                continue;
            }
            assert_blocked_everywhere_restricted(&policy, phrase, &how, &text);
            let sentence = format!("Look at the {text} over there");
            assert_blocked_everywhere_restricted(&policy, phrase, &how, &sentence);
        }
    }
}

#[test]
fn disguised_benign_words_stay_allowed() {
    let policy = policy();
    let texts = [
        "kídney",
        "ki\u{200B}dney",
        "cоwboy",
        "ᴄᴏᴡʙᴏʏ",
        "ｃｏｗｂｏｙ",
        "k1dney",
        "b0yfriend",
        "g1rlfriend",
        "s0nar",
        "k1dnap",
        "ch1ldish",
        "b@by blue",
        "b.a.b.y b.l.u.e",
        "babyblue",
        "o\u{200B}h boy",
        "sea-urchin",
        "kid gl0ves",
        "a.m.",
        "u.s. flag",
        "e.g. a dog",
        "t-shirt",
        "x-ray",
        "p.s. i love you",
        "b&w photo",
        "k9 unit dog",
        "4x4",
        "1990s",
        "5th avenue",
        "R2-D2",
        "7 0 7",
        "$5 off",
        "100%",
        "Καλημέρα",
        "привет мир",
        "Øresund bridge",
        "Łódź",
        "café crème",
        "a young wоman",
        "y o u n g",
        "m i n o r",
        "the yoüng man",
        "🇩🇪 🇫🇷 flags",
    ];
    for text in texts {
        assert_eq!(
            describes_child(text),
            None,
            "{text:?} ({:?})",
            normalize(text)
        );
        assert!(
            policy
                .check_query(Some("DE"), text)
                .is_ok_and(|v| !v.is_blocked()),
            "{text:?} must be allowed"
        );
    }
}
