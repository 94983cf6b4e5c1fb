//! The photo collection: for every photo its id, image-encoder vector, captions, restricted
//! flag and bytes. [`PhotoStore`] is the narrow interface the server uses, so a distributed
//! vector database can take the place of [`LocalStore`] when one machine no longer holds the
//! collection.
//!
//! `LocalStore` keeps everything in memory and on disk under its directory: the photo bytes as
//! content-addressed files (`photos/<sha256>`, written beside and renamed), and every change in a
//! write-ahead log ([`crate::wal`]) synced before a write returns. A `kill -9` at any moment
//! loses nothing that was acknowledged and leaves nothing corrupt.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::ServeError;
use crate::wal::{Flag, Log, Record};

/// A photo to store (already decoded, checked and encoded).
#[derive(Clone, Debug)]
pub struct NewPhoto {
    pub id: String,
    pub bytes: Arc<Vec<u8>>,
    pub sha256: [u8; 32],
    pub mime: String,
    pub captions: Vec<String>,
    pub flag: Flag,
    pub vector: Arc<Vec<f32>>,
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
}

/// Counts for `Gallery.Stats`.
#[derive(Clone, Debug, Default)]
pub struct StoreStats {
    pub photos: u64,
    pub by_flag: [u64; 4],
    pub photo_bytes: u64,
    pub log_bytes: u64,
}

/// Result of an upsert.
#[derive(Debug, Default)]
pub struct Upserted {
    pub added: u32,
    pub replaced: u32,
}

/// The gallery's storage.
pub trait PhotoStore: Send + Sync {
    /// Stores photos durably (replacing same ids) before returning.
    fn upsert(&self, photos: Vec<NewPhoto>) -> Result<Upserted, ServeError>;
    /// Removes photos durably; returns the ids that were not there.
    fn remove(&self, ids: &[String]) -> Result<Vec<String>, ServeError>;
    /// Changes flags durably.
    fn set_flags(&self, changes: &[(String, Flag)]) -> Result<(), ServeError>;
    fn get(&self, id: &str) -> Option<PhotoMeta>;
    fn photo_bytes(&self, id: &str) -> Result<Option<Vec<u8>>, ServeError>;
    /// Every photo, for building an index.
    fn all(&self) -> Vec<PhotoMeta>;
    fn len(&self) -> usize;
    fn stats(&self) -> StoreStats;
}

struct Inner {
    /// Held for the store's life: one server per data directory.
    _lock: std::fs::File,
    log: Log,
    photos: HashMap<Arc<str>, PhotoMeta>,
}

/// The single-machine store.
pub struct LocalStore {
    dir: PathBuf,
    inner: Mutex<Inner>,
}

fn storage(path: &Path, e: impl std::fmt::Display) -> ServeError {
    ServeError::Storage(format!("{}: {e}", path.display()))
}

fn apply(photos: &mut HashMap<Arc<str>, PhotoMeta>, r: Record) {
    match r {
        Record::Put { id, sha256, mime, captions, flag, vector } => {
            let id: Arc<str> = id.into();
            photos.insert(id.clone(), PhotoMeta { id, sha256, mime, captions, flag, vector: Arc::new(vector) });
        }
        Record::Remove { id } => {
            photos.remove(id.as_str());
        }
        Record::SetFlag { id, flag } => {
            if let Some(p) = photos.get_mut(id.as_str()) {
                p.flag = flag;
            }
        }
    }
}

fn put_record(p: &PhotoMeta) -> Record {
    Record::Put {
        id: p.id.to_string(),
        sha256: p.sha256,
        mime: p.mime.clone(),
        captions: p.captions.clone(),
        flag: p.flag,
        vector: p.vector.as_ref().clone(),
    }
}

