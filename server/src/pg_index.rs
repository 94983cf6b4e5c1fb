//! Search indexes in the gallery database (`--search-index postgres-exact|postgres-hnsw`): per
//! scorer version one table of every gallery photo's projected embedding, so servers need not
//! hold the projections in memory and a search is one SQL query.
//!
//! The joint embedding has 2,560 dimensions (5 members × 512), past pgvector's 2,000 for an
//! indexed `vector`, so embeddings are stored as `halfvec` (up to 4,000 indexed; half the bytes)
//! and ranked by inner product (`<#>`, the cosine for unit-length embeddings) with an HNSW index
//! (`halfvec_ip_ops`). The score stays the version's calibration of that cosine, which is
//! monotone, so the SQL order is the score order.
//!
//! Rows are keyed by photo id and carry the content hash they were computed from: a photo whose
//! row is missing or carries other bytes' hash is "missing", and a version's load embeds
//! exactly the missing ones in batches (so a load cut by a crash resumes where it stopped).
//! Rows are only written for a photo whose stored vector is the one embedded, so a late write
//! cannot overwrite a newer photo's row; a removed photo's row goes with it
//! (`ON DELETE CASCADE`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use imagesearch_model::Calibration;
use pgvector::Vector;

use crate::error::ServeError;
use crate::index::Among;
use crate::pg_filter::{push_filter, refs, Params};
use crate::pg_pool::{db_error, pg_config, Pool};
use crate::pg_schema::{INDEX_LOCK, INDEX_SETUP_LOCK};

/// How a search runs in the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqlSearch {
    /// Every row scanned (index scans off): the exact top-k.
    Exact,
    /// pgvector's HNSW index with `hnsw.ef_search` candidates (approximate; iterative scans on,
    /// so a bounded page still finds its rows).
    Hnsw { ef_search: u32 },
}

/// HNSW build parameters (pgvector's defaults).
pub const HNSW_M: u32 = 16;
pub const HNSW_EF_CONSTRUCTION: u32 = 64;

/// Photos embedded per batch while a version's index is filled.
const FILL_BATCH: usize = 512;

/// The database side of every version's search index: connections with the search settings.
pub struct PgSearch {
    pool: Pool,
    mode: SqlSearch,
    encoder_sha256: String,
    build_memory_mb: u32,
}

impl PgSearch {
    /// Connections to the gallery database at `url` for searches run as `mode`; photos are
    /// those encoded by the image encoder `encoder_sha256`. HNSW builds may use
    /// `build_memory_mb` of `maintenance_work_mem`.
    pub fn new(url: &str, timeout: Duration, mode: SqlSearch, encoder_sha256: &str, build_memory_mb: u32) -> Result<Self, ServeError> {
        let mut config = pg_config(url, timeout)?;
        let mut options = format!("-c statement_timeout={}", timeout.as_millis());
        match mode {
            SqlSearch::Exact => options.push_str(" -c enable_indexscan=off"),
            SqlSearch::Hnsw { ef_search } => {
                options.push_str(&format!(" -c hnsw.ef_search={ef_search} -c hnsw.iterative_scan=relaxed_order"))
            }
        }
        config.options(&options);
        Ok(PgSearch { pool: Pool::new(config, 32), mode, encoder_sha256: encoder_sha256.to_string(), build_memory_mb })
    }

