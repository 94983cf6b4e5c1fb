//! The gallery's state as both stores keep it in memory: photos by id, what is known of each
//! content hash (flags that outlive the photos that raised them), which photos hold which
//! bytes, and the bytes staged by streams not yet committed. Every change is a [`Record`]
//! applied here, whether it came from the local write-ahead log or from PostgreSQL, so the law's
//! flag rules (spreading new evidence to every photo with the same bytes) live in one place.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::error::ServeError;
use crate::filter::PhotoFilter;
use crate::gallery::{captions_describe_child, merge_evidence, NewPhoto, PhotoMeta, Review, Upserted};
use crate::keywords::KeywordIndex;
use crate::wal::{Flag, Record};

/// What is known of some bytes: a flag and, for a review, who and why.
#[derive(Clone, Debug)]
pub(crate) struct Known {
    pub flag: Flag,
    pub by: String,
    pub note: String,
}

#[derive(Default)]
pub(crate) struct State {
    pub photos: HashMap<Arc<str>, PhotoMeta>,
    /// What is known of bytes by content hash (outlives the photos that raised it).
    pub content: HashMap<[u8; 32], Known>,
    /// Live photos per content hash (a file is deleted when no photo and no stage holds it).
    pub holders: HashMap<[u8; 32], HashSet<Arc<str>>>,
    /// Staged, not yet committed bytes per content hash.
    pub staged: HashMap<[u8; 32], usize>,
    /// The captions' keyword index, for a store that searches keywords in memory.
    pub keywords: Option<KeywordIndex>,
}

/// Counts one more (`up`) or one fewer pin of `sha` in `map`.
pub(crate) fn bump(map: &mut HashMap<[u8; 32], usize>, sha: [u8; 32], up: bool) {
    if up {
        *map.entry(sha).or_insert(0) += 1;
    } else if let Some(n) = map.get_mut(&sha) {
        *n -= 1;
        if *n == 0 {
            map.remove(&sha);
        }
    }
}

impl State {
    /// A state that keeps a keyword index of the captions.
    pub fn with_keywords() -> Self {
        State { keywords: Some(KeywordIndex::default()), ..State::default() }
    }

    /// Applies a record; returns the content hashes that may have lost their last reference.
    pub fn apply(&mut self, r: Record) -> Option<[u8; 32]> {
        match r {
            Record::Put { id, sha256, mime, captions, flag, vector, attributes, added_ms } => {
                let id: Arc<str> = id.into();
                if let Some(k) = &mut self.keywords {
                    if let Some(old) = self.photos.get(&id) {
                        k.remove(&id, Some(&old.captions));
                    }
                    k.insert(&id, &captions);
                }
                let meta = PhotoMeta { id: id.clone(), sha256, mime, captions, flag, vector: Arc::new(vector), attributes: Arc::new(attributes), added_ms };
                let old = self.photos.insert(id.clone(), meta);
                let released = old.map(|old| self.release(&old.id, old.sha256));
                self.holders.entry(sha256).or_default().insert(id);
                self.learn(sha256, flag);
                released
            }
            Record::Remove { id } => self.photos.remove(id.as_str()).map(|old| {
                if let Some(k) = &mut self.keywords {
                    k.remove(&old.id, Some(&old.captions));
                }
                self.release(&old.id, old.sha256)
            }),
            Record::SetFlag { id, flag } => {
                let sha = self.photos.get_mut(id.as_str()).map(|p| {
                    p.flag = flag;
                    p.sha256
                });
                if let Some(sha) = sha {
                    self.learn(sha, flag);
                }
                None
            }
            Record::Content { sha256, flag, by, note } => {
                self.content.insert(sha256, Known { flag, by, note });
                None
            }
        }
    }

    /// Takes a photo off its bytes' holders; returns the bytes' hash.
    fn release(&mut self, id: &Arc<str>, sha: [u8; 32]) -> [u8; 32] {
        if let Some(ids) = self.holders.get_mut(&sha) {
            ids.remove(id);
            if ids.is_empty() {
                self.holders.remove(&sha);
            }
        }
        sha
    }

    /// Learns what a photo's flag says of its bytes.
    fn learn(&mut self, sha: [u8; 32], flag: Flag) {
        let known = self.content.get(&sha).map(|k| k.flag);
        if let Some(new) = merge_evidence(known, flag).filter(|f| Some(*f) != known) {
            self.content.insert(sha, Known { flag: new, by: String::new(), note: String::new() });
        }
    }

