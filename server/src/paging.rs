//! Search pages: the ranking order every page follows (score, best first; equal scores by
//! id), and the page token, a cursor after the last hit a page showed. The token names the
//! version that ranked, the last hit's rank, score and id, and a fingerprint of the query and
//! floor, so a later page continues exactly after it (photos added meanwhile above the cursor
//! are not shown, none is repeated) and a token sent with another query is refused.

use sha2::{Digest, Sha256};

use crate::error::ServeError;

/// Longest page token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 2048;

/// Where a page ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Cursor {
    pub version: u32,
    /// Rank of the last hit shown (1-based).
    pub rank: u32,
    pub score: f32,
    pub id: String,
    fingerprint: String,
}

/// A fingerprint of what a token is valid for.
fn fingerprint(query: &str, min_score: f32) -> String {
    let d = Sha256::digest(format!("{query}\u{0}{}", min_score.to_bits()).as_bytes());
    hex::encode(&d[..8])
}

/// Whether hit `(score, id)` comes after `(score_c, id_c)` in the ranking order.
pub fn after(score: f32, id: &str, score_c: f32, id_c: &str) -> bool {
    score < score_c || (score == score_c && id > id_c)
}

/// Sorts hits into the ranking order (the index's top-k leaves ties in no set order).
pub fn rank_order<T: AsRef<str>>(hits: &mut [(T, f32)]) {
    hits.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.as_ref().cmp(b.0.as_ref())));
}

impl Cursor {
    /// The cursor after a page of `query` (normalised) with floor `min_score`.
    pub fn new(version: u32, rank: u32, score: f32, id: &str, query: &str, min_score: f32) -> Self {
        Cursor { version, rank, score, id: id.to_string(), fingerprint: fingerprint(query, min_score) }
    }

    /// The opaque token.
    pub fn token(&self) -> String {
        hex::encode(format!("p1|{}|{}|{:08x}|{}|{}", self.version, self.rank, self.score.to_bits(), self.fingerprint, self.id))
    }

    /// Reads a token sent with `query` and `min_score`; a malformed token, or one of another
    /// query or floor, is INVALID_ARGUMENT.
    pub fn parse(token: &str, query: &str, min_score: f32) -> Result<Cursor, ServeError> {
        let bad = |why: &str| ServeError::InvalidArgument(format!("page_token is not valid: {why}; send the next_page_token of the previous page"));
        if token.len() > MAX_TOKEN_BYTES {
            return Err(bad("too long"));
        }
        let bytes = hex::decode(token).map_err(|_| bad("not a token this server made"))?;
        let text = String::from_utf8(bytes).map_err(|_| bad("not a token this server made"))?;
        let mut parts = text.splitn(6, '|');
        let (Some("p1"), Some(v), Some(rank), Some(score), Some(fp), Some(id)) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("not a token this server made"));
        };
        let version = v.parse().map_err(|_| bad("bad version"))?;
        let rank = rank.parse().map_err(|_| bad("bad rank"))?;
        let score = u32::from_str_radix(score, 16).map(f32::from_bits).map_err(|_| bad("bad score"))?;
        if !score.is_finite() {
            return Err(bad("bad score"));
        }
        if fp != fingerprint(query, min_score) {
            return Err(bad("it belongs to another query or min_score"));
        }
        Ok(Cursor { version, rank, score, id: id.to_string(), fingerprint: fp.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_and_is_bound_to_its_query() {
        let c = Cursor::new(3, 10, 0.625, "photo|with|bars.jpg", "a dog", 0.2);
        let t = c.token();
        assert_eq!(Cursor::parse(&t, "a dog", 0.2).unwrap(), c);
        for (q, f) in [("a cat", 0.2), ("a dog", 0.3)] {
            let e = Cursor::parse(&t, q, f).unwrap_err();
            assert!(e.to_string().contains("another query"), "{e}");
        }
        for bad in ["", "zz", &hex::encode("p2|1|1|0|x|y"), &hex::encode("p1|x|1|0|x|y"), &"a".repeat(MAX_TOKEN_BYTES + 2)] {
            assert_eq!(Cursor::parse(bad, "a dog", 0.2).unwrap_err().code(), tonic::Code::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn ranking_order_breaks_ties_by_id() {
        let mut hits = vec![("b", 0.5), ("a", 0.5), ("c", 0.9)];
        rank_order(&mut hits);
        assert_eq!(hits, vec![("c", 0.9), ("a", 0.5), ("b", 0.5)]);
        assert!(after(0.5, "b", 0.5, "a") && after(0.4, "a", 0.5, "z") && !after(0.5, "a", 0.5, "a"));
    }
}