    /// The index of scorer `version` whose image tower has sha256 `tower_sha256`, making its
    /// table when missing (a table made for other weights under the same version number is
    /// dropped and made anew).
    pub fn open(self: &Arc<Self>, version: u32, tower_sha256: &str, dim: i64, calibration: Calibration) -> Result<PgIndex, ServeError> {
        if calibration.a <= 0.0 {
            return Err(ServeError::Internal(format!(
                "version {version}: calibration slope {} is not positive, so the inner-product order is not the score order",
                calibration.a
            )));
        }
        let table = format!("embeddings_v{version}");
        let v = i32::try_from(version).map_err(|_| ServeError::InvalidArgument(format!("version {version} is too large")))?;
        self.pool.run("search index set-up", |c| {
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1, $2)", &[&INDEX_SETUP_LOCK, &v])?;
            let known: Option<(String, i32)> = tx
                .query_opt("SELECT tower_sha256, dim FROM search_indexes WHERE version = $1", &[&v])?
                .map(|r| (r.get(0), r.get(1)));
            if known.as_ref().is_some_and(|(sha, d)| sha != tower_sha256 || i64::from(*d) != dim) {
                tracing::warn!(version, "the search index was made for other weights of this version; making it anew");
                tx.batch_execute(&format!("DROP TABLE IF EXISTS {table}; DELETE FROM search_indexes WHERE version = {v}"))?;
            }
            tx.batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {table} (
                     photo_id  text PRIMARY KEY REFERENCES photos (id) ON DELETE CASCADE,
                     sha256    bytea NOT NULL,
                     embedding halfvec({dim}) NOT NULL
                 )"
            ))?;
            tx.execute(
                "INSERT INTO search_indexes (version, tower_sha256, dim, table_name) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (version) DO NOTHING",
                &[&v, &tower_sha256, &(dim as i32), &table],
            )?;
            tx.commit()
        })?;
        Ok(PgIndex { search: self.clone(), version, table, dim, calibration, needs_repair: AtomicBool::new(false) })
    }
}

/// One version's search index in the database.
pub struct PgIndex {
    search: Arc<PgSearch>,
    version: u32,
    table: String,
    dim: i64,
    calibration: Calibration,
    /// An embedding write failed after its photo was stored: fill what is missing again.
    needs_repair: AtomicBool,
}

/// The inner-product bound of a score bound: `sigmoid(a·ip + b) ≤ s` ⇔ `ip ≤ (logit(s) − b)/a`.
/// Scores are f32: every inner product whose score rounds to 0.0 lies below the bound of the
/// smallest positive f32, so a cursor at 0.0 is bounded there (the caller filters exactly).
fn ip_at_most(c: &Calibration, score: f32) -> Option<f64> {
    let s = f64::from(score).max(f64::from(f32::from_bits(1)));
    if s >= 1.0 {
        return None;
    }
    Some(((s / (1.0 - s)).ln() - c.b) / c.a)
}

impl PgIndex {
    /// The best `k` photos for a query embedding, best first (id, calibrated score), among those
    /// scoring at most `at_most` when given and among `among`. A filter joins `photos`; with
    /// HNSW, pgvector's iterative scan goes on until `k` rows pass (or `hnsw.max_scan_tuples`).
    pub fn search(&self, query: &[f32], k: usize, at_most: Option<f32>, among: &Among) -> Result<Vec<(Arc<str>, f32)>, ServeError> {
        // A small slack above the bound: the caller filters exactly; rounding must not lose a tie.
        let bound = at_most.and_then(|s| ip_at_most(&self.calibration, s)).map(|ip| -(ip + 1e-4));
        if bound.is_some_and(|b| !b.is_finite()) {
            return Ok(Vec::new());
        }
        let dist = format!("e.embedding <#> ($1::vector)::halfvec({})", self.dim);
        let mut params: Params = vec![Box::new(Vector::from(query.to_vec())), Box::new(k as i64)];
        let join = if among.filter.is_empty() { "" } else { " JOIN photos p ON p.id = e.photo_id" };
        let mut sql = format!("SELECT e.photo_id, ({dist})::float8 FROM {t} e{join} WHERE true", t = self.table);
        if let Some(b) = bound {
            params.push(Box::new(b));
            sql.push_str(&format!(" AND ({dist}) >= ${}", params.len()));
        }
        if let Some(only) = &among.only {
            params.push(Box::new(only.iter().map(|id| id.to_string()).collect::<Vec<String>>()));
            sql.push_str(&format!(" AND e.photo_id = ANY(${})", params.len()));
        }
        push_filter(&among.filter, &mut sql, &mut params);
        sql.push_str(&format!(" ORDER BY {dist} LIMIT $2"));
        let rows = self.search.pool.run("search", |c| c.query(&sql, &refs(&params)))?;
        Ok(rows
            .iter()
            .map(|r| {
                let id: String = r.get(0);
                let ip = -r.get::<_, f64>(1);
                (Arc::from(id.as_str()), self.calibration.apply(ip) as f32)
            })
            .collect())
    }