impl LocalStore {
    /// Opens the store under `dir`, replaying its log; compacts the log when most of it is
    /// history, and deletes photo files nothing refers to.
    pub fn open(dir: &Path) -> Result<Self, ServeError> {
        let photos_dir = dir.join("photos");
        std::fs::create_dir_all(&photos_dir).map_err(|e| storage(&photos_dir, e))?;
        let lock_path = dir.join("lock");
        let lock = std::fs::File::create(&lock_path).map_err(|e| storage(&lock_path, e))?;
        lock.try_lock().map_err(|_| {
            ServeError::Storage(format!("{} is in use by another server (one server per data directory)", dir.display()))
        })?;
        let log_path = dir.join("gallery.log");
        let (mut log, records, cut) = Log::open(&log_path).map_err(|e| storage(&log_path, e))?;
        if cut > 0 {
            tracing::warn!(bytes = cut, "gallery log had a torn tail (an unacknowledged write); cut it");
        }
        let n_records = records.len();
        let mut photos = HashMap::new();
        for r in records {
            apply(&mut photos, r);
        }
        // A photo whose file is missing cannot be served: drop it loudly rather than fail later.
        let missing: Vec<Arc<str>> = photos
            .values()
            .filter(|p| !photos_dir.join(hex::encode(p.sha256)).is_file())
            .map(|p| p.id.clone())
            .collect();
        for id in &missing {
            tracing::error!(id = %id, "gallery photo file missing; photo dropped");
            photos.remove(id);
        }
        if n_records > 2 * photos.len() + 16 || !missing.is_empty() {
            let live: Vec<Record> = photos.values().map(put_record).collect();
            log = Log::rewrite(&log_path, &live).map_err(|e| storage(&log_path, e))?;
            tracing::info!(records = n_records, live = live.len(), "gallery log compacted");
        }
        let referenced: HashSet<String> = photos.values().map(|p| hex::encode(p.sha256)).collect();
        if let Ok(entries) = std::fs::read_dir(&photos_dir) {
            for e in entries.filter_map(Result::ok) {
                let name = e.file_name().to_string_lossy().to_string();
                if !referenced.contains(&name) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(LocalStore { dir: dir.to_path_buf(), inner: Mutex::new(Inner { _lock: lock, log, photos }) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn photo_path(&self, sha256: &[u8; 32]) -> PathBuf {
        self.dir.join("photos").join(hex::encode(sha256))
    }

    fn write_photo(&self, p: &NewPhoto) -> Result<(), ServeError> {
        let path = self.photo_path(&p.sha256);
        if path.is_file() {
            return Ok(());
        }
        imagesearch_model::repository::write_atomic(&path, &p.bytes).map_err(|e| storage(&path, e))
    }

    fn drop_unreferenced(&self, inner: &Inner, shas: impl IntoIterator<Item = [u8; 32]>) {
        for sha in shas {
            if !inner.photos.values().any(|p| p.sha256 == sha) {
                let _ = std::fs::remove_file(self.photo_path(&sha));
            }
        }
    }
}

impl PhotoStore for LocalStore {
    fn upsert(&self, photos: Vec<NewPhoto>) -> Result<Upserted, ServeError> {
        // Bytes first (durable, renamed into place), then the log record that refers to them.
        for p in &photos {
            self.write_photo(p)?;
        }
        let records: Vec<Record> = photos
            .iter()
            .map(|p| Record::Put {
                id: p.id.clone(),
                sha256: p.sha256,
                mime: p.mime.clone(),
                captions: p.captions.clone(),
                flag: p.flag,
                vector: p.vector.as_ref().clone(),
            })
            .collect();
        let mut inner = self.lock();
        let path = self.dir.join("gallery.log");
        inner.log.append(&records).map_err(|e| storage(&path, e))?;
        let mut out = Upserted::default();
        let mut old_shas = Vec::new();
        for r in records {
            if let Record::Put { id, .. } = &r {
                match inner.photos.get(id.as_str()) {
                    Some(old) => {
                        out.replaced += 1;
                        old_shas.push(old.sha256);
                    }
                    None => out.added += 1,
                }
            }
            apply(&mut inner.photos, r);
        }
        self.drop_unreferenced(&inner, old_shas);
        Ok(out)
    }

    fn remove(&self, ids: &[String]) -> Result<Vec<String>, ServeError> {
        let mut inner = self.lock();
        let (present, missing): (Vec<&String>, Vec<&String>) =
            ids.iter().partition(|id| inner.photos.contains_key(id.as_str()));
        let records: Vec<Record> = present.iter().map(|id| Record::Remove { id: id.to_string() }).collect();
        let path = self.dir.join("gallery.log");
        inner.log.append(&records).map_err(|e| storage(&path, e))?;
        let mut shas = Vec::new();
        for r in records {
            if let Record::Remove { id } = &r {
                if let Some(p) = inner.photos.get(id.as_str()) {
                    shas.push(p.sha256);
                }
            }
            apply(&mut inner.photos, r);
        }
        self.drop_unreferenced(&inner, shas);
        Ok(missing.into_iter().cloned().collect())
    }

    fn set_flags(&self, changes: &[(String, Flag)]) -> Result<(), ServeError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut inner = self.lock();
        let records: Vec<Record> =
            changes.iter().map(|(id, flag)| Record::SetFlag { id: id.clone(), flag: *flag }).collect();
        let path = self.dir.join("gallery.log");
        inner.log.append(&records).map_err(|e| storage(&path, e))?;
        for r in records {
            apply(&mut inner.photos, r);
        }
        Ok(())
    }

    fn get(&self, id: &str) -> Option<PhotoMeta> {
        self.lock().photos.get(id).cloned()
    }

    fn photo_bytes(&self, id: &str) -> Result<Option<Vec<u8>>, ServeError> {
        let Some(sha) = self.lock().photos.get(id).map(|p| p.sha256) else { return Ok(None) };
        let path = self.photo_path(&sha);
        std::fs::read(&path).map(Some).map_err(|e| storage(&path, e))
    }

    fn all(&self) -> Vec<PhotoMeta> {
        self.lock().photos.values().cloned().collect()
    }

    fn len(&self) -> usize {
        self.lock().photos.len()
    }

    fn stats(&self) -> StoreStats {
        let inner = self.lock();
        let mut s = StoreStats { photos: inner.photos.len() as u64, log_bytes: inner.log.len(), ..Default::default() };
        let mut seen = HashSet::new();
        for p in inner.photos.values() {
            s.by_flag[p.flag as usize] += 1;
            if seen.insert(p.sha256) {
                s.photo_bytes += std::fs::metadata(self.photo_path(&p.sha256)).map(|m| m.len()).unwrap_or(0);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photo(id: &str, content: &[u8], flag: Flag) -> NewPhoto {
        NewPhoto {
            id: id.into(),
            bytes: Arc::new(content.to_vec()),
            sha256: imagesearch_model::hashing::sha256(content),
            mime: "image/jpeg".into(),
            captions: vec![],
            flag,
            vector: Arc::new(vec![content.len() as f32; 4]),
        }
    }

    #[test]
    fn survives_reopen_with_replacements_removals_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = LocalStore::open(dir.path()).unwrap();
            let up = s.upsert(vec![photo("a", b"aaa", Flag::Clear), photo("b", b"bb", Flag::Unverified)]).unwrap();
            assert_eq!((up.added, up.replaced), (2, 0));
            let up = s.upsert(vec![photo("a", b"a2", Flag::Clear)]).unwrap();
            assert_eq!((up.added, up.replaced), (0, 1));
            assert_eq!(s.remove(&["b".into(), "zzz".into()]).unwrap(), vec!["zzz".to_string()]);
            s.upsert(vec![photo("c", b"c", Flag::Unverified)]).unwrap();
            s.set_flags(&[("c".into(), Flag::Detector)]).unwrap();
        }
        let s = LocalStore::open(dir.path()).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s.photo_bytes("a").unwrap().unwrap(), b"a2");
        assert_eq!(s.get("c").unwrap().flag, Flag::Detector);
        assert!(s.get("b").is_none());
        // Replaced and removed photos' files are gone.
        assert_eq!(std::fs::read_dir(dir.path().join("photos")).unwrap().count(), 2);
        let st = s.stats();
        assert_eq!(st.photos, 2);
        assert_eq!(st.by_flag[Flag::Detector as usize], 1);
    }

    #[test]
    fn one_store_per_directory() {
        let dir = tempfile::tempdir().unwrap();
        let first = LocalStore::open(dir.path()).unwrap();
        let second = LocalStore::open(dir.path()).err().expect("a second store on the same directory is refused");
        assert!(second.to_string().contains("in use"), "{second}");
        drop(first);
        LocalStore::open(dir.path()).unwrap();
    }

    #[test]
    fn a_torn_log_tail_loses_only_the_unacknowledged_write() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = LocalStore::open(dir.path()).unwrap();
            s.upsert(vec![photo("a", b"aaa", Flag::Clear)]).unwrap();
        }
        let log = dir.path().join("gallery.log");
        let mut bytes = std::fs::read(&log).unwrap();
        let framed = crate::wal::frame(&put_record(&PhotoMeta {
            id: "b".into(), sha256: [1; 32], mime: "image/png".into(), captions: vec![], flag: Flag::Clear, vector: Arc::new(vec![1.0]),
        }));
        bytes.extend_from_slice(&framed[..framed.len() - 3]);
        std::fs::write(&log, bytes).unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        assert_eq!(s.len(), 1);
        assert!(s.get("a").is_some());
    }
}
