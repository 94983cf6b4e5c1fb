//! Encoder vectors of photos and texts, cached on disk.
//!
//! The cache is one append-only file per encoder (named by the encoder's sha256): records of
//! `[32-byte key][u32 dim][dim × f32]`, where the key is the sha256 of the content (photo bytes
//! plus view, or the normalised text the model reads). A torn record at the end (a crash mid-write) is cut off on open, so a
//! re-run resumes where encoding stopped and a second run encodes nothing.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use imagesearch_model::preprocess::{self, ImageLimits};
use imagesearch_model::views::photo_vector;
use imagesearch_model::views::View;
use imagesearch_model::{ImageEncoder, ImageViews, TextEncoder};
use sha2::{Digest, Sha256};
use tch::Tensor;

use crate::progress::Progress;
use crate::tables::Problem;

/// A cache key: sha256 of the content.
pub type Key = [u8; 32];

/// Errors of the vector cache and the encoding passes.
#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Model(#[from] imagesearch_model::ModelError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> VectorError + '_ {
    move |source| VectorError::Io { path: path.to_path_buf(), source }
}

/// Key of a photo view: sha256(photo bytes ‖ view tag).
pub fn image_key(bytes_sha: &[u8; 32], view: View) -> Key {
    let mut h = Sha256::new();
    h.update(bytes_sha);
    h.update(view.tag().as_bytes());
    h.finalize().into()
}

/// Key of a text: sha256("text:" ‖ the text the model reads), so two spellings the model reads
/// alike share a vector and a change of the normaliser never reuses a stale one.
pub fn text_key(text: &str) -> Key {
    let mut h = Sha256::new();
    h.update(b"text:");
    h.update(imagesearch_compliance::normalize(text).as_bytes());
    h.finalize().into()
}

/// Append-only on-disk map from content key to vector, for one encoder.
pub struct VectorCache {
    path: PathBuf,
    dim: usize,
    map: HashMap<Key, Vec<f32>>,
    writer: BufWriter<File>,
}

impl VectorCache {
    /// Opens (or creates) the cache of an encoder under `dir`.
    pub fn open(dir: &Path, encoder_sha: &str, dim: usize) -> Result<Self, VectorError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(format!("vectors-{}.bin", &encoder_sha[..encoder_sha.len().min(16)]));
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io_err(&path))?;
        // One writer at a time: a second trainer or eval waits instead of interleaving records
        // (the lock goes with the file handle when the cache is dropped).
        if file.try_lock().is_err() {
            tracing::info!("waiting for {} (another imagesearch-train holds it)", path.display());
            file.lock().map_err(io_err(&path))?;
        }
        let mut map = HashMap::new();
        let mut good_len = 0u64;
        if let Ok(mut f) = File::open(&path) {
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes).map_err(io_err(&path))?;
            let mut pos = 0usize;
            while pos + 36 <= bytes.len() {
                let key: Key = bytes[pos..pos + 32].try_into().unwrap_or([0; 32]);
                let d = u32::from_le_bytes(bytes[pos + 32..pos + 36].try_into().unwrap_or([0; 4])) as usize;
                let end = pos + 36 + 4 * d;
                if d != dim || end > bytes.len() {
                    break;
                }
                let v = bytes[pos + 36..end]
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                map.insert(key, v);
                pos = end;
                good_len = pos as u64;
            }
        }
        // Cut a torn tail so new records start on a record boundary.
        file.set_len(good_len).map_err(io_err(&path))?;
        Ok(VectorCache { path, dim, map, writer: BufWriter::new(file) })
    }

    pub fn get(&self, key: &Key) -> Option<&[f32]> {
        self.map.get(key).map(Vec::as_slice)
    }

    pub fn contains(&self, key: &Key) -> bool {
        self.map.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Adds vectors and flushes them to disk.
    pub fn insert_batch(&mut self, entries: Vec<(Key, Vec<f32>)>) -> Result<(), VectorError> {
        if let Some((_, v)) = entries.iter().find(|(_, v)| v.len() != self.dim) {
            return Err(VectorError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(format!("vector of {} values, the cache holds {}", v.len(), self.dim)),
            });
        }
        for (key, v) in entries {
            self.writer.write_all(&key).map_err(io_err(&self.path))?;
            self.writer.write_all(&(v.len() as u32).to_le_bytes()).map_err(io_err(&self.path))?;
            for x in &v {
                self.writer.write_all(&x.to_le_bytes()).map_err(io_err(&self.path))?;
            }
            self.map.insert(key, v);
        }
        self.writer.flush().map_err(io_err(&self.path))
    }
}

