//! A model repository in an S3-compatible bucket (`--models s3://bucket/prefix`), mirrored into
//! a local cache that the server loads from: `<prefix>/encoders/<name>/…` and
//! `<prefix>/scorer/<version>/…`, laid out as the directory repository.
//!
//! Credentials and endpoint come from the environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`, `AWS_ENDPOINT` for a server other than AWS,
//! `AWS_ALLOW_HTTP=true` for plain HTTP). A version is downloaded into a staging directory, every
//! file its manifest lists is checked against its sha256, and only then renamed into the cache:
//! a version that is half uploaded, altered or cut off by a crash never loads. Versions already
//! cached and intact are not downloaded again.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use imagesearch_model::scorer::MANIFEST_FILE;
use imagesearch_model::ScorerManifest;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;

use crate::error::ServeError;

/// Files a version may hold besides those its manifest lists (not needed to serve).
const OPTIONAL: &[&str] = &["report.html"];

/// Models in a bucket, and the local cache they are served from.
pub struct BucketModels {
    store: Arc<dyn ObjectStore>,
    url: String,
    prefix: String,
    cache: PathBuf,
}

fn bucket_error(what: &str, url: &str, e: impl std::fmt::Display) -> ServeError {
    ServeError::Unavailable(format!("model bucket {url}: {what}: {e}"))
}

/// Runs a future to completion on a runtime of its own, on a thread of its own: callers are
/// blocking code, some of it inside the server's runtime.
fn block_on<T: Send>(f: impl std::future::Future<Output = T> + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime for the model bucket").block_on(f)
        })
        .join()
        .expect("model bucket thread")
    })
}

impl BucketModels {
    /// Whether `--models` names a bucket.
    pub fn is_bucket(models: &Path) -> bool {
        models.to_str().is_some_and(|s| s.starts_with("s3://"))
    }

