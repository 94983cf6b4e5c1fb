//! What a newly loaded version's detectors say of the photos already in the gallery, decided
//! before the version serves: its child detector re-checks every photo no review has decided, and
//! its query detector reads the captions of every photo that is not yet restricted (a paraphrase
//! the word list missed restricts the photo as it would have at upload). Flags are only ever
//! raised here, never lifted, except an unverified photo a detector clears.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;

use crate::app::{flags_child_text, App};
use crate::error::ServeError;
use crate::gallery::PhotoMeta;
use crate::versions::LoadedVersion;
use crate::wal::Flag;

/// Captions encoded at once while a version loads (enough to fill the text batcher).
const CAPTIONS_IN_FLIGHT: usize = 64;

/// What a re-check changed, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recheck {
    pub by_detector: usize,
    pub cleared: usize,
    pub by_captions: usize,
    pub captions_read: usize,
}

impl App {
    /// The flag changes `version`'s detectors ask of `gallery`, stored; called from the blocking
    /// pool (the caption encodings run on `runtime`). A store failure fails the version's load.
    pub(crate) fn recheck_gallery(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        version: &LoadedVersion,
        gallery: &[PhotoMeta],
    ) -> Result<Recheck, ServeError> {
        let mut changes: HashMap<Arc<str>, Flag> = HashMap::new();
        let mut summary = Recheck::default();
        if let Some(d) = &version.detector {
            for p in gallery {
                match (p.flag, d.flags(&p.vector)) {
                    (Flag::Unverified | Flag::Clear, true) => {
                        changes.insert(p.id.clone(), Flag::Detector);
                        summary.by_detector += 1;
                    }
                    (Flag::Unverified, false) => {
                        changes.insert(p.id.clone(), Flag::Clear);
                        summary.cleared += 1;
                    }
                    _ => {}
                }
            }
        }
        if version.query_detector.is_some() {
            let readable: Vec<&PhotoMeta> =
                gallery.iter().filter(|p| matches!(p.flag, Flag::Clear | Flag::Unverified) && !p.captions.is_empty()).collect();
            let (said, read) = runtime.block_on(self.captions_say_child(version, &readable));
            summary.captions_read = read;
            for id in said {
                match changes.insert(id, Flag::Captions) {
                    Some(Flag::Detector) => summary.by_detector -= 1,
                    Some(Flag::Clear) => summary.cleared -= 1,
                    _ => {}
                }
                summary.by_captions += 1;
            }
        }
        let changes: Vec<(String, Flag)> = changes.into_iter().map(|(id, f)| (id.to_string(), f)).collect();
        if !changes.is_empty() {
            self.store.set_flags(&changes)?;
        }
        Ok(summary)
    }

    /// The photos one of whose captions `version`'s query detector reads as describing a child,
    /// and how many captions were read. A caption that can no longer be read (it fails today's
    /// text checks, or the encoder fails on it) counts as describing a child: fail closed.
    async fn captions_say_child(self: &Arc<Self>, version: &LoadedVersion, photos: &[&PhotoMeta]) -> (HashSet<Arc<str>>, usize) {
        let total: usize = photos.iter().map(|p| p.captions.len()).sum();
        let captions = photos.iter().flat_map(|p| p.captions.iter().map(move |c| (p.id.clone(), c.clone())));
        let mut verdicts = futures::stream::iter(captions)
            .map(|(id, caption)| async move {
                let says = match self.encoders.check_text("caption", &caption) {
                    Ok(text) => self.encoders.caption_vector(&text).await.map(|v| flags_child_text(version, &v)),
                    Err(e) => Err(e),
                };
                (id, says)
            })
            .buffer_unordered(CAPTIONS_IN_FLIGHT);
        let (mut said, mut read, mut unreadable) = (HashSet::new(), 0usize, 0usize);
        let mut last_log = std::time::Instant::now();
        while let Some((id, says)) = verdicts.next().await {
            read += 1;
            let child = says.unwrap_or_else(|_| {
                unreadable += 1;
                true
            });
            if child {
                said.insert(id);
            }
            if last_log.elapsed().as_secs() >= 10 {
                tracing::info!(version = version.version, read, total, "query detector reading the gallery's captions");
                last_log = std::time::Instant::now();
            }
        }
        if unreadable > 0 {
            tracing::warn!(version = version.version, unreadable, "gallery captions that could not be read restrict their photos");
        }
        (said, read)
    }
}
