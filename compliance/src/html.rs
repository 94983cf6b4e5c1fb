//! Escaping untrusted text for HTML pages (the trainer's report, the CLI's `--html` search
//! page): one escaper, correct in element text and in single- or double-quoted attributes.

/// `s` with `&`, `<`, `>`, `"` and `'` replaced by entities, safe in HTML text and inside
/// quoted attribute values (either quote).
#[must_use]
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape_html;

    #[test]
    fn no_markup_or_quote_survives() {
        let hostile = r#"x' onerror='alert(1)' "><script>&amp;"#;
        let e = escape_html(hostile);
        for bad in ['<', '>', '"', '\''] {
            assert!(!e.contains(bad), "{bad} left in {e}");
        }
        assert_eq!(escape_html("a&b"), "a&amp;b");
        assert_eq!(escape_html("it's \"fine\""), "it&#39;s &quot;fine&quot;");
        assert_eq!(escape_html("plain ü"), "plain ü");
    }
}
