//! The Search call: the query under the law, the photos a filter lets through, the vector
//! ranking (or its fusion with the keyword ranking over captions), and the pages.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use imagesearch_compliance::describes_child;

use crate::admission::admit_pipeline;
use crate::app::{App, Served};
use crate::encoders::Timings;
use crate::error::ServeError;
use crate::filter::{now_ms, PhotoFilter};
use crate::index::Among;
use crate::keywords::fuse;
use crate::metrics as m;
use crate::paging::{self, Cursor};
use crate::types::{Hit, SearchAnswer, SearchQuery, Shown};
use crate::versions::LoadedVersion;

/// Hits fetched beyond a later page for photos tied with the cursor's score.
const PAGE_TIE_SLACK: usize = 16;

impl App {
    /// Searches the gallery.
    pub async fn search(&self, req: SearchQuery, deadline: Option<Instant>) -> Result<Served<SearchAnswer>, ServeError> {
        self.check_ready()?;
        let query = self.encoders.check_text("query", &req.query)?;
        if req.k == 0 || req.k as usize > self.cfg.max_k {
            return Err(ServeError::InvalidArgument(format!("k is {}, it must be 1..={}", req.k, self.cfg.max_k)));
        }
        let floor = req.min_score;
        if !(0.0..=1.0).contains(&floor) {
            return Err(ServeError::InvalidArgument(format!("min_score is {floor}, it must be in [0, 1]")));
        }
        let weight = req.keyword_weight;
        if !(0.0..=1.0).contains(&weight) {
            return Err(ServeError::InvalidArgument(format!("keyword_weight is {weight}, it must be in [0, 1]")));
        }
        let filter = req.filter.checked()?;
        let scope = paging::scope(&query, floor, &filter.canonical(), weight);
        let cursor = if req.page_token.is_empty() { None } else { Some(Cursor::parse(&req.page_token, &scope)?) };
        let region = self.region(&req.routing)?;
        let version = match &cursor {
            // A page continues with the version that ranked the first one.
            Some(c) if req.routing.version == 0 || req.routing.version == c.version => {
                self.versions.resolve(c.version, "").map_err(|_| {
                    ServeError::FailedPrecondition(format!(
                        "scorer version {} that ranked the first page is no longer loaded; search again without page_token",
                        c.version
                    ))
                })?
            }
            Some(c) => {
                return Err(ServeError::InvalidArgument(format!(
                    "page_token continues a search of version {}, but the request pins version {}",
                    c.version, req.routing.version
                )))
            }
            None => self.resolve(&req.routing)?,
        };
        let gallery_size = self.store.len() as u64;
        if let Some(hit) = describes_child(&query).filter(|_| region.restricted) {
            metrics::counter!(m::WITHHELD, "what" => "query").increment(1);
            tracing::info!(region = %region.code, rule = %hit, "query withheld");
            return Ok(Served {
                value: SearchAnswer { query_withheld: true, gallery_size, ..SearchAnswer::default() },
                version: version.version,
                timings: Timings::default(),
            });
        }
        let fused = weight > 0.0;
        let snapshot_ms = cursor.as_ref().map_or_else(now_ms, |c| c.snapshot_ms);
        // A fused ranking continues at its rank, so later pages rank only what the first saw.
        let filter = if fused && cursor.is_some() { filter.added_before(snapshot_ms.saturating_add(1)) } else { filter };
        let depth = self.cfg.max_search_depth.max(1);
        let start = cursor.as_ref().map_or(0, |c| c.rank as usize);
        let page = (req.k as usize).min(depth.saturating_sub(start));
        let mut timings = Timings::default();
        // Admitted once over the text encoder and the scorer, before either starts.
        let mut admitted = admit_pipeline(&[], &[(self.encoders.text_queue(), 1), (version.worker.queue(), 1)], deadline)?;
        // Held until the query's vector is made (a cached one was never queued).
        let text_held = admitted.take(self.encoders.text_queue());
        // Where the law applies, the version's query detector reads the text too: a paraphrase
        // the word list misses is withheld all the same.
        let mut text = None;
        if region.restricted && version.query_detector.is_some() {
            let v = self.encoders.text_vector(&query, deadline, &mut timings).await?;
            if crate::app::flags_child_text(&version, &v) {
                metrics::counter!(m::WITHHELD, "what" => "query").increment(1);
                tracing::info!(region = %region.code, rule = "query detector", "query withheld");
                return Ok(Served {
                    value: SearchAnswer { query_withheld: true, gallery_size, ..SearchAnswer::default() },
                    version: version.version,
                    timings,
                });
            }
            text = Some(v);
        }
        let mut found = Vec::new();
        if page > 0 {
            let text = match text {
                Some(v) => v,
                None => {
                    let read = crate::app::model_text(&version, region.restricted, &query);
                    self.encoders.text_vector(&read, deadline, &mut timings).await?
                }
            };
            drop(text_held);
            found = if fused {
                let ranking = Ranking { query: &query, restricted_region: region.restricted, filter: &filter, weight };
                self.fused(&version, text, &ranking, start + page + 1, deadline, &mut timings).await?
            } else {
                // A later page ranks only what scores at most the cursor's score, so photos added
                // above it since the first page cannot push what follows it out of reach; a few
                // more than the page are fetched for ties at the cursor (ordered by id) and to
                // know whether more follow.
                let fetch = page + 1 + if cursor.is_some() { PAGE_TIE_SLACK } else { 0 };
                let at_most = cursor.as_ref().map(|c| c.score);
                let out = version.worker.search(text, fetch, at_most, self.among(&version, &filter, None).await?, deadline).await?;
                timings.add(&out);
                let mut hits = out.value;
                paging::rank_order(&mut hits);
                hits
            };
        }
        let floored = found.into_iter().filter(|(_, score)| *score >= floor);
        let candidates: Box<dyn Iterator<Item = (Arc<str>, f32)> + Send> = match &cursor {
            Some(_) if fused => Box::new(floored.skip(start)),
            Some(c) => {
                let c = c.clone();
                Box::new(floored.filter(move |(id, score)| paging::after(*score, id, c.score, &c.id)))
            }
            None => Box::new(floored),
        };
        let mut candidates = candidates.peekable();
        let mut hits = Vec::with_capacity(page);
        // The answer must fit in a message: photo bytes up to the budget, references after it.
        let mut budget = self.cfg.answer_photo_budget();
        let mut without_bytes = 0;
        let mut last = None;
        let mut consumed = 0;
        while consumed < page {
            let Some((id, score)) = candidates.next() else { break };
            consumed += 1;
            last = Some((id.clone(), score));
            // A photo removed since the search ran is left out.
            let Some(meta) = self.store.get(&id) else { continue };
            let shown = self.show(&meta, region.restricted, req.include_photos.then_some(&mut budget)).await?;
            if matches!(&shown, Shown::Photo(p) if req.include_photos && p.data.is_empty()) {
                without_bytes += 1;
            }
            hits.push(Hit { rank: (start + consumed) as u32, score, shown });
        }
        if without_bytes > 0 {
            metrics::counter!(m::PHOTOS_WITHOUT_BYTES).increment(u64::from(without_bytes));
        }
        let more = candidates.peek().is_some() && start + consumed < depth;
        let next_page_token = match (more, last) {
            (true, Some((id, score))) => Cursor::new(version.version, (start + consumed) as u32, score, &id, snapshot_ms, &scope).token(),
            _ => String::new(),
        };
        Ok(Served {
            value: SearchAnswer { hits, query_withheld: false, gallery_size, photos_without_bytes: without_bytes, next_page_token },
            version: version.version,
            timings,
        })
    }

