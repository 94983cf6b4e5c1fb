//! The one normal form of a text: what the law's lexicon reads *and* what the text
//! encoder is fed, so that the two can never disagree about what a text says.
//!
//! The encoder's own tokenizer (BERT uncased) silently drops control and format
//! characters, strips accents and lowercases, so a word disguised with a zero-width
//! space, a soft hyphen or a combining accent still reaches the model as the plain
//! word. [`normalize`] undoes those disguises (and a few more: lookalike letters from
//! other scripts, fullwidth and mathematical letters) before anyone reads the text.

use std::sync::LazyLock;

use unicode_normalization::char::{is_combining_mark, is_public_assigned};
use unicode_normalization::UnicodeNormalization;

/// Whether `c` is invisible formatting: a default-ignorable code point or a format
/// (`Cf`) character. These are removed by [`normalize`].
///
/// The ranges: soft hyphen U+00AD; combining grapheme joiner U+034F; Arabic number
/// signs U+0600–U+0605, letter mark U+061C, end of ayah U+06DD, U+0890–U+0891, U+08E2;
/// Syriac abbreviation mark U+070F; Hangul fillers U+115F–U+1160, U+3164, U+FFA0; Khmer
/// inherent vowels U+17B4–U+17B5; Mongolian variation selectors and vowel separator
/// U+180B–U+180F; zero-width space, joiners and direction marks U+200B–U+200F;
/// bidirectional embeddings and overrides U+202A–U+202E; word joiner, invisible
/// operators, bidirectional isolates and deprecated format characters U+2060–U+206F;
/// variation selectors U+FE00–U+FE0F; byte order mark U+FEFF; U+FFF0–U+FFF8 and the
/// interlinear annotation characters U+FFF9–U+FFFB; Kaithi number signs U+110BD,
/// U+110CD; Egyptian hieroglyph format controls U+13430–U+1343F; shorthand format
/// controls U+1BCA0–U+1BCA3; musical symbol formatting U+1D173–U+1D17A; tags and
/// variation selectors supplement U+E0000–U+E0FFF.
#[must_use]
pub fn is_ignorable(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// The text the law and the model both read. In order:
///
/// 1. Letters drawn as symbols whose compatibility form is not the letter become the
///    letter: parenthesized (`⒦`), negative circled and squared (`🅚`, `🅺`), regional
///    indicators (`🇰`), lunate sigma (`ϲ`).
/// 2. NFKD: fullwidth, mathematical, circled, superscript letters and ligatures become
///    plain letters, accented letters are split into letter and accent.
/// 3. Removed: [`is_ignorable`] characters, private-use and unassigned code points,
///    U+FFFD, and every combining mark (accents: `kíds` → `kids`, `ñ` → `n`).
///    Control characters, every Unicode whitespace and U+2800 (braille blank) become a
///    space.
/// 4. NFC (recomposes what remains, e.g. Hangul).
/// 5. Lookalike letters become the Latin letter they imitate (Cyrillic `е`, Greek `ο`,
///    small capitals `ᴋ`, dotless `ı`, `ø`, `ł`, ...), in every word that contains a
///    Latin letter or no letter foreign to the table: a word written wholly in another
///    script (`привет`) is left alone, as no such word can read as English.
/// 6. Runs of spaces become one space; leading and trailing spaces are removed.
///
/// Case is kept. Plain ASCII text is unchanged except for whitespace. The result is a
/// fixed point (`normalize(&normalize(x)) == normalize(x)`), and the work is linear in
/// the length of the text.
#[must_use]
pub fn normalize(text: &str) -> String {
    let folded: String = text
        .chars()
        .map(|c| symbol_letter(c).unwrap_or(c))
        .nfkd()
        .filter_map(|c| {
            if is_ignorable(c) || is_combining_mark(c) || c == '\u{FFFD}' {
                None
            } else if c.is_whitespace() || c.is_control() || c == '\u{2800}' {
                Some(' ')
            } else if is_public_assigned(c) {
                Some(c)
            } else {
                None
            }
        })
        .nfc()
        .collect();

    let mut out = String::with_capacity(folded.len());
    let mut word = String::new();
    let mut pending_space = false;
    for c in folded.chars() {
        if c.is_alphanumeric() {
            word.push(c);
            continue;
        }
        flush_word(&mut word, &mut out, &mut pending_space);
        if c == ' ' {
            pending_space = true;
        } else {
            push_after_space(&mut out, &mut pending_space, c);
        }
    }
    flush_word(&mut word, &mut out, &mut pending_space);
    out
}

fn push_after_space(out: &mut String, pending_space: &mut bool, c: char) {
    if std::mem::take(pending_space) && !out.is_empty() {
        out.push(' ');
    }
    out.push(c);
}

/// Writes one word, its lookalike letters mapped unless it is wholly foreign.
fn flush_word(word: &mut String, out: &mut String, pending_space: &mut bool) {
    if word.is_empty() {
        return;
    }
    let has_latin = word.chars().any(is_latin_letter);
    let has_foreign = word
        .chars()
        .any(|c| c.is_alphabetic() && !is_latin_letter(c) && confusable(c).is_none());
    let map = has_latin || !has_foreign;
    for c in word.chars() {
        let c = if map { confusable(c).unwrap_or(c) } else { c };
        push_after_space(out, pending_space, c);
    }
    word.clear();
}

/// Letters of the Latin script (ASCII, Latin-1, Latin Extended, IPA, phonetic).
fn is_latin_letter(c: char) -> bool {
    c.is_ascii_alphabetic()
        || (c.is_alphabetic()
            && matches!(
                c,
                '\u{00C0}'..='\u{02AF}'
                    | '\u{1D00}'..='\u{1DBF}'
                    | '\u{1E00}'..='\u{1EFF}'
                    | '\u{2C60}'..='\u{2C7F}'
                    | '\u{A720}'..='\u{A7FF}'
                    | '\u{AB30}'..='\u{AB6F}'
            ))
}

/// Symbols that stand for a Latin letter but whose NFKD form is not that letter.
fn symbol_letter(c: char) -> Option<char> {
    let offset = |first: char, base: u8| {
        let index = u32::from(c) - u32::from(first);
        char::from_u32(u32::from(base) + index)
    };
    match c {
        '\u{249C}'..='\u{24B5}' => offset('\u{249C}', b'a'), // ⒜..⒵
        '\u{1F110}'..='\u{1F129}' => offset('\u{1F110}', b'A'), // 🄐..🄩
        '\u{1F150}'..='\u{1F169}' => offset('\u{1F150}', b'A'), // 🅐..🅩
        '\u{1F170}'..='\u{1F189}' => offset('\u{1F170}', b'A'), // 🅰..🆉
        '\u{1F1E6}'..='\u{1F1FF}' => offset('\u{1F1E6}', b'A'), // regional indicators
        '\u{03F9}' => Some('C'),                             // Ϲ (NFKD: Σ)
        '\u{03F2}' => Some('c'),                             // ϲ (NFKD: ς)
        _ => None,
    }
}

/// Lookalike letters, each group a string of lookalikes and the Latin letters they
/// imitate, position by position. None of them has a decomposition (NFKD already
/// handles those), and every target is an ASCII letter of the same case.
#[rustfmt::skip]
const CONFUSABLE_GROUPS: &[(&str, &str)] = &[
    // Latin letters with no decomposition: dotless, script, stroked, hooked.
    ("ıȷɡɩɑɛǀʋ", "ijgiaelv"),
    ("øłđħŧƀɨʉƶǥɇɉɍ", "oldhtbiuzgejr"),
    ("ØŁĐĦŦɃƗɄƵǤɆɈɌ", "OLDHTBIUZGEJR"),
    ("ɓƈɗɠɦƙɱɲƥʠɽʂƭʈƴȥʐɫɬɭƚ", "bcdghkmnpqrsttyzzllll"),
    // Small capitals (there is none for x).
    ("ᴀʙᴄᴅᴇꜰɢʜɪᴊᴋʟᴍɴᴏᴘꞯʀꜱᴛᴜᴠᴡʏᴢ", "abcdefghijklmnopqrstuvwyz"),
    // Cyrillic.
    ("АВЕКМНОРСТХУЅІЈԚԜҮҺӀѴ", "ABEKMHOPCTXYSIJQWYHIV"),
    ("аеорсухѕіјԛԝүһӏѵԁвкмнтпгь", "aeopcyxsijqwyhlvdbkmhtnrb"),
    // Greek.
    ("ΑΒΕΖΗΙΚΜΝΟΡΤΥΧͿ", "ABEZHIKMNOPTYXJ"),
    ("αγεηικνοπρτυχωϳς", "ayenikvonptuxwjc"),
    // Armenian.
    ("օսհոզՕՍՏ", "ouhnqOUS"),
    // Lisu (drawn as Latin capitals).
    ("ꓐꓑꓒꓓꓔꓖꓗꓙꓚꓜꓝꓟꓠꓡꓢꓣꓦꓧꓪꓫꓬꓮꓰꓲꓳꓴ", "BPdDTGKJCZFMNLSRVHWXYAEIOU"),
    // Cherokee capitals and their small forms.
    ("ᎪᏴᏟᎠᎬᎻᎥᎫᏦᏞᎷᏢᎡᏚᎢᏙᎳᎩᏃ", "ABCDEHiJKLMPRSTVWyZ"),
    ("ꭺᏼꮯꭰꭼꮋꭵꭻꮶꮮꮇꮲꭱꮪꭲꮩꮃꭹꮓ", "abcdehijklmprstvwyz"),
];

/// [`CONFUSABLE_GROUPS`] as one table sorted by lookalike.
pub(crate) static CONFUSABLES: LazyLock<Vec<(char, char)>> = LazyLock::new(|| {
    let mut table: Vec<(char, char)> = CONFUSABLE_GROUPS
        .iter()
        .flat_map(|(from, to)| from.chars().zip(to.chars()))
        .collect();
    table.sort_unstable();
    table.dedup();
    table
});

/// The Latin letter that `c` imitates, if it is in the lookalike table.
fn confusable(c: char) -> Option<char> {
    if c.is_ascii() {
        return None;
    }
    let table = &*CONFUSABLES;
    table
        .binary_search_by_key(&c, |&(from, _)| from)
        .ok()
        .map(|index| table[index].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusable_table_is_consistent() {
        for (from, to) in CONFUSABLE_GROUPS {
            assert_eq!(from.chars().count(), to.chars().count(), "{from}");
        }
        let table = &*CONFUSABLES;
        assert!(
            table.windows(2).all(|w| w[0].0 < w[1].0),
            "duplicate lookalike"
        );
        for &(from, to) in table {
            assert!(from.is_alphabetic() && !from.is_ascii(), "{from:?}");
            assert!(to.is_ascii_alphabetic(), "{from:?} -> {to:?}");
            assert_eq!(
                from.nfkd().collect::<String>(),
                from.to_string(),
                "{from:?}"
            );
            assert_eq!(normalize(&from.to_string()), to.to_string(), "{from:?}");
            let word = format!("x{from}x");
            assert_eq!(normalize(&word), format!("x{to}x"));
        }
    }

    #[test]
    fn examples() {
        let cases = [
            ("k\u{200B}ids playing", "kids playing"),
            ("ki\u{00AD}ds", "kids"),
            ("\u{202E}sdik\u{202C}", "sdik"),
            ("kíds ki\u{0301}ds", "kids kids"),
            ("quinceañera", "quinceanera"),
            ("ｋｉｄｓ", "kids"),
            ("𝐤𝐢𝐝𝐬 𝓀𝒾𝒹𝓈", "kids kids"),
            ("ⓚⓘⓓⓢ ⒦⒤⒟⒮ 🅺🅸🅳🆂 🇰🇮🇩🇸", "kids kids KIDS KIDS"),
            ("toddlеr bоys", "toddler boys"),
            ("ᴋɪᴅs", "kids"),
            ("ΚΙΔ", "ΚΙΔ"),
            ("привет мир", "привет мир"),
            ("  a \t dog\n\u{2028}runs  ", "a dog runs"),
            ("a\u{0}b\u{7}c", "a b c"),
            ("k\u{E000}id\u{FFFD}s\u{0378}", "kids"),
            ("Über café", "Uber cafe"),
            ("ﬁne ℓ ™", "fine l TM"),
        ];
        for (text, expected) in cases {
            assert_eq!(normalize(text), expected, "for {text:?}");
        }
    }

    #[test]
    fn ascii_is_unchanged_but_for_whitespace() {
        let text = "A 7-year-old's kite, (e.g.) #1 @home: 50% off! ~`^|\\{}[]<>=+_*&$";
        assert_eq!(normalize(text), text);
        assert_eq!(normalize(""), "");
        assert_eq!(normalize(" \u{200B} "), "");
    }

    #[test]
    fn ignorable() {
        for c in [
            '\u{200B}',
            '\u{00AD}',
            '\u{2060}',
            '\u{FEFF}',
            '\u{202E}',
            '\u{E0041}',
        ] {
            assert!(is_ignorable(c), "{c:?}");
        }
        for c in ['a', ' ', '\u{0301}', '😀', '\u{FFFD}'] {
            assert!(!is_ignorable(c), "{c:?}");
        }
    }
}
