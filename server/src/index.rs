//! One scorer version on its batcher thread: scores pairs and searches its gallery index (the
//! projected, unit-length image embeddings of every gallery photo, kept on the version's
//! device) — the query's text embedding times the index, calibrated, top-k.

use std::collections::HashMap;
use std::sync::Arc;

use imagesearch_model::Scorer;
use tch::{Device, Kind, Tensor};

use crate::batcher::BatchWorker;
use crate::error::ServeError;

/// Work for a version's thread.
#[derive(Clone)]
pub enum ScorerJob {
    /// One request's pairs: image and text vectors, same length.
    Pairs { images: Vec<Arc<Vec<f32>>>, texts: Vec<Arc<Vec<f32>>> },
    /// One query's text vector; the best `k` photos.
    Search { text: Arc<Vec<f32>>, k: usize },
    /// Puts photos (id, image vector) into the index, replacing those with the same id.
    Upsert(Vec<(Arc<str>, Arc<Vec<f32>>)>),
    /// Takes photos out of the index.
    Remove(Vec<Arc<str>>),
}

/// What a job gives back.
#[derive(Debug)]
pub enum ScorerOutput {
    Scores(Vec<f32>),
    /// (photo id, calibrated score), best first.
    Hits(Vec<(Arc<str>, f32)>),
    /// Index updated; its size now.
    Indexed(usize),
}

/// A scorer version and its gallery index.
pub struct VersionWorker {
    scorer: Scorer,
    ids: Vec<Arc<str>>,
    rows: HashMap<Arc<str>, i64>,
    /// `[N, D]` on the scorer's device (None while empty).
    index: Option<Tensor>,
}

fn stack(vs: &[Arc<Vec<f32>>], device: Device) -> Result<Tensor, ServeError> {
    let dim = vs.first().map_or(0, |v| v.len());
    if vs.iter().any(|v| v.len() != dim) {
        return Err(ServeError::Internal("vectors of different lengths in one batch".into()));
    }
    let flat: Vec<f32> = vs.iter().flat_map(|v| v.iter().copied()).collect();
    Ok(Tensor::from_slice(&flat).view([vs.len() as i64, dim as i64]).to_device(device))
}

impl VersionWorker {
    pub fn new(scorer: Scorer) -> Self {
        VersionWorker { scorer, ids: Vec::new(), rows: HashMap::new(), index: None }
    }

    fn upsert(&mut self, photos: &[(Arc<str>, Arc<Vec<f32>>)]) -> Result<(), ServeError> {
        if photos.is_empty() {
            return Ok(());
        }
        // The last entry for an id wins.
        let mut latest: HashMap<&Arc<str>, usize> = HashMap::new();
        for (i, (id, _)) in photos.iter().enumerate() {
            latest.insert(id, i);
        }
        let mut keep: Vec<usize> = latest.into_values().collect();
        keep.sort_unstable();
        let vectors: Vec<Arc<Vec<f32>>> = keep.iter().map(|&i| photos[i].1.clone()).collect();
        let device = self.scorer.device();
        let emb = self.scorer.embed_images(&stack(&vectors, Device::Cpu)?)?.to_device(device);
        let mut new_rows = Vec::new();
        for (j, &i) in keep.iter().enumerate() {
            let id = &photos[i].0;
            match (self.rows.get(id), self.index.as_mut()) {
                (Some(&row), Some(index)) => {
                    index.get(row).copy_(&emb.get(j as i64));
                }
                _ => new_rows.push(j as i64),
            }
        }
        if !new_rows.is_empty() {
            let add = emb.index_select(0, &Tensor::from_slice(&new_rows).to_device(device));
            self.index = Some(match self.index.take() {
                Some(index) => Tensor::cat(&[index, add], 0),
                None => add,
            });
            for &j in &new_rows {
                let id = photos[keep[j as usize]].0.clone();
                self.rows.insert(id.clone(), self.ids.len() as i64);
                self.ids.push(id);
            }
        }
        Ok(())
    }

    fn remove(&mut self, ids: &[Arc<str>]) {
        let gone: Vec<i64> = ids.iter().filter_map(|id| self.rows.get(id).copied()).collect();
        if gone.is_empty() {
            return;
        }
        let gone: std::collections::HashSet<i64> = gone.into_iter().collect();
        let keep: Vec<i64> = (0..self.ids.len() as i64).filter(|r| !gone.contains(r)).collect();
        self.ids = keep.iter().map(|&r| self.ids[r as usize].clone()).collect();
        self.rows = self.ids.iter().enumerate().map(|(r, id)| (id.clone(), r as i64)).collect();
        self.index = match (self.index.take(), keep.is_empty()) {
            (_, true) | (None, _) => None,
            (Some(index), false) => Some(index.index_select(0, &Tensor::from_slice(&keep).to_device(index.device()))),
        };
    }