    /// The bucket at `url` (`s3://bucket[/prefix]`), cached under `cache`.
    pub fn new(url: &str, cache: &Path) -> Result<Self, ServeError> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| ServeError::InvalidArgument(format!("--models {url}: not an s3:// URL")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(ServeError::InvalidArgument(format!("--models {url}: no bucket name")));
        }
        let store = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| ServeError::InvalidArgument(format!("--models {url}: {e}")))?;
        std::fs::create_dir_all(cache.join("scorer")).map_err(|e| ServeError::Storage(format!("model cache {}: {e}", cache.display())))?;
        Ok(BucketModels { store: Arc::new(store), url: url.to_string(), prefix: prefix.trim_matches('/').to_string(), cache: cache.to_path_buf() })
    }

    /// The local directory the repository is served from.
    pub fn cache(&self) -> &Path {
        &self.cache
    }

    fn key(&self, rel: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(rel)
        } else {
            ObjectPath::from(format!("{}/{rel}", self.prefix))
        }
    }

    /// Keys under `rel` (relative to the prefix), with their sizes.
    fn list(&self, rel: &str) -> Result<Vec<(String, u64)>, ServeError> {
        let root = self.key(rel);
        let skip = self.key("").as_ref().len() + usize::from(!self.prefix.is_empty());
        let listed: Result<Vec<_>, _> = block_on(self.store.list(Some(&root)).try_collect::<Vec<_>>());
        let listed = listed.map_err(|e| bucket_error("listing", &self.url, e))?;
        Ok(listed.into_iter().map(|m| (m.location.as_ref()[skip..].to_string(), m.size)).collect())
    }

    fn get(&self, rel: &str) -> Result<Vec<u8>, ServeError> {
        let key = self.key(rel);
        block_on(async { self.store.get(&key).await?.bytes().await })
            .map(|b| b.to_vec())
            .map_err(|e| bucket_error(&format!("reading {rel}"), &self.url, e))
    }

    /// Scorer versions in the bucket that have a manifest, ascending.
    pub fn versions(&self) -> Result<Vec<u32>, ServeError> {
        let mut v: Vec<u32> = self
            .list("scorer")?
            .iter()
            .filter_map(|(k, _)| k.strip_prefix("scorer/")?.strip_suffix(&format!("/{MANIFEST_FILE}"))?.parse().ok())
            .collect();
        v.sort_unstable();
        v.dedup();
        Ok(v)
    }

    /// Brings the encoders into the cache (files missing or of another size are downloaded).
    pub fn fetch_encoders(&self) -> Result<(), ServeError> {
        let files = self.list("encoders")?;
        if files.is_empty() {
            return Err(ServeError::NotFound(format!("model bucket {}: no encoders/ under the prefix", self.url)));
        }
        for (rel, size) in files {
            let path = self.local(&rel)?;
            if std::fs::metadata(&path).is_ok_and(|m| m.len() == size) {
                continue;
            }
            let bytes = self.get(&rel)?;
            write_atomically(&path, &bytes)?;
        }
        Ok(())
    }

    /// A key's place in the cache; keys that would leave it are refused.
    fn local(&self, rel: &str) -> Result<PathBuf, ServeError> {
        let bad = rel.split('/').any(|p| p.is_empty() || p == "." || p == "..");
        if bad {
            return Err(ServeError::InvalidArgument(format!("model bucket {}: key '{}' is not a plain relative path", self.url, imagesearch_compliance::quote(rel, 64))));
        }
        Ok(self.cache.join(rel))
    }

    /// Brings scorer `version` into the cache, every file verified against its manifest's
    /// sha256 before the version appears there. Returns false when the bucket has no such
    /// version.
    pub fn fetch_version(&self, version: u32) -> Result<bool, ServeError> {
        let dir = self.cache.join("scorer").join(version.to_string());
        if let Ok(m) = ScorerManifest::load(&dir) {
            if imagesearch_model::hashing::verify_files(&dir, &m.files).is_ok() {
                return Ok(true);
            }
        }
        let base = format!("scorer/{version}");
        let listed = self.list(&base)?;
        if !listed.iter().any(|(k, _)| k == &format!("{base}/{MANIFEST_FILE}")) {
            return Ok(false);
        }
        tracing::info!(version, bucket = %self.url, "downloading a scorer version");
        let staging = self.cache.join("scorer").join(format!(".{version}.download-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).map_err(|e| ServeError::Storage(format!("{}: {e}", staging.display())))?;
        if let Err(e) = self.download_version(version, &listed, &staging) {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&staging, &dir).map_err(|e| ServeError::Storage(format!("{}: {e}", dir.display())))?;
        tracing::info!(version, "scorer version downloaded and verified");
        Ok(true)
    }

    /// Downloads version `version` (whose keys are `listed`) into `staging` and checks every
    /// file its manifest lists against its sha256.
    fn download_version(&self, version: u32, listed: &[(String, u64)], staging: &Path) -> Result<(), ServeError> {
        let base = format!("scorer/{version}");
        let manifest_bytes = self.get(&format!("{base}/{MANIFEST_FILE}"))?;
        std::fs::write(staging.join(MANIFEST_FILE), &manifest_bytes).map_err(|e| ServeError::Storage(e.to_string()))?;
        let manifest = ScorerManifest::load(staging).map_err(|e| bucket_error(&format!("version {version} manifest"), &self.url, e))?;
        let optional = OPTIONAL.iter().copied().filter(|f| listed.iter().any(|(k, _)| *k == format!("{base}/{f}")));
        for file in manifest.files.keys().map(String::as_str).chain(optional) {
            if file.contains('/') || file.starts_with('.') {
                return Err(ServeError::InvalidArgument(format!(
                    "version {version}: the manifest lists '{}', not a plain file name",
                    imagesearch_compliance::quote(file, 64)
                )));
            }
            let bytes = self.get(&format!("{base}/{file}"))?;
            std::fs::write(staging.join(file), &bytes).map_err(|e| ServeError::Storage(e.to_string()))?;
        }
        // Damaged or half-published: not a passing failure, so not UNAVAILABLE.
        imagesearch_model::hashing::verify_files(staging, &manifest.files).map_err(|e| {
            ServeError::FailedPrecondition(format!("model bucket {}: version {version} failed its sha256 check, not loaded: {e}", self.url))
        })
    }
}

/// Writes a file through a temporary name in its directory, so a reader never sees half of it.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ServeError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| ServeError::Storage(format!("{}: {e}", dir.display())))?;
    let tmp = dir.join(format!(".{}.part-{}", path.file_name().and_then(|n| n.to_str()).unwrap_or("file"), std::process::id()));
    std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path)).map_err(|e| ServeError::Storage(format!("{}: {e}", path.display())))
}