    /// The photos a search of `version` ranks: those passing `filter` (resolved into ids here
    /// for an in-memory index, a scan of the gallery done off the async workers), among `only`
    /// when given.
    async fn among(&self, version: &LoadedVersion, filter: &PhotoFilter, only: Option<HashSet<Arc<str>>>) -> Result<Among, ServeError> {
        if filter.is_empty() || version.worker.resolves_filters() {
            return Ok(Among { filter: filter.clone(), only: only.map(Arc::new) });
        }
        let (store, f) = (self.store.clone(), filter.clone());
        let mut passing = tokio::task::spawn_blocking(move || store.matching(&f)).await.map_err(|e| ServeError::Internal(e.to_string()))?;
        if let Some(only) = only {
            passing.retain(|id| only.contains(id));
        }
        Ok(Among { filter: PhotoFilter::default(), only: Some(Arc::new(passing)) })
    }

    /// The first `depth` hits of the fused ranking (vector ranking and keyword ranking by
    /// reciprocal rank fusion), in fused order, each with its calibrated vector score.
    async fn fused(
        &self,
        version: &LoadedVersion,
        text: Arc<Vec<f32>>,
        r: &Ranking<'_>,
        depth: usize,
        deadline: Option<Instant>,
        timings: &mut Timings,
    ) -> Result<Vec<(Arc<str>, f32)>, ServeError> {
        let mut vector = Vec::new();
        if r.weight < 1.0 {
            let out = version.worker.search(text.clone(), depth, None, self.among(version, r.filter, None).await?, deadline).await?;
            timings.add(&out);
            vector = out.value;
            paging::rank_order(&mut vector);
        }
        let (store, query, filter, restricted) = (self.store.clone(), r.query.to_string(), r.filter.clone(), r.restricted_region);
        let keyword = tokio::task::spawn_blocking(move || store.keyword_ranking(&query, restricted, &filter, depth))
            .await
            .map_err(|e| ServeError::Internal(e.to_string()))??;
        metrics::counter!(m::KEYWORD_SEARCHES).increment(1);
        let mut scores: HashMap<Arc<str>, f32> = vector.iter().cloned().collect();
        // Keyword hits past the vector ranking's depth are scored on their own.
        let unscored: HashSet<Arc<str>> = keyword.iter().filter(|id| !scores.contains_key(*id)).cloned().collect();
        if !unscored.is_empty() {
            let n = unscored.len();
            let out = version.worker.search(text, n, None, self.among(version, &PhotoFilter::default(), Some(unscored)).await?, deadline).await?;
            timings.add(&out);
            scores.extend(out.value);
        }
        let vector_ids: Vec<Arc<str>> = vector.into_iter().map(|(id, _)| id).collect();
        Ok(fuse(&vector_ids, &keyword, f64::from(r.weight)).into_iter().filter_map(|id| scores.get(&id).map(|s| (id, *s))).collect())
    }
}

/// What a fused search ranks by.
struct Ranking<'a> {
    query: &'a str,
    restricted_region: bool,
    filter: &'a PhotoFilter,
    weight: f32,
}