fn rows_of(t: &Tensor) -> Result<Vec<Vec<f32>>, VectorError> {
    let rows = t.size()[0];
    let dim = t.size()[1] as usize;
    let flat: Vec<f32> = Vec::<f32>::try_from(t.contiguous().view([-1]))
        .map_err(imagesearch_model::ModelError::from)?;
    Ok((0..rows as usize).map(|i| flat[i * dim..(i + 1) * dim].to_vec()).collect())
}

/// A photo's encoder vectors, one per encoded view.
#[derive(Clone, Debug, Default)]
pub struct PhotoVectors {
    views: HashMap<View, Vec<f32>>,
}

impl PhotoVectors {
    /// The encoder vector of one view, when it was encoded.
    pub fn view(&self, view: View) -> Option<&[f32]> {
        self.views.get(&view).map(Vec::as_slice)
    }

    /// Whether every view of `views` was encoded.
    pub fn has(&self, views: ImageViews) -> bool {
        views.views().iter().all(|v| self.views.contains_key(v))
    }

    /// The photo's vector as the server makes it with `views`: the mean of those views'
    /// vectors ([`photo_vector`], the model crate's one definition); None when one of them
    /// was not encoded.
    pub fn serving(&self, views: ImageViews) -> Option<Vec<f32>> {
        let rows: Option<Vec<&[f32]>> = views.views().iter().map(|v| self.view(*v)).collect();
        rows.map(|r| photo_vector(&r))
    }
}

/// Encodes the `views` of each photo, reusing cached vectors; returns the vectors by photo
/// name and how many photos had to be encoded. Photos that cannot be read or decoded are
/// reported as problems and left out of the result.
pub fn encode_photos(
    encoder: &ImageEncoder,
    cache: &mut VectorCache,
    photos: &[(String, PathBuf)],
    views: ImageViews,
    batch_size: usize,
    problems: &mut Vec<Problem>,
) -> Result<(HashMap<String, PhotoVectors>, usize), VectorError> {
    let limits = ImageLimits::default();
    let (w, h) = encoder.input_size();
    let wanted = views.views();
    let mut keys: Vec<(String, Vec<Key>, PathBuf)> = Vec::with_capacity(photos.len());
    for (name, path) in photos {
        match std::fs::read(path) {
            Ok(bytes) => {
                let sha: [u8; 32] = Sha256::digest(&bytes).into();
                keys.push((name.clone(), wanted.iter().map(|v| image_key(&sha, *v)).collect(), path.clone()));
            }
            Err(e) => problems.push(Problem {
                file: path.display().to_string(),
                line: 0,
                reason: format!("photo cannot be read: {e}"),
            }),
        }
    }
    let todo: Vec<&(String, Vec<Key>, PathBuf)> =
        keys.iter().filter(|(_, ks, _)| ks.iter().any(|k| !cache.contains(k))).collect();
    let mut encoded = 0;
    if !todo.is_empty() {
        let mut bar = Progress::new(todo.len(), "photos");
        // A batch holds about `batch_size` encoder inputs, whatever the views per photo.
        let per_batch = (batch_size / wanted.len()).max(1);
        for chunk in todo.chunks(per_batch) {
            let mut inputs = Vec::with_capacity(wanted.len() * chunk.len());
            let mut batch_keys = Vec::with_capacity(wanted.len() * chunk.len());
            for (_, ks, path) in chunk {
                let decoded = std::fs::read(path)
                    .map_err(|e| e.to_string())
                    .and_then(|b| preprocess::decode(&b, limits).map_err(|e| e.to_string()));
                match decoded {
                    Ok(img) => {
                        for (view, key) in wanted.iter().zip(ks) {
                            if !cache.contains(key) {
                                inputs.push(view.input(&img, w, h));
                                batch_keys.push(*key);
                            }
                        }
                        encoded += 1;
                    }
                    Err(reason) => {
                        problems.push(Problem {
                            file: path.display().to_string(),
                            line: 0,
                            reason: format!("photo does not decode: {reason}"),
                        });
                    }
                }
            }
            if !inputs.is_empty() {
                let refs: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
                let out = encoder.encode(&refs)?;
                cache.insert_batch(batch_keys.into_iter().zip(rows_of(&out)?).collect())?;
            }
            bar.inc(chunk.len());
        }
        bar.finish();
    }
    let mut out = HashMap::with_capacity(keys.len());
    for (name, ks, _) in &keys {
        let found: Option<HashMap<View, Vec<f32>>> =
            wanted.iter().zip(ks).map(|(v, k)| cache.get(k).map(|x| (*v, x.to_vec()))).collect();
        if let Some(views) = found {
            out.insert(name.clone(), PhotoVectors { views });
        }
    }
    Ok((out, encoded))
}

