//! Quoting untrusted text for error messages and logs.

use std::fmt::Write as _;

use unicode_normalization::char::is_public_assigned;

use crate::normalize::is_ignorable;

/// Untrusted `text` made safe to print inside `'...'`: at most `max_chars` characters
/// of it, then `…` and the full length (`… (100000 chars)`) if it was longer.
///
/// `\n`, `\r`, `\t`, `\\` and `\'` are escaped as in Rust; control, format and
/// bidirectional, [ignorable](crate::is_ignorable), private-use and unassigned
/// characters and every whitespace but the space (line and paragraph separators
/// included) as `\u{XXXX}`. The result has no control or bidirectional characters and
/// is at most `10 * max_chars + 40` bytes long.
#[must_use]
pub fn quote(text: &str, max_chars: usize) -> String {
    let mut quoted = String::new();
    let mut chars = text.chars();
    for c in chars.by_ref().take(max_chars) {
        match c {
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            '\\' => quoted.push_str("\\\\"),
            '\'' => quoted.push_str("\\'"),
            c if needs_escape(c) => {
                let _ = write!(quoted, "\\u{{{:04X}}}", u32::from(c));
            }
            c => quoted.push(c),
        }
    }
    if chars.next().is_some() {
        let total = max_chars + 1 + chars.count();
        let _ = write!(quoted, "… ({total} chars)");
    }
    quoted
}

fn needs_escape(c: char) -> bool {
    c.is_control() || is_ignorable(c) || (c.is_whitespace() && c != ' ') || !is_public_assigned(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_kept() {
        assert_eq!(quote("a dog", 16), "a dog");
        assert_eq!(quote("", 16), "");
        assert_eq!(quote("Über café 😀", 16), "Über café 😀");
    }

    #[test]
    fn escapes() {
        assert_eq!(quote("a\nb\r\tc", 16), "a\\nb\\r\\tc");
        assert_eq!(quote("it's a \\", 16), "it\\'s a \\\\");
        assert_eq!(quote("k\u{200B}ids", 16), "k\\u{200B}ids");
        assert_eq!(quote("\u{202E}abc", 16), "\\u{202E}abc");
        assert_eq!(quote("\u{7}\u{0}", 16), "\\u{0007}\\u{0000}");
        assert_eq!(quote("a\u{2028}b\u{00A0}", 16), "a\\u{2028}b\\u{00A0}");
        assert_eq!(quote("\u{E000}\u{10FFFF}", 16), "\\u{E000}\\u{10FFFF}");
    }

    #[test]
    fn long_text_is_cut() {
        let long = "a".repeat(100_000);
        assert_eq!(
            quote(&long, 16),
            format!("{}… (100000 chars)", "a".repeat(16))
        );
        assert_eq!(quote("abc", 3), "abc");
        assert_eq!(quote("abcd", 3), "abc… (4 chars)");
        assert_eq!(quote("abcd", 0), "… (4 chars)");
    }

    #[test]
    fn output_is_bounded_and_clean() {
        let hostile: String = "\u{10FFFF}\u{202E}\n'\\\u{2066}".repeat(1000);
        for max in [0, 1, 5, 64] {
            let quoted = quote(&hostile, max);
            assert!(
                quoted.len() <= 10 * max + 40,
                "{max}: {} bytes",
                quoted.len()
            );
            assert!(!quoted.chars().any(|c| c.is_control() || is_ignorable(c)));
        }
    }
}
