//! The model repository on disk (Triton-like):
//!
//! ```text
//! <root>/encoders/<name>/   encoder .pt, tokenizer.json (text), manifest.json
//! <root>/scorer/<version>/  scorer.pt, image_tower.pt, text_tower.pt, manifest.json, report.html
//! ```
//! Versions count up from 1 and are never reused: the highest number ever handed out is kept
//! in `scorer/.last_version`. A version is written into a staging directory and renamed into
//! place, so a crash never leaves half a version.

use std::path::{Path, PathBuf};

use crate::ModelError;

const COUNTER_FILE: &str = ".last_version";

/// A model repository rooted at a directory.
#[derive(Clone, Debug)]
pub struct ModelRepository {
    root: PathBuf,
}

impl ModelRepository {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ModelRepository { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory of a named encoder.
    pub fn encoder_dir(&self, name: &str) -> PathBuf {
        self.root.join("encoders").join(name)
    }

    /// Directory holding all scorer versions.
    pub fn scorer_root(&self) -> PathBuf {
        self.root.join("scorer")
    }

    /// Directory of one scorer version.
    pub fn version_dir(&self, version: u32) -> PathBuf {
        self.scorer_root().join(version.to_string())
    }

    /// Complete scorer versions (numeric directories with a manifest), ascending.
    pub fn versions(&self) -> Result<Vec<u32>, ModelError> {
        let root = self.scorer_root();
        let entries = match std::fs::read_dir(&root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ModelError::io(&root, e)),
        };
        let mut versions: Vec<u32> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
            .filter(|v| self.version_dir(*v).join(crate::scorer::MANIFEST_FILE).is_file())
            .collect();
        versions.sort_unstable();
        Ok(versions)
    }

    /// The newest complete version.
    pub fn latest(&self) -> Result<Option<u32>, ModelError> {
        Ok(self.versions()?.last().copied())
    }

    /// Reserves the next version number and a staging directory for it.
    pub fn stage(&self) -> Result<StagedVersion, ModelError> {
        let root = self.scorer_root();
        std::fs::create_dir_all(&root).map_err(|e| ModelError::io(&root, e))?;
        let counter = root.join(COUNTER_FILE);
        // Two trainers finishing at once must not be handed the same number.
        let lock_path = root.join(".lock");
        let lock = std::fs::File::create(&lock_path).map_err(|e| ModelError::io(&lock_path, e))?;
        lock.lock().map_err(|e| ModelError::io(&lock_path, e))?;
        let last_handed_out = std::fs::read_to_string(&counter)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(0);
        let existing = std::fs::read_dir(&root)
            .map_err(|e| ModelError::io(&root, e))?
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
            .max()
            .unwrap_or(0);
        let version = last_handed_out.max(existing) + 1;
        write_atomic(&counter, version.to_string().as_bytes())?;
        let dir = root.join(format!(".staging-{version}-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| ModelError::io(&dir, e))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| ModelError::io(&dir, e))?;
        Ok(StagedVersion { version, dir, target: self.version_dir(version), committed: false })
    }
}

/// A version being written; renamed into place by [`StagedVersion::commit`], removed on drop
/// otherwise.
#[derive(Debug)]
pub struct StagedVersion {
    pub version: u32,
    pub dir: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl StagedVersion {
    /// Atomically publishes the version; returns its final directory.
    pub fn commit(mut self) -> Result<PathBuf, ModelError> {
        sync_dir(&self.dir);
        std::fs::rename(&self.dir, &self.target).map_err(|e| ModelError::io(&self.target, e))?;
        if let Some(parent) = self.target.parent() {
            sync_dir(parent);
        }
        self.committed = true;
        Ok(self.target.clone())
    }
}

impl Drop for StagedVersion {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Writes a file by writing a temporary sibling and renaming it over the target.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    // A failed write (a full disk) leaves no half file behind.
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        ModelError::io(path, e)
    })
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_up_and_are_never_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = ModelRepository::new(tmp.path());
        assert_eq!(repo.latest().unwrap(), None);
        let staged = repo.stage().unwrap();
        assert_eq!(staged.version, 1);
        std::fs::write(staged.dir.join("manifest.json"), "{}").unwrap();
        let dir = staged.commit().unwrap();
        assert_eq!(dir, repo.version_dir(1));
        assert_eq!(repo.versions().unwrap(), vec![1]);

        // An abandoned stage leaves nothing behind but still consumes its number.
        let staged = repo.stage().unwrap();
        assert_eq!(staged.version, 2);
        let staging_dir = staged.dir.clone();
        drop(staged);
        assert!(!staging_dir.exists());
        assert_eq!(repo.versions().unwrap(), vec![1]);

        // Deleting a version does not free its number.
        std::fs::remove_dir_all(repo.version_dir(1)).unwrap();
        assert_eq!(repo.stage().unwrap().version, 3);
    }
}
