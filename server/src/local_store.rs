//! The single-machine [`PhotoStore`]: everything in memory and on disk under one directory —
//! the photo bytes as content-addressed files (`photos/<sha256>`, written beside, synced and
//! renamed), and every change in a write-ahead log ([`crate::wal`]) synced before a write
//! returns. A `kill -9` at any moment loses nothing that was acknowledged and leaves nothing
//! corrupt; a full disk refuses the write (RESOURCE_EXHAUSTED) and leaves the log as it was.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::ServeError;
use crate::gallery::{captions_describe_child, merge_evidence, NewPhoto, PhotoMeta, PhotoStore, Review, StoreStats, Upserted};
use crate::wal::{is_disk_full, Flag, Log, Record};

/// What is known of some bytes: a flag and, for a review, who and why.
#[derive(Clone, Debug)]
struct Known {
    flag: Flag,
    by: String,
    note: String,
}

#[derive(Default)]
struct State {
    photos: HashMap<Arc<str>, PhotoMeta>,
    /// What is known of bytes by content hash (outlives the photos that raised it).
    content: HashMap<[u8; 32], Known>,
    /// Live photos per content hash (a file is deleted when no photo and no stage holds it).
    holders: HashMap<[u8; 32], HashSet<Arc<str>>>,
    /// Staged, not yet committed bytes per content hash.
    staged: HashMap<[u8; 32], usize>,
}

struct Inner {
    /// Held for the store's life: one server per data directory.
    _lock: File,
    log: Log,
    state: State,
}

/// The single-machine store.
pub struct LocalStore {
    dir: PathBuf,
    inner: Mutex<Inner>,
}

/// An I/O failure as the caller may see it: a full disk is RESOURCE_EXHAUSTED naming the disk,
/// anything else an internal storage error. Paths and OS details go to the log only.
fn io_error(path: &Path, e: &std::io::Error) -> ServeError {
    if is_disk_full(e) {
        tracing::error!(path = %path.display(), error = %e, "gallery disk full; write refused, nothing stored");
        ServeError::DiskFull
    } else {
        tracing::error!(path = %path.display(), error = %e, "gallery storage failed");
        ServeError::Storage("the gallery could not write to its disk; nothing was stored (details in the server log)".into())
    }
}

