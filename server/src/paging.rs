//! Search pages: the ranking order every page follows (score, best first; equal scores by
//! id), and the page token, a cursor after the last hit a page showed. The token names the
//! version that ranked, the last hit's rank, score and id, when the first page ran, and a
//! fingerprint of the query, floor, filter and keyword weight, so a later page continues
//! exactly after it (photos added meanwhile above the cursor are not shown, none is repeated)
//! and a token sent with another search is refused. A fused (keyword) ranking has no score
//! order to continue below: its pages continue at the rank, among photos added before the
//! first page ran.

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
    /// When the first page ran, in Unix milliseconds.
    pub snapshot_ms: i64,
    fingerprint: String,
}

/// What a token is valid for: the search's normalised query, floor, filter (canonical form)
/// and keyword weight.
pub fn scope(query: &str, min_score: f32, filter: &str, keyword_weight: f32) -> String {
    format!("{query}\u{0}{}\u{0}{filter}\u{0}{}", min_score.to_bits(), keyword_weight.to_bits())
}

/// A fingerprint of a [`scope`].
fn fingerprint(scope: &str) -> String {
    let d = Sha256::digest(scope.as_bytes());
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
    /// The cursor after a page of the search [`scope`] `scope`.
    pub fn new(version: u32, rank: u32, score: f32, id: &str, snapshot_ms: i64, scope: &str) -> Self {
        Cursor { version, rank, score, id: id.to_string(), snapshot_ms, fingerprint: fingerprint(scope) }
    }

    /// The opaque token.
    pub fn token(&self) -> String {
        let (v, rank, score, at, fp) = (self.version, self.rank, self.score.to_bits(), self.snapshot_ms, &self.fingerprint);
        hex::encode(format!("p2|{v}|{rank}|{score:08x}|{at}|{fp}|{}", self.id))
    }

    /// Reads a token sent with a search of [`scope`] `scope`; a malformed token, or one of
    /// another search, is INVALID_ARGUMENT.
    pub fn parse(token: &str, scope: &str) -> Result<Cursor, ServeError> {
        let bad = |why: &str| ServeError::InvalidArgument(format!("page_token is not valid: {why}; send the next_page_token of the previous page"));
        if token.len() > MAX_TOKEN_BYTES {
            return Err(bad("too long"));
        }
        let bytes = hex::decode(token).map_err(|_| bad("not a token this server made"))?;
        let text = String::from_utf8(bytes).map_err(|_| bad("not a token this server made"))?;
        let mut parts = text.splitn(7, '|');
        let mut next = || parts.next();
        let (Some("p2"), Some(v), Some(rank), Some(score), Some(at), Some(fp), Some(id)) = (next(), next(), next(), next(), next(), next(), next())
        else {
            return Err(bad("not a token this server made"));
        };
        let version = v.parse().map_err(|_| bad("bad version"))?;
        let rank = rank.parse().map_err(|_| bad("bad rank"))?;
        let score = u32::from_str_radix(score, 16).map(f32::from_bits).map_err(|_| bad("bad score"))?;
        if !score.is_finite() {
            return Err(bad("bad score"));
        }
        let snapshot_ms = at.parse().map_err(|_| bad("bad time"))?;
        if fp != fingerprint(scope) {
            return Err(bad("it belongs to another query, min_score, filter or keyword_weight"));
        }
        Ok(Cursor { version, rank, score, id: id.to_string(), snapshot_ms, fingerprint: fp.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_and_is_bound_to_its_query() {
        let dog = scope("a dog", 0.2, "", 0.0);
        let c = Cursor::new(3, 10, 0.625, "photo|with|bars.jpg", 1_764_000_000_000, &dog);
        let t = c.token();
        assert_eq!(Cursor::parse(&t, &dog).unwrap(), c);
        for other in [scope("a cat", 0.2, "", 0.0), scope("a dog", 0.3, "", 0.0), scope("a dog", 0.2, "owner=a", 0.0), scope("a dog", 0.2, "", 0.5)] {
            let e = Cursor::parse(&t, &other).unwrap_err();
            assert!(e.to_string().contains("another query"), "{e}");
        }
        let bad_tokens = ["", "zz", &hex::encode("p1|1|1|0|x|y"), &hex::encode("p2|x|1|0|0|x|y"), &hex::encode("p2|1|1|0|t|x|y"), &"a".repeat(MAX_TOKEN_BYTES + 2)];
        for bad in bad_tokens {
            assert_eq!(Cursor::parse(bad, &dog).unwrap_err().code(), tonic::Code::InvalidArgument, "{bad}");
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
