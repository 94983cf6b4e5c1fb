//! The single-machine [`PhotoStore`]: everything in memory and on disk under one directory —
//! the photo bytes as content-addressed files (`photos/<sha256>`, written beside, synced and
//! renamed), and every change in a write-ahead log ([`crate::wal`]) synced before a write
//! returns. A `kill -9` at any moment loses nothing that was acknowledged and leaves nothing
//! corrupt; a full disk refuses the write (RESOURCE_EXHAUSTED) and leaves the log as it was.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::ServeError;
use crate::filter::PhotoFilter;
use crate::gallery::{NewPhoto, PhotoMeta, PhotoStore, Review, StoreStats, Upserted};
use crate::gallery_state::{bump, State};
use crate::wal::{is_disk_full, Flag, Log, Record};

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
        let mut state = State::with_keywords();
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

    /// The records that rebuild the gallery: every photo, then what is known of every content
    /// (a migration to another store copies these).
    pub fn snapshot(&self) -> Vec<Record> {
        self.lock().state.snapshot()
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
        let shas: Vec<[u8; 32]> = photos.iter().map(|p| p.sha256).collect();
        let planned = inner.state.upsert_records(photos);
        let committed = planned.and_then(|(out, records)| {
            // The renames of the staged files are made durable once, before the records refer to them.
            let photos_dir = self.dir.join("photos");
            File::open(&photos_dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error(&photos_dir, &e))
                .and_then(|()| self.commit(&mut inner, records))
                .map(|()| out)
        });
        // Committed or not, the stream's pins are released.
        for sha in &shas {
            bump(&mut inner.state.staged, *sha, false);
        }
        self.drop_unheld(&inner, shas);
        committed
    }

    fn remove(&self, ids: &[String]) -> Result<Vec<String>, ServeError> {
        let mut inner = self.lock();
        let (missing, records) = inner.state.remove_records(ids);
        self.commit(&mut inner, records)?;
        Ok(missing)
    }

    fn set_flags(&self, changes: &[(String, Flag)]) -> Result<(), ServeError> {
        let mut inner = self.lock();
        let records = inner.state.flag_records(changes);
        self.commit(&mut inner, records)
    }

    fn content_flag(&self, sha256: &[u8; 32]) -> Option<Flag> {
        self.lock().state.content.get(sha256).map(|k| k.flag)
    }

    fn review(&self, id: &str, review: &Review) -> Result<Vec<(Arc<str>, Flag)>, ServeError> {
        let mut inner = self.lock();
        let (changed, records) = inner.state.review_records(id, review)?;
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

    fn matching(&self, filter: &PhotoFilter) -> HashSet<Arc<str>> {
        self.lock().state.matching(filter)
    }

    fn keyword_ranking(&self, query: &str, restricted_region: bool, filter: &PhotoFilter, limit: usize) -> Result<Vec<Arc<str>>, ServeError> {
        Ok(self.lock().state.keyword_ranking(query, restricted_region, filter, limit))
    }
}

#[cfg(test)]
#[path = "local_store_tests.rs"]
mod tests;
