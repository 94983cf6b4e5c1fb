//! The photo collection: for every photo its id, image-encoder vector, captions, restricted
//! flag and bytes. [`PhotoStore`] is the narrow interface the server uses, so a distributed
//! vector database can take the place of [`crate::local_store::LocalStore`] when one machine no
//! longer holds the collection.
//!
//! The law's flags live here too. A photo is restricted when its own captions **or** the child
//! detector say child, and what is known of a photo's *bytes* (evidence that they show a child,
//! or a reviewer's decision) is kept by content hash, so the same bytes keep their flag under
//! any id and after the photo that raised it is removed ([`decide_flag`], [`merge_evidence`]).

use std::sync::Arc;

use std::collections::HashSet;

use crate::error::ServeError;
use crate::filter::{Attributes, PhotoFilter};
use crate::wal::Flag;

/// A photo to store (already decoded, checked and encoded; its bytes staged).
#[derive(Clone, Debug)]
pub struct NewPhoto {
    pub id: String,
    pub sha256: [u8; 32],
    pub mime: String,
    pub captions: Vec<String>,
    pub flag: Flag,
    pub vector: Arc<Vec<f32>>,
    /// The uploader's attributes, checked and sorted by key.
    pub attributes: Attributes,
    /// When it was added, in Unix milliseconds.
    pub added_ms: i64,
}

/// What the store knows of a photo (without its bytes).
#[derive(Clone, Debug)]
pub struct PhotoMeta {
    pub id: Arc<str>,
    pub sha256: [u8; 32],
    pub mime: String,
    pub captions: Vec<String>,
    pub flag: Flag,
    pub vector: Arc<Vec<f32>>,
    pub attributes: Arc<Attributes>,
    pub added_ms: i64,
}

/// Counts for `Gallery.Stats`.
#[derive(Clone, Debug, Default)]
pub struct StoreStats {
    pub photos: u64,
    /// Photos by flag, indexed by `Flag as usize`.
    pub by_flag: [u64; 6],
    pub photo_bytes: u64,
    pub log_bytes: u64,
}

/// Result of an upsert.
#[derive(Debug, Default)]
pub struct Upserted {
    pub added: u32,
    pub replaced: u32,
    /// Of the photos stored, how many the store flagged restricted (decided on the newest
    /// knowledge of their bytes, which another server sharing the gallery may have added).
    pub restricted: u32,
}

/// A reviewer's decision about a photo's bytes.
#[derive(Clone, Debug)]
pub struct Review {
    /// True: the photo shows a child; false: it does not (lifts detector and unverified flags).
    pub restricted: bool,
    /// Who decided (from the caller's credential and the request).
    pub by: String,
    pub note: String,
}

/// A change another server made to a shared gallery, for this server's indexes.
#[derive(Clone, Debug)]
pub enum IndexChange {
    /// A photo added or replaced: its id and image vector.
    Upsert(Arc<str>, Arc<Vec<f32>>),
    Remove(Arc<str>),
}

/// The gallery's storage.
pub trait PhotoStore: Send + Sync {
    /// Writes a photo's bytes durably and pins them until [`PhotoStore::upsert`] or
    /// [`PhotoStore::unstage`], so photos of a long stream need not stay in memory.
    fn stage(&self, sha256: &[u8; 32], bytes: &[u8]) -> Result<(), ServeError>;
    /// Releases staged bytes that will not be stored (a stream that failed).
    fn unstage(&self, shas: &[[u8; 32]]);
    /// Stores staged photos durably (replacing same ids) in one atomic write before returning.
    fn upsert(&self, photos: Vec<NewPhoto>) -> Result<Upserted, ServeError>;
    /// Removes photos durably; returns the ids that were not there.
    fn remove(&self, ids: &[String]) -> Result<Vec<String>, ServeError>;
    /// Changes flags durably.
    fn set_flags(&self, changes: &[(String, Flag)]) -> Result<(), ServeError>;
    /// What is known of these bytes whatever id they are stored under.
    fn content_flag(&self, sha256: &[u8; 32]) -> Option<Flag>;
    /// Records a review of a photo's bytes and applies it to every photo with those bytes;
    /// returns the photos whose flag changed.
    fn review(&self, id: &str, review: &Review) -> Result<Vec<(Arc<str>, Flag)>, ServeError>;
    fn get(&self, id: &str) -> Option<PhotoMeta>;
    fn photo_bytes(&self, id: &str) -> Result<Option<Vec<u8>>, ServeError>;
    /// Every photo, for building an index.
    fn all(&self) -> Vec<PhotoMeta>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn stats(&self) -> StoreStats;
    /// Ids of the photos that pass `filter`.
    fn matching(&self, filter: &PhotoFilter) -> HashSet<Arc<str>>;
    /// The best `limit` photos for `query` by keyword search over their captions, best first,
    /// among those passing `filter`. With `restricted_region` a restricted photo is never
    /// ranked and a caption that describes a child is never matched: the keywords are no route
    /// to what the law withholds.
    fn keyword_ranking(&self, query: &str, restricted_region: bool, filter: &PhotoFilter, limit: usize) -> Result<Vec<Arc<str>>, ServeError>;
    /// Catches up with what other servers sharing the gallery wrote; returns the index
    /// changes this server's versions must apply. A store no other server writes has none.
    fn refresh(&self) -> Result<Vec<IndexChange>, ServeError> {
        Ok(Vec::new())
    }
    /// Whether other servers may write this gallery (then [`PhotoStore::refresh`] is polled).
    fn is_shared(&self) -> bool {
        false
    }
}