    /// Ids of gallery photos without an embedding of their current bytes, among `among` (all
    /// photos when `None`).
    pub fn missing(&self, among: Option<&[Arc<str>]>) -> Result<HashSet<String>, ServeError> {
        let base = format!(
            "SELECT p.id FROM photos p WHERE p.encoder_sha256 = $1 AND NOT EXISTS \
             (SELECT 1 FROM {t} e WHERE e.photo_id = p.id AND e.sha256 = p.sha256)",
            t = self.table
        );
        let enc = &self.search.encoder_sha256;
        let rows = match among {
            None => self.search.pool.run("search index check", |c| c.query(&base, &[enc]))?,
            Some(ids) => {
                let ids: Vec<&str> = ids.iter().map(|s| &**s).collect();
                self.search.pool.run("search index check", |c| c.query(&format!("{base} AND p.id = ANY($2)"), &[enc, &ids]))?
            }
        };
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Writes embeddings of photos: (id, the image vector they were computed from, embedding).
    /// A photo no longer stored with that vector gets no row. Returns the rows written.
    pub fn put(&self, rows: &[(Arc<str>, Arc<Vec<f32>>, Vec<f32>)]) -> Result<u64, ServeError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let ids: Vec<&str> = rows.iter().map(|(id, _, _)| &**id).collect();
        let srcs: Vec<Vector> = rows.iter().map(|(_, v, _)| Vector::from(v.to_vec())).collect();
        let embs: Vec<Vector> = rows.iter().map(|(_, _, e)| Vector::from(e.clone())).collect();
        let sql = format!(
            "INSERT INTO {t} (photo_id, sha256, embedding)
             SELECT p.id, p.sha256, u.emb::halfvec({d})
             FROM unnest($1::text[], $2::vector[], $3::vector[]) AS u(id, src, emb)
             JOIN photos p ON p.id = u.id AND p.vector = u.src
             ON CONFLICT (photo_id) DO UPDATE SET sha256 = excluded.sha256, embedding = excluded.embedding",
            t = self.table,
            d = self.dim
        );
        self.search.pool.run("search index write", |c| c.execute(&sql, &[&ids, &srcs, &embs]))
    }

    /// Records that an embedding write failed after its photo was stored.
    pub fn mark_for_repair(&self) {
        self.needs_repair.store(true, Ordering::Release);
    }

    /// Whether a write failed since the last repair.
    pub fn needs_repair(&self) -> bool {
        self.needs_repair.load(Ordering::Acquire)
    }

    /// Takes the repair mark (true when a fill is due).
    pub fn take_repair(&self) -> bool {
        self.needs_repair.swap(false, Ordering::AcqRel)
    }

    /// Builds the HNSW index when searches use it and it is missing or was left invalid by a
    /// build that did not finish. One server builds (`CREATE INDEX CONCURRENTLY`, so writes go
    /// on meanwhile); the others wait for it.
    pub fn ensure_hnsw(&self) -> Result<(), ServeError> {
        if self.search.mode == SqlSearch::Exact {
            return Ok(());
        }
        let name = format!("{}_hnsw", self.table);
        let v = self.version as i32;
        let started = Instant::now();
        let mut conn = self.search.pool.get("search index build")?;
        loop {
            let got: bool = conn.query_one("SELECT pg_try_advisory_lock($1, $2)", &[&INDEX_LOCK, &v]).map_err(|e| db_error("search index build", &e))?.get(0);
            if got {
                break;
            }
            // Another server builds it; polling keeps no statement open that its build would wait for.
            std::thread::sleep(Duration::from_millis(500));
        }
        let built = (|| -> Result<bool, postgres::Error> {
            let valid: Option<bool> = conn
                .query_opt("SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = $1", &[&name])?
                .map(|r| r.get(0));
            if valid == Some(true) {
                return Ok(false);
            }
            if valid == Some(false) {
                tracing::warn!(version = self.version, "an HNSW build did not finish; building it again");
                conn.batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS {name}"))?;
            }
            let rows: i64 = conn.query_one(&format!("SELECT count(*) FROM {}", self.table), &[])?.get(0);
            tracing::info!(version = self.version, rows, "building the HNSW index");
            // One statement per call: several in one string would run as one transaction, which
            // CREATE INDEX CONCURRENTLY refuses.
            conn.batch_execute(&format!("SET maintenance_work_mem = '{}MB'", self.search.build_memory_mb))?;
            conn.batch_execute("SET statement_timeout = 0")?;
            let made = conn.batch_execute(&format!(
                "CREATE INDEX CONCURRENTLY {name} ON {t} USING hnsw (embedding halfvec_ip_ops) \
                 WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})",
                t = self.table
            ));
            conn.batch_execute("RESET statement_timeout")?;
            conn.batch_execute("RESET maintenance_work_mem")?;
            made.map(|()| true)
        })();
        let unlocked = conn.execute("SELECT pg_advisory_unlock($1, $2)", &[&INDEX_LOCK, &v]);
        let built = built.map_err(|e| db_error("search index build", &e))?;
        unlocked.map_err(|e| db_error("search index build", &e))?;
        if built {
            tracing::info!(version = self.version, seconds = started.elapsed().as_secs_f64(), "HNSW index built");
        }
        Ok(())
    }