/// Merges photo vectors of other views (or other photos) into `into`.
pub fn merge_photos(into: &mut HashMap<String, PhotoVectors>, from: HashMap<String, PhotoVectors>) {
    for (name, v) in from {
        into.entry(name).or_default().views.extend(v.views);
    }
}

/// Encodes texts in length-sorted batches, reusing cached vectors; returns the vectors by text
/// and how many distinct texts had to be encoded.
pub fn encode_texts(
    encoder: &TextEncoder,
    cache: &mut VectorCache,
    texts: &[String],
    batch_size: usize,
) -> Result<(HashMap<String, Vec<f32>>, usize), VectorError> {
    let distinct: std::collections::BTreeSet<&String> = texts.iter().collect();
    let mut todo: Vec<&String> = distinct.into_iter().filter(|t| !cache.contains(&text_key(t))).collect();
    // Length-sorted batches pad least (stable sort keeps the order deterministic).
    todo.sort_by_key(|t| t.len());
    if !todo.is_empty() {
        let mut bar = Progress::new(todo.len(), "texts");
        for chunk in todo.chunks(batch_size.max(1)) {
            let refs: Vec<&str> = chunk.iter().map(|s| s.as_str()).collect();
            let out = encoder.encode(&refs)?;
            cache.insert_batch(chunk.iter().map(|t| text_key(t)).zip(rows_of(&out)?).collect())?;
            bar.inc(chunk.len());
        }
        bar.finish();
    }
    let vectors = texts.iter().filter_map(|t| cache.get(&text_key(t)).map(|v| (t.clone(), v.to_vec()))).collect();
    Ok((vectors, todo.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_waits_for_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let first = VectorCache::open(dir.path(), "abcdef0123456789", 2).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let path = dir.path().to_path_buf();
        let second = std::thread::spawn(move || {
            let mut c = VectorCache::open(&path, "abcdef0123456789", 2).unwrap();
            c.insert_batch(vec![(text_key("late"), vec![1.0, 2.0])]).unwrap();
            tx.send(()).unwrap();
        });
        assert!(rx.recv_timeout(std::time::Duration::from_millis(300)).is_err(), "second writer did not wait");
        drop(first);
        rx.recv().unwrap();
        second.join().unwrap();
        assert_eq!(VectorCache::open(dir.path(), "abcdef0123456789", 2).unwrap().len(), 1);
    }

    #[test]
    fn cache_round_trip_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let sha = "0123456789abcdef0123";
        {
            let mut c = VectorCache::open(dir.path(), sha, 3).unwrap();
            c.insert_batch(vec![(text_key("a"), vec![1.0, 2.0, 3.0]), (text_key("b"), vec![4.0, 5.0, 6.0])])
                .unwrap();
        }
        let path = dir.path().join("vectors-0123456789abcdef.bin");
        // Simulate a crash in the middle of a third record.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[7u8; 40]).unwrap();
        drop(f);
        let mut c = VectorCache::open(dir.path(), sha, 3).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&text_key("b")).unwrap(), &[4.0, 5.0, 6.0]);
        c.insert_batch(vec![(text_key("c"), vec![7.0, 8.0, 9.0])]).unwrap();
        drop(c);
        let c = VectorCache::open(dir.path(), sha, 3).unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c.get(&text_key("c")).unwrap(), &[7.0, 8.0, 9.0]);
    }
}