    /// The flag changes that writing `items` (bytes, flag) implies for the photos already
    /// holding those bytes (ids in `skip` are being rewritten anyway): new evidence that some
    /// bytes show a child restricts every photo holding them, so the same bytes keep their flag
    /// under any id. Written as explicit records, so replay and compaction need no inference.
    pub fn spread(&self, items: &[([u8; 32], Flag)], skip: &HashSet<&str>) -> Vec<Record> {
        let mut known: HashMap<[u8; 32], Option<Flag>> = HashMap::new();
        let mut restrict: HashMap<[u8; 32], Flag> = HashMap::new();
        for (sha, flag) in items {
            let before = *known.entry(*sha).or_insert_with(|| self.content.get(sha).map(|k| k.flag));
            let after = merge_evidence(before, *flag);
            if after != before {
                if let Some(f) = after.filter(|f| f.restricted()) {
                    restrict.insert(*sha, f);
                }
            }
            known.insert(*sha, after);
        }
        let mut out = Vec::new();
        for (sha, flag) in restrict {
            for id in self.holders.get(&sha).into_iter().flatten() {
                let unrestricted = self.photos.get(id).is_some_and(|p| !p.flag.restricted());
                if unrestricted && !skip.contains(id.as_ref()) {
                    out.push(Record::SetFlag { id: id.to_string(), flag });
                }
            }
        }
        out
    }

    /// Ids of the photos that pass `filter`.
    pub fn matching(&self, filter: &PhotoFilter) -> HashSet<Arc<str>> {
        self.photos.values().filter(|p| filter.matches(p)).map(|p| p.id.clone()).collect()
    }

    /// [`crate::gallery::PhotoStore::keyword_ranking`] through the in-memory keyword index
    /// (empty when this state keeps none).
    pub fn keyword_ranking(&self, query: &str, restricted_region: bool, filter: &PhotoFilter, limit: usize) -> Vec<Arc<str>> {
        let Some(k) = &self.keywords else { return Vec::new() };
        k.rank(query, restricted_region, limit, |id| {
            self.photos.get(id).is_some_and(|p| filter.matches(p) && !(restricted_region && p.flag.restricted()))
        })
    }

    pub fn held(&self, sha: &[u8; 32]) -> bool {
        self.holders.contains_key(sha) || self.staged.contains_key(sha)
    }

    /// The records that rebuild this state (compaction).
    pub fn snapshot(&self) -> Vec<Record> {
        let content = self.content.iter().map(|(sha, k)| Record::Content { sha256: *sha, flag: k.flag, by: k.by.clone(), note: k.note.clone() });
        let photos = self.photos.values().map(|p| Record::Put {
            id: p.id.to_string(),
            sha256: p.sha256,
            mime: p.mime.clone(),
            captions: p.captions.clone(),
            flag: p.flag,
            vector: p.vector.as_ref().clone(),
            attributes: p.attributes.as_ref().clone(),
            added_ms: p.added_ms,
        });
        // Content last: whatever evidence replaying the Puts teaches, the table ends as it is.
        photos.chain(content).collect()
    }

    /// The records that store staged `photos` (same ids replaced), with the flag changes their
    /// evidence spreads to other photos holding the same bytes; and the added/replaced counts.
    pub fn upsert_records(&self, photos: Vec<NewPhoto>) -> Result<(Upserted, Vec<Record>), ServeError> {
        // What is known of the bytes now decides over what the caller knew when it flagged the
        // photo (another server may have learned something since): fail closed.
        let photos: Vec<NewPhoto> = photos
            .into_iter()
            .map(|mut p| {
                let known = self.content.get(&p.sha256).map(|k| k.flag);
                p.flag = match (p.flag, known) {
                    (Flag::Captions, _) => Flag::Captions,
                    (_, Some(f @ (Flag::Reviewed | Flag::ReviewedClear | Flag::Captions | Flag::Detector))) => f,
                    (f, _) => f,
                };
                p
            })
            .collect();
        let mut out = Upserted { restricted: photos.iter().filter(|p| p.flag.restricted()).count() as u32, ..Upserted::default() };
        let mut seen = HashSet::new();
        for p in &photos {
            if !self.held(&p.sha256) {
                return Err(ServeError::Internal(format!("photo '{}' was not staged", imagesearch_compliance::quote(&p.id, 64))));
            }
            if self.photos.contains_key(p.id.as_str()) || !seen.insert(p.id.as_str()) {
                out.replaced += 1;
            } else {
                out.added += 1;
            }
        }
        let items: Vec<([u8; 32], Flag)> = photos.iter().map(|p| (p.sha256, p.flag)).collect();
        let spread = self.spread(&items, &seen);
        let mut records: Vec<Record> = photos
            .into_iter()
            .map(|p| Record::Put {
                id: p.id,
                sha256: p.sha256,
                mime: p.mime,
                captions: p.captions,
                flag: p.flag,
                vector: p.vector.as_ref().clone(),
                attributes: p.attributes,
                added_ms: p.added_ms,
            })
            .collect();
        records.extend(spread);
        Ok((out, records))
    }