fn bump(map: &mut HashMap<[u8; 32], usize>, sha: [u8; 32], up: bool) {
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
    /// Applies a record; returns the content hashes that may have lost their last reference.
    fn apply(&mut self, r: Record) -> Option<[u8; 32]> {
        match r {
            Record::Put { id, sha256, mime, captions, flag, vector } => {
                let id: Arc<str> = id.into();
                let old = self.photos.insert(id.clone(), PhotoMeta { id: id.clone(), sha256, mime, captions, flag, vector: Arc::new(vector) });
                let released = old.map(|old| self.release(&old.id, old.sha256));
                self.holders.entry(sha256).or_default().insert(id);
                self.learn(sha256, flag);
                released
            }
            Record::Remove { id } => self.photos.remove(id.as_str()).map(|old| self.release(&old.id, old.sha256)),
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
    fn spread(&self, items: &[([u8; 32], Flag)], skip: &HashSet<&str>) -> Vec<Record> {
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

    fn held(&self, sha: &[u8; 32]) -> bool {
        self.holders.contains_key(sha) || self.staged.contains_key(sha)
    }

    /// The records that rebuild this state (compaction).
    fn snapshot(&self) -> Vec<Record> {
        let content = self.content.iter().map(|(sha, k)| Record::Content { sha256: *sha, flag: k.flag, by: k.by.clone(), note: k.note.clone() });
        let photos = self.photos.values().map(|p| Record::Put {
            id: p.id.to_string(),
            sha256: p.sha256,
            mime: p.mime.clone(),
            captions: p.captions.clone(),
            flag: p.flag,
            vector: p.vector.as_ref().clone(),
        });
        // Content last: whatever evidence replaying the Puts teaches, the table ends as it is.
        photos.chain(content).collect()
    }
}

impl LocalStore {
    /// Opens the store under `dir`, replaying its log; compacts the log when most of it is
    /// history, and deletes photo files nothing refers to.
    pub fn open(dir: &Path) -> Result<Self, ServeError> {
        let photos_dir = dir.join("photos");
        std::fs::create_dir_all(&photos_dir).map_err(|e| io_error(&photos_dir, &e))?;
        let lock_path = dir.join("lock");
        let lock = File::create(&lock_path).map_err(|e| io_error(&lock_path, &e))?;
        lock.try_lock().map_err(|_| {
            ServeError::Storage(format!("{} is in use by another server (one server per data directory)", dir.display()))
        })?;
        let log_path = dir.join("gallery.log");
        let (mut log, records, cut) = Log::open(&log_path).map_err(|e| io_error(&log_path, &e))?;
        if cut > 0 {
            tracing::warn!(bytes = cut, "gallery log had a torn tail (an unacknowledged write); cut it");
        }
        let n_records = records.len();
        let mut state = State::default();
        for r in records {
            state.apply(r);
        }
        // A photo whose file is missing cannot be served: drop it loudly rather than fail later.
        let missing: Vec<Arc<str>> = state
            .photos
            .values()
            .filter(|p| !photos_dir.join(hex::encode(p.sha256)).is_file())
            .map(|p| p.id.clone())
            .collect();
        for id in &missing {
            tracing::error!(id = %imagesearch_compliance::quote(id, 64), "gallery photo file missing; photo dropped");
            state.apply(Record::Remove { id: id.to_string() });
        }
        if n_records > 2 * (state.photos.len() + state.content.len()) + 16 || !missing.is_empty() {
            let live = state.snapshot();
            log = Log::rewrite(&log_path, &live).map_err(|e| io_error(&log_path, &e))?;
            tracing::info!(records = n_records, live = live.len(), "gallery log compacted");
        }
        let referenced: HashSet<String> = state.holders.keys().map(hex::encode).collect();
        if let Ok(entries) = std::fs::read_dir(&photos_dir) {
            for e in entries.filter_map(Result::ok) {
                let name = e.file_name().to_string_lossy().to_string();
                if !referenced.contains(&name) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(LocalStore { dir: dir.to_path_buf(), inner: Mutex::new(Inner { _lock: lock, log, state }) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn photo_path(&self, sha256: &[u8; 32]) -> PathBuf {
        self.dir.join("photos").join(hex::encode(sha256))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("gallery.log")
    }

    /// Writes bytes beside their final name, syncs and renames; a failure leaves no file.
    fn write_photo(&self, sha: &[u8; 32], bytes: &[u8]) -> Result<(), ServeError> {
        let path = self.photo_path(sha);
        if path.is_file() {
            return Ok(());
        }
        let tmp = path.with_extension(format!("tmp-{}-{}", std::process::id(), rand::random::<u32>()));
        let written = File::create(&tmp)
            .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, &path));
        written.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io_error(&path, &e)
        })
    }

    /// Appends records, then applies them; deletes files nothing holds any more.
    fn commit(&self, inner: &mut Inner, records: Vec<Record>) -> Result<(), ServeError> {
        inner.log.append(&records).map_err(|e| io_error(&self.log_path(), &e))?;
        let released: Vec<[u8; 32]> = records.into_iter().filter_map(|r| inner.state.apply(r)).collect();
        self.drop_unheld(inner, released);
        Ok(())
    }

    fn drop_unheld(&self, inner: &Inner, shas: impl IntoIterator<Item = [u8; 32]>) {
        for sha in shas {
            if !inner.state.held(&sha) {
                let _ = std::fs::remove_file(self.photo_path(&sha));
            }
        }
    }
}

impl PhotoStore for LocalStore {
    fn stage(&self, sha256: &[u8; 32], bytes: &[u8]) -> Result<(), ServeError> {
        // Pin first, so a concurrent removal of a photo with the same bytes keeps the file.
        bump(&mut self.lock().state.staged, *sha256, true);
        let written = self.write_photo(sha256, bytes);
        if written.is_err() {
            self.unstage(&[*sha256]);
        }
        written
    }

    fn unstage(&self, shas: &[[u8; 32]]) {
        let mut inner = self.lock();
        for sha in shas {
            bump(&mut inner.state.staged, *sha, false);
        }
        self.drop_unheld(&inner, shas.iter().copied());
    }

    fn upsert(&self, photos: Vec<NewPhoto>) -> Result<Upserted, ServeError> {
        let mut inner = self.lock();
        let mut out = Upserted::default();
        let mut seen = HashSet::new();
        for p in &photos {
            if !inner.state.held(&p.sha256) {
                return Err(ServeError::Internal(format!("photo '{}' was not staged", imagesearch_compliance::quote(&p.id, 64))));
            }
            if inner.state.photos.contains_key(p.id.as_str()) || !seen.insert(p.id.as_str()) {
                out.replaced += 1;
            } else {
                out.added += 1;
            }
        }
        let shas: Vec<[u8; 32]> = photos.iter().map(|p| p.sha256).collect();
        let spread = {
            let items: Vec<([u8; 32], Flag)> = photos.iter().map(|p| (p.sha256, p.flag)).collect();
            inner.state.spread(&items, &seen)
        };
        let mut records: Vec<Record> = photos
            .into_iter()
            .map(|p| Record::Put { id: p.id, sha256: p.sha256, mime: p.mime, captions: p.captions, flag: p.flag, vector: p.vector.as_ref().clone() })
            .collect();
        records.extend(spread);
        // The renames of the staged files are made durable once, before the records refer to them.
        let photos_dir = self.dir.join("photos");
        let committed = File::open(&photos_dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error(&photos_dir, &e))
            .and_then(|()| self.commit(&mut inner, records));
        // Committed or not, the stream's pins are released.
        for sha in &shas {
            bump(&mut inner.state.staged, *sha, false);
        }
        self.drop_unheld(&inner, shas);
        committed.map(|()| out)
    }

    fn remove(&self, ids: &[String]) -> Result<Vec<String>, ServeError> {
        let mut inner = self.lock();
        let mut missing = Vec::new();
        let mut records = Vec::new();
        let mut once = HashSet::new();
        for id in ids {
            if !inner.state.photos.contains_key(id.as_str()) {
                missing.push(id.clone());
            } else if once.insert(id.as_str()) {
                records.push(Record::Remove { id: id.clone() });
            }
        }
        self.commit(&mut inner, records)?;
        Ok(missing)
    }

    fn set_flags(&self, changes: &[(String, Flag)]) -> Result<(), ServeError> {
        let mut inner = self.lock();
        let items: Vec<([u8; 32], Flag)> =
            changes.iter().filter_map(|(id, flag)| inner.state.photos.get(id.as_str()).map(|p| (p.sha256, *flag))).collect();
        let skip: HashSet<&str> = changes.iter().map(|(id, _)| id.as_str()).collect();
        let spread = inner.state.spread(&items, &skip);
        let records = changes.iter().map(|(id, flag)| Record::SetFlag { id: id.clone(), flag: *flag }).chain(spread).collect();
        self.commit(&mut inner, records)
    }

    fn content_flag(&self, sha256: &[u8; 32]) -> Option<Flag> {
        self.lock().state.content.get(sha256).map(|k| k.flag)
    }

    fn review(&self, id: &str, review: &Review) -> Result<Vec<(Arc<str>, Flag)>, ServeError> {
        let mut inner = self.lock();
        let photo = inner.state.photos.get(id).cloned().ok_or_else(|| {
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
        let holders = inner.state.holders.get(&photo.sha256).into_iter().flatten().filter_map(|id| inner.state.photos.get(id));
        for p in holders {
            // A photo whose own captions describe a child stays restricted by them.
            let flag = if captions_describe_child(&p.captions) { Flag::Captions } else { decided };
            if flag != p.flag {
                records.push(Record::SetFlag { id: p.id.to_string(), flag });
                changed.push((p.id.clone(), flag));
            }
        }
        // Last, so that on replay too the review (not the evidence its SetFlags teach) decides.
        records.push(Record::Content { sha256: photo.sha256, flag: decided, by: review.by.clone(), note: review.note.clone() });
        self.commit(&mut inner, records)?;
        Ok(changed)
    }

    fn get(&self, id: &str) -> Option<PhotoMeta> {
        self.lock().state.photos.get(id).cloned()
    }

    fn photo_bytes(&self, id: &str) -> Result<Option<Vec<u8>>, ServeError> {
        let Some(sha) = self.lock().state.photos.get(id).map(|p| p.sha256) else { return Ok(None) };
        let path = self.photo_path(&sha);
        std::fs::read(&path).map(Some).map_err(|e| io_error(&path, &e))
    }

    fn all(&self) -> Vec<PhotoMeta> {
        self.lock().state.photos.values().cloned().collect()
    }

    fn len(&self) -> usize {
        self.lock().state.photos.len()
    }

    fn stats(&self) -> StoreStats {
        let (photos, log_bytes, shas): (Vec<Flag>, u64, Vec<[u8; 32]>) = {
            let inner = self.lock();
            (inner.state.photos.values().map(|p| p.flag).collect(), inner.log.len(), inner.state.holders.keys().copied().collect())
        };
        let mut s = StoreStats { photos: photos.len() as u64, log_bytes, ..Default::default() };
        for f in photos {
            s.by_flag[f as usize] += 1;
        }
        s.photo_bytes = shas.iter().map(|sha| std::fs::metadata(self.photo_path(sha)).map(|m| m.len()).unwrap_or(0)).sum();
        s
    }
}

#[cfg(test)]
#[path = "local_store_tests.rs"]
mod tests;