    /// The version this index belongs to.
    pub fn version(&self) -> u32 {
        self.version
    }
}

/// Which photos a fill compares with the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The photos given, by id (a write of a few photos).
    Given,
    /// The photos given are the whole gallery: one query checks every stored photo.
    WholeGallery,
}

/// Embeds and writes, in batches, those of `photos` (id, image vector) that `index` lacks,
/// `embed` computing a batch's embeddings; logs progress. Returns the photos embedded.
pub fn fill_lacking(
    index: &PgIndex,
    photos: Vec<(Arc<str>, Arc<Vec<f32>>)>,
    scope: Scope,
    embed: impl Fn(Vec<Arc<Vec<f32>>>) -> Result<Vec<Vec<f32>>, ServeError>,
) -> Result<usize, ServeError> {
    let missing = match scope {
        Scope::WholeGallery => index.missing(None)?,
        Scope::Given => index.missing(Some(&photos.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>()))?,
    };
    let todo: Vec<_> = photos.into_iter().filter(|(id, _)| missing.contains(&**id)).collect();
    fill(index, &todo, embed)
}

/// Writes the embeddings of `todo` (photos the index lacks) in batches.
fn fill(
    index: &PgIndex,
    todo: &[(Arc<str>, Arc<Vec<f32>>)],
    embed: impl Fn(Vec<Arc<Vec<f32>>>) -> Result<Vec<Vec<f32>>, ServeError>,
) -> Result<usize, ServeError> {
    if todo.is_empty() {
        return Ok(0);
    }
    if todo.len() > FILL_BATCH {
        tracing::info!(version = index.version, photos = todo.len(), "embedding photos into the version's search index");
    }
    let started = Instant::now();
    let mut last_log = Instant::now();
    let mut done = 0;
    for chunk in todo.chunks(FILL_BATCH) {
        let embs = embed(chunk.iter().map(|(_, v)| v.clone()).collect())?;
        if embs.len() != chunk.len() {
            return Err(ServeError::Internal(format!("{} embeddings for {} photos", embs.len(), chunk.len())));
        }
        let rows: Vec<_> = chunk.iter().zip(embs).map(|((id, v), e)| (id.clone(), v.clone(), e)).collect();
        index.put(&rows)?;
        done += chunk.len();
        if last_log.elapsed() >= Duration::from_secs(10) || (done == todo.len() && todo.len() > FILL_BATCH) {
            let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
            tracing::info!(version = index.version, done, of = todo.len(), per_s = rate.round(), "search index fill");
            last_log = Instant::now();
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_bounds_become_inner_product_bounds() {
        let c = Calibration { a: 10.0, b: -3.0 };
        for ip in [-0.5, 0.0, 0.1, 0.3, 0.77] {
            let s = c.apply(ip) as f32;
            let bound = ip_at_most(&c, s).unwrap();
            assert!((bound - ip).abs() < 1e-5, "ip {ip}: bound {bound}");
        }
        assert_eq!(ip_at_most(&c, 1.0), None);
        // A score that underflowed to 0.0 still bounds: every ip scoring 0.0 in f32 is below it.
        let floor = ip_at_most(&c, 0.0).unwrap();
        assert!(floor.is_finite());
        for ip in [-20.0, -12.0, floor - 1.0] {
            assert_eq!(c.apply(ip) as f32, 0.0, "ip {ip}");
            assert!(ip <= floor, "ip {ip} above the floor {floor}");
        }
    }
}