    /// The records that remove `ids` (each once), and the ids that are not there.
    pub fn remove_records(&self, ids: &[String]) -> (Vec<String>, Vec<Record>) {
        let mut missing = Vec::new();
        let mut records = Vec::new();
        let mut once = HashSet::new();
        for id in ids {
            if !self.photos.contains_key(id.as_str()) {
                missing.push(id.clone());
            } else if once.insert(id.as_str()) {
                records.push(Record::Remove { id: id.clone() });
            }
        }
        (missing, records)
    }

    /// The records of a version's re-check, with what their evidence spreads: a photo goes from
    /// clear or unverified to detector or captions (a query detector read its captions), or from
    /// unverified to clear; any other change
    /// is dropped, because something stronger (a review, caption evidence) decided the photo
    /// since the caller looked (perhaps on another server sharing the gallery).
    pub fn flag_records(&self, changes: &[(String, Flag)]) -> Vec<Record> {
        let allowed = |id: &str, to: Flag| {
            matches!(
                (self.photos.get(id).map(|p| p.flag), to),
                (Some(Flag::Clear | Flag::Unverified), Flag::Detector | Flag::Captions) | (Some(Flag::Unverified), Flag::Clear)
            )
        };
        let changes: Vec<(String, Flag)> = changes.iter().filter(|(id, f)| allowed(id, *f)).cloned().collect();
        let changes = changes.as_slice();
        let items: Vec<([u8; 32], Flag)> =
            changes.iter().filter_map(|(id, flag)| self.photos.get(id.as_str()).map(|p| (p.sha256, *flag))).collect();
        let skip: HashSet<&str> = changes.iter().map(|(id, _)| id.as_str()).collect();
        let spread = self.spread(&items, &skip);
        changes.iter().map(|(id, flag)| Record::SetFlag { id: id.clone(), flag: *flag }).chain(spread).collect()
    }

    /// The records of a review of photo `id`'s bytes, applied to every photo holding them, and
    /// the photos whose flag changes. A photo whose own captions describe a child cannot be
    /// cleared (and keeps its caption flag when another photo's bytes are cleared).
    pub fn review_records(&self, id: &str, review: &Review) -> Result<(Vec<(Arc<str>, Flag)>, Vec<Record>), ServeError> {
        let photo = self.photos.get(id).cloned().ok_or_else(|| {
            ServeError::NotFound(format!("gallery photo '{}' does not exist", imagesearch_compliance::quote(id, 64)))
        })?;
        if !review.restricted && captions_describe_child(&photo.captions) {
            return Err(ServeError::FailedPrecondition(format!(
                "gallery photo '{}': its own captions describe a child; a review cannot clear it (replace the photo with other captions)",
                imagesearch_compliance::quote(id, 64)
            )));
        }
        let decided = if review.restricted { Flag::Reviewed } else { Flag::ReviewedClear };
        let mut records = Vec::new();
        let mut changed = Vec::new();
        let holders = self.holders.get(&photo.sha256).into_iter().flatten().filter_map(|id| self.photos.get(id));
        for p in holders {
            let flag = if captions_describe_child(&p.captions) { Flag::Captions } else { decided };
            if flag != p.flag {
                records.push(Record::SetFlag { id: p.id.to_string(), flag });
                changed.push((p.id.clone(), flag));
            }
        }
        // Last, so that on replay too the review (not the evidence its SetFlags teach) decides.
        records.push(Record::Content { sha256: photo.sha256, flag: decided, by: review.by.clone(), note: review.note.clone() });
        Ok((changed, records))
    }

    /// What will be known of each content hash these records touch once they are applied
    /// (the evidence their flags teach and the reviews they record): what a store that keeps
    /// the content table apart from the photos must write with them.
    pub fn content_after(&self, records: &[Record]) -> HashMap<[u8; 32], Known> {
        let mut out: HashMap<[u8; 32], Known> = HashMap::new();
        let mut sha_of: HashMap<&str, [u8; 32]> = HashMap::new();
        for r in records {
            let (sha, flag) = match r {
                Record::Put { id, sha256, flag, .. } => {
                    sha_of.insert(id.as_str(), *sha256);
                    (*sha256, *flag)
                }
                Record::SetFlag { id, flag } => {
                    let Some(sha) = sha_of.get(id.as_str()).copied().or_else(|| self.photos.get(id.as_str()).map(|p| p.sha256)) else { continue };
                    (sha, *flag)
                }
                Record::Content { sha256, flag, by, note } => {
                    out.insert(*sha256, Known { flag: *flag, by: by.clone(), note: note.clone() });
                    continue;
                }
                Record::Remove { id } => {
                    sha_of.remove(id.as_str());
                    continue;
                }
            };
            let known = out.get(&sha).or_else(|| self.content.get(&sha)).cloned();
            if let Some(new) = merge_evidence(known.as_ref().map(|k| k.flag), flag).filter(|f| Some(*f) != known.as_ref().map(|k| k.flag)) {
                out.insert(sha, Known { flag: new, by: String::new(), note: String::new() });
            }
        }
        out
    }
}