/// The flag of a photo being stored.
///
/// - `own_captions_child`: one of the photo's own captions describes a child;
/// - `content`: what the store knows of its bytes ([`PhotoStore::content_flag`]);
/// - `detector`: what the ready versions' child detectors say (any one flagging wins), `None`
///   when no version has a detector.
///
/// Captions that describe a child always restrict; a review decides otherwise; earlier evidence
/// about the same bytes restricts; then the detector; with nothing to ask the photo is
/// unverified, which is restricted (fail closed). Captions that say nothing of a child never
/// clear a photo the detector flags.
pub fn decide_flag(own_captions_child: bool, content: Option<Flag>, detector: Option<bool>) -> Flag {
    if own_captions_child {
        return Flag::Captions;
    }
    match content {
        Some(f @ (Flag::Reviewed | Flag::ReviewedClear | Flag::Captions | Flag::Detector)) => f,
        _ => match detector {
            Some(true) => Flag::Detector,
            Some(false) => Flag::Clear,
            None => Flag::Unverified,
        },
    }
}

/// How a stored photo's flag updates what is known of its bytes. New caption evidence of a
/// child outweighs an earlier review clear (the reviewer did not see it); detector evidence
/// never overrides a review or caption evidence; clear and unverified flags add nothing.
pub fn merge_evidence(known: Option<Flag>, flag: Flag) -> Option<Flag> {
    match (known, flag) {
        (_, Flag::Captions) => Some(Flag::Captions),
        (None | Some(Flag::Clear | Flag::Unverified | Flag::Detector), Flag::Detector) => Some(Flag::Detector),
        _ => known,
    }
}

/// Whether any caption describes a child (read as the model reads it).
pub fn captions_describe_child(captions: &[String]) -> bool {
    captions.iter().any(|c| imagesearch_compliance::describes_child(c).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captions_never_clear_what_the_detector_flags() {
        assert_eq!(decide_flag(false, None, Some(true)), Flag::Detector);
        assert_eq!(decide_flag(true, None, Some(false)), Flag::Captions);
        assert_eq!(decide_flag(false, None, Some(false)), Flag::Clear);
        assert_eq!(decide_flag(false, None, None), Flag::Unverified);
    }

    #[test]
    fn bytes_keep_their_flag_under_any_id() {
        // Bytes once captioned as a child stay restricted when re-added with harmless captions.
        let known = merge_evidence(None, Flag::Captions);
        assert_eq!(decide_flag(false, known, Some(false)), Flag::Captions);
        // A detector flag follows the bytes even if a later detector disagrees.
        let known = merge_evidence(None, Flag::Detector);
        assert_eq!(decide_flag(false, known, Some(false)), Flag::Detector);
        // A review decides for the bytes; new caption evidence outweighs a review clear.
        assert_eq!(decide_flag(false, Some(Flag::ReviewedClear), Some(true)), Flag::ReviewedClear);
        assert_eq!(decide_flag(true, Some(Flag::ReviewedClear), Some(false)), Flag::Captions);
        assert_eq!(merge_evidence(Some(Flag::ReviewedClear), Flag::Captions), Some(Flag::Captions));
        assert_eq!(merge_evidence(Some(Flag::ReviewedClear), Flag::Detector), Some(Flag::ReviewedClear));
        assert_eq!(merge_evidence(Some(Flag::Captions), Flag::Detector), Some(Flag::Captions));
        assert_eq!(merge_evidence(Some(Flag::Reviewed), Flag::Clear), Some(Flag::Reviewed));
        assert_eq!(merge_evidence(None, Flag::Clear), None);
    }
}
