//! Compliance rules shared by the trainer, the server and the client, so that all
//! three apply exactly the same rules.
//!
//! In some countries the law forbids showing any description or image of a child
//! (anyone under 16). The [`lexicon`] decides whether a text describes a child; the
//! [`region`] policy decides where that matters. The trainer drops training pairs
//! whose caption [`describes_child`]; the server and the client call
//! [`RegionPolicy::check_query`] and show the API's disclaimer (`imagesearch_proto::DISCLAIMER`)
//! in place of restricted images.
//!
//! The lexicon reads [`normalize`]`(text)`, and the trainer and the server feed the
//! text encoder exactly that string, so a word hidden from the law by invisible
//! characters, accents or lookalike letters is never read by the model either.
//! [`quote`] makes untrusted text safe to echo in messages and logs, [`escape_html`] in pages.
//!
//! ```
//! use imagesearch_compliance::{RegionPolicy, Verdict};
//!
//! # fn main() -> Result<(), imagesearch_compliance::RegionError> {
//! let policy = RegionPolicy::parse_list("DE, fr")?;
//! assert!(policy.check_query(Some("de"), "a boy on a bike")?.is_blocked());
//! assert!(policy.check_query(None, "two kids")?.is_blocked()); // no region: fail closed
//! assert_eq!(policy.check_query(Some("US"), "a boy on a bike")?, Verdict::Allowed);
//! assert_eq!(policy.check_query(Some("DE"), "a young woman")?, Verdict::Allowed);
//! assert!(policy.check_query(Some("DE"), "k\u{200B}ids in the park")?.is_blocked());
//! assert!(policy.check_query(Some("DEU"), "a dog").is_err());
//! # Ok(())
//! # }
//! ```

mod html;
pub mod lexicon;
mod normalize;
mod quote;
pub mod region;

pub use html::escape_html;
pub use lexicon::{child_matches, describes_child, AgeUnit, ChildMatch, Rule, CHILD_AGE_LIMIT};
pub use normalize::{is_ignorable, normalize};
pub use quote::quote;
pub use region::{RegionCode, RegionError, RegionPolicy, Verdict};