    fn score_pairs(&self, jobs: &[(&[Arc<Vec<f32>>], &[Arc<Vec<f32>>])]) -> Result<Vec<Vec<f32>>, ServeError> {
        let images: Vec<Arc<Vec<f32>>> = jobs.iter().flat_map(|(i, _)| i.iter().cloned()).collect();
        let texts: Vec<Arc<Vec<f32>>> = jobs.iter().flat_map(|(_, t)| t.iter().cloned()).collect();
        if images.is_empty() {
            return Ok(jobs.iter().map(|_| Vec::new()).collect());
        }
        let scores = self.scorer.score(&stack(&images, Device::Cpu)?, &stack(&texts, Device::Cpu)?)?;
        let all = Vec::<f32>::try_from(scores.view([-1])).map_err(|e| ServeError::Internal(e.to_string()))?;
        let mut out = Vec::with_capacity(jobs.len());
        let mut at = 0;
        for (i, _) in jobs {
            out.push(all[at..at + i.len()].to_vec());
            at += i.len();
        }
        Ok(out)
    }

    fn search(&self, queries: &[(&Arc<Vec<f32>>, usize)]) -> Result<Vec<Vec<(Arc<str>, f32)>>, ServeError> {
        let Some(index) = &self.index else {
            return Ok(queries.iter().map(|_| Vec::new()).collect());
        };
        let texts: Vec<Arc<Vec<f32>>> = queries.iter().map(|(t, _)| (*t).clone()).collect();
        let emb = self.scorer.embed_texts(&stack(&texts, Device::Cpu)?)?.to_device(index.device());
        let cal = self.scorer.manifest.calibration;
        let n = self.ids.len() as i64;
        let k_max = queries.iter().map(|(_, k)| *k as i64).max().unwrap_or(1).clamp(1, n);
        let (top, idx) = tch::no_grad(|| {
            let cos = emb.matmul(&index.tr());
            let scores = (cos * cal.a + cal.b).sigmoid();
            scores.topk(k_max, 1, true, true)
        });
        let top = Vec::<f32>::try_from(top.to_kind(Kind::Float).to_device(Device::Cpu).view([-1]))
            .map_err(|e| ServeError::Internal(e.to_string()))?;
        let idx = Vec::<i64>::try_from(idx.to_device(Device::Cpu).view([-1])).map_err(|e| ServeError::Internal(e.to_string()))?;
        Ok(queries
            .iter()
            .enumerate()
            .map(|(q, (_, k))| {
                let base = q * k_max as usize;
                (0..(*k).min(k_max as usize)).map(|j| (self.ids[idx[base + j] as usize].clone(), top[base + j])).collect()
            })
            .collect())
    }
}

impl BatchWorker for VersionWorker {
    type Input = ScorerJob;
    type Output = ScorerOutput;

    fn run(&mut self, jobs: Vec<ScorerJob>) -> Result<Vec<Result<ScorerOutput, ServeError>>, ServeError> {
        // Index updates first (in arrival order), then one forward pass for all pairs and one
        // for all queries.
        let mut out: Vec<Option<Result<ScorerOutput, ServeError>>> = jobs.iter().map(|_| None).collect();
        for (i, job) in jobs.iter().enumerate() {
            match job {
                ScorerJob::Upsert(photos) => {
                    out[i] = Some(self.upsert(photos).map(|_| ScorerOutput::Indexed(self.ids.len())));
                }
                ScorerJob::Remove(ids) => {
                    self.remove(ids);
                    out[i] = Some(Ok(ScorerOutput::Indexed(self.ids.len())));
                }
                _ => {}
            }
        }
        let pair_jobs: Vec<(usize, (&[Arc<Vec<f32>>], &[Arc<Vec<f32>>]))> = jobs
            .iter()
            .enumerate()
            .filter_map(|(i, j)| match j {
                ScorerJob::Pairs { images, texts } => Some((i, (images.as_slice(), texts.as_slice()))),
                _ => None,
            })
            .collect();
        if !pair_jobs.is_empty() {
            let inputs: Vec<_> = pair_jobs.iter().map(|(_, p)| *p).collect();
            let scores = self.score_pairs(&inputs)?;
            for ((i, _), s) in pair_jobs.iter().zip(scores) {
                out[*i] = Some(Ok(ScorerOutput::Scores(s)));
            }
        }
        let queries: Vec<(usize, (&Arc<Vec<f32>>, usize))> = jobs
            .iter()
            .enumerate()
            .filter_map(|(i, j)| match j {
                ScorerJob::Search { text, k } => Some((i, (text, *k))),
                _ => None,
            })
            .collect();
        if !queries.is_empty() {
            let inputs: Vec<_> = queries.iter().map(|(_, q)| *q).collect();
            let hits = self.search(&inputs)?;
            for ((i, _), h) in queries.iter().zip(hits) {
                out[*i] = Some(Ok(ScorerOutput::Hits(h)));
            }
        }
        Ok(out.into_iter().map(|o| o.unwrap_or_else(|| Err(ServeError::Internal("job without answer".into())))).collect())
    }
}
