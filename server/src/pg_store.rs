//! The gallery in PostgreSQL + pgvector (`--store postgres --database-url …`): the same
//! [`PhotoStore`] and the same law as [`crate::local_store::LocalStore`], with PostgreSQL as the
//! durable record instead of a local log and files.
//!
//! Photo bytes live in `photo_contents` by sha256, photos (captions, flag, encoder vector as a
//! pgvector `vector`) in `photos`, and what is known of each content hash in `content_flags`
//! (so a flag follows the bytes to any id, replica or migration). Every gallery write is one
//! transaction: acknowledged means committed; a failed one leaves nothing. The server keeps the
//! gallery's metadata in memory too ([`State`], loaded at start), so reads never wait on the
//! database; only photo bytes are read from it.
//!
//! Several servers may share one database (replicas). Every write is serialised across them by
//! a transaction-scoped advisory lock, catches up with what the others wrote (so the law's
//! decisions are taken on the newest knowledge), and appends the keys it touched to a change
//! feed; [`PhotoStore::refresh`] follows that feed, so a photo added on one server is found on
//! the others within a poll. A lost database makes writes and photo reads UNAVAILABLE with a
//! clear message, and the next call reconnects by itself.
//!
//! A photo's attributes are a `jsonb` column (GIN-indexed for filters); its captions are kept
//! twice as full-text vectors, all of them and those the lexicon finds no child in, so a
//! restricted region's keyword search never matches a caption that describes a child.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pgvector::Vector;
use postgres::Client;

use crate::error::ServeError;
use crate::filter::PhotoFilter;
use crate::pg_filter::{push_filter, refs, Params};
use crate::gallery::{IndexChange, NewPhoto, PhotoMeta, PhotoStore, Review, StoreStats, Upserted};
use crate::gallery_state::{bump, Known, State};
use crate::pg_pool::{db_error, is_lost, Pool};
use crate::pg_schema::{migrate, WRITER_LOCK};
pub use crate::pg_pool::pg_config;
use crate::wal::{Flag, Record};

/// Staged bytes no photo refers to are swept at start once they are this old (another
/// server's stream may still be staging younger ones).
const STALE_STAGED: &str = "1 hour";

/// How long the change feed keeps a change; a server further behind reloads the gallery.
const FEED_KEPT: &str = "1 day";

struct Inner {
    state: State,
    /// The last change of the feed this server has applied.
    seq: i64,
    /// Changes applied to `state` (caught up inside a write) whose index updates are still to
    /// be handed out by [`PhotoStore::refresh`].
    unindexed: Vec<IndexChange>,
    /// Bytes whose last photo went while the database could not delete them.
    unswept: Vec<[u8; 32]>,
}

/// The gallery in PostgreSQL.
pub struct PgStore {
    pool: Pool,
    encoder_sha256: String,
    inner: Mutex<Inner>,
}

fn sha_of(bytes: &[u8]) -> Option<[u8; 32]> {
    bytes.try_into().ok()
}

impl PgStore {
    /// Connects, migrates the schema, takes the writer lock and loads the gallery's metadata:
    /// photos encoded by the image encoder `encoder_sha256` (others are left in the database
    /// and logged: their vectors belong to another encoder) and every content's flag.
    pub fn open(url: &str, encoder_sha256: &str, timeout: Duration) -> Result<Self, ServeError> {
        let pool = Pool::new(pg_config(url, timeout)?, 8);
        let applied = pool.run("schema migration", migrate)?;
        if !applied.is_empty() {
            tracing::info!(versions = ?applied, "gallery schema migrated");
        }
        let store = PgStore {
            pool,
            encoder_sha256: encoder_sha256.to_string(),
            inner: Mutex::new(Inner { state: State::default(), seq: 0, unindexed: Vec::new(), unswept: Vec::new() }),
        };
        let (state, seq) = store.load()?;
        {
            let mut inner = store.lock();
            inner.state = state;
            inner.seq = seq;
        }
        store.sweep_stale_staged();
        store.write_open_captions()?;
        Ok(store)
    }

    /// Writes the open caption text of photos stored before it existed (schema migration 5):
    /// the lexicon that decides it runs here, not in the database.
    fn write_open_captions(&self) -> Result<(), ServeError> {
        let rows = self.pool.run("caption text", |c| c.query("SELECT id, captions FROM photos WHERE open_caption_text IS NULL", &[]))?;
        for r in &rows {
            let (id, captions): (String, Vec<String>) = (r.get(0), r.get(1));
            let (_, open) = caption_texts(&captions);
            self.pool.run("caption text", |c| {
                c.execute("UPDATE photos SET open_caption_text = $2 WHERE id = $1 AND captions = $3", &[&id, &open, &captions])
            })?;
        }
        if !rows.is_empty() {
            tracing::info!(photos = rows.len(), "keyword text written for photos stored before keyword search");
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The gallery's metadata as the database holds it, and the feed position it reflects
    /// (read in one repeatable-read snapshot).
    fn load(&self) -> Result<(State, i64), ServeError> {
        let mut conn = self.pool.get("load")?;
        let mut c = conn
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(|e| db_error("load", &e))?;
        self.read_state(&mut c).map_err(|e| db_error("load", &e))
    }

    /// The gallery's metadata and the feed position it reflects at least (the position is read
    /// first: a change that lands during the read is re-read by the next catch-up).
    fn read_state(&self, c: &mut impl postgres::GenericClient) -> Result<(State, i64), postgres::Error> {
        let seq: i64 = c.query_one("SELECT coalesce(max(seq), 0) FROM gallery_changes", &[])?.get(0);
        let mut state = State::default();
        let rows = c.query(&format!("SELECT {PHOTO_COLUMNS} FROM photos WHERE encoder_sha256 = $1"), &[&self.encoder_sha256])?;
        for put in rows.iter().filter_map(put_of) {
            state.apply(put);
        }
        let other: i64 = c.query_one("SELECT count(*) FROM photos WHERE encoder_sha256 <> $1", &[&self.encoder_sha256])?.get(0);
        if other > 0 {
            tracing::warn!(photos = other, "gallery photos encoded by another image encoder are not served (re-add them)");
        }
        // What is known of each content last: whatever the photos taught, the table decides.
        state.content.extend(c.query("SELECT sha256, flag, reviewed_by, note FROM content_flags", &[])?.iter().filter_map(known_of));
        tracing::info!(photos = state.photos.len(), contents = state.content.len(), seq, "gallery loaded from PostgreSQL");
        Ok((state, seq))
    }

    /// Replaces the state by the database's (the feed was pruned past this server's position):
    /// the differences become index changes, this server's stage pins are kept.
    fn reload(&self, c: &mut impl postgres::GenericClient, inner: &mut Inner) -> Result<(), postgres::Error> {
        tracing::warn!(seq = inner.seq, "the gallery's change feed was pruned past this server's position; reloading the gallery");
        let (mut fresh, seq) = self.read_state(c)?;
        fresh.staged = std::mem::take(&mut inner.state.staged);
        for (id, old) in &inner.state.photos {
            match fresh.photos.get(id) {
                None => {
                    inner.unindexed.push(IndexChange::Remove(id.clone()));
                    inner.unswept.push(old.sha256);
                }
                Some(p) if p.sha256 != old.sha256 => inner.unswept.push(old.sha256),
                Some(_) => {}
            }
        }
        for (id, p) in &fresh.photos {
            if inner.state.photos.get(id).is_none_or(|old| old.vector.as_slice() != p.vector.as_slice()) {
                inner.unindexed.push(IndexChange::Upsert(id.clone(), p.vector.clone()));
            }
        }
        inner.state = fresh;
        inner.seq = seq;
        Ok(())
    }

    /// Deletes bytes that no photo refers to and that were staged long ago (a stream cut by a
    /// crash); a failure only leaves them for the next start.
    fn sweep_stale_staged(&self) {
        let sql = format!(
            "DELETE FROM photo_contents c WHERE staged_at < now() - interval '{STALE_STAGED}' \
             AND NOT EXISTS (SELECT 1 FROM photos p WHERE p.sha256 = c.sha256)"
        );
        let swept = self.pool.run("sweep", |c| c.execute(&sql, &[]));
        match swept {
            Ok(n) if n > 0 => tracing::info!(contents = n, "deleted staged photo bytes no photo refers to"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not sweep staged photo bytes"),
        }
        // The feed keeps a day (a server further behind reloads the gallery) and always its
        // newest change, so numbering never restarts.
        let pruned = self.pool.run("sweep", |c| {
            c.execute(
                &format!("DELETE FROM gallery_changes WHERE at < now() - interval '{FEED_KEPT}' AND seq < (SELECT max(seq) FROM gallery_changes)"),
                &[],
            )
        });
        if let Some(n) = pruned.ok().filter(|n| *n > 0) {
            tracing::info!(changes = n, "pruned the gallery's change feed");
        }
    }

    /// One gallery write: under the writers' lock, catches up with the feed, plans the records
    /// on the newest state (`plan`), writes them with the content knowledge they imply and their
    /// feed entries in one transaction, then applies them in memory. Retried once on a
    /// connection found lost (the whole transaction is idempotent).
    fn write<T>(
        &self,
        inner: &mut Inner,
        what: &str,
        plan: &dyn Fn(&State) -> Result<(T, Vec<Record>), ServeError>,
    ) -> Result<T, ServeError> {
        for attempt in 0..2 {
            let mut c = self.pool.get(what)?;
            match self.write_once(&mut c, inner, plan) {
                Ok(t) => return Ok(t),
                Err(Failed::Db(e)) if attempt == 0 && is_lost(&e) => {
                    drop(c);
                    self.pool.forget_idle();
                }
                Err(Failed::Db(e)) => return Err(db_error(what, &e)),
                Err(Failed::Refused(e)) => return Err(e),
            }
        }
        unreachable!("the second attempt returns")
    }

    fn write_once<T>(
        &self,
        c: &mut Client,
        inner: &mut Inner,
        plan: &dyn Fn(&State) -> Result<(T, Vec<Record>), ServeError>,
    ) -> Result<T, Failed> {
        let mut tx = c.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITER_LOCK])?;
        self.catch_up(&mut tx, inner)?;
        let (out, records) = plan(&inner.state).map_err(Failed::Refused)?;
        if records.is_empty() {
            tx.commit()?;
            return Ok(out);
        }
        let content = inner.state.content_after(&records);
        write_records(&mut tx, &records, &content, &self.encoder_sha256)?;
        // The feed: every key touched, in order, numbered on from the last change.
        let mut seq = inner.seq;
        let feed = tx.prepare("INSERT INTO gallery_changes (seq, photo_id, sha256) VALUES ($1, $2, $3)")?;
        for r in &records {
            let (id, sha): (Option<&str>, Option<&[u8]>) = match r {
                Record::Put { id, .. } | Record::Remove { id } | Record::SetFlag { id, .. } => (Some(id.as_str()), None),
                Record::Content { .. } => continue,
            };
            seq += 1;
            tx.execute(&feed, &[&seq, &id, &sha])?;
        }
        for sha in content.keys() {
            seq += 1;
            tx.execute(&feed, &[&seq, &None::<&str>, &Some(sha.as_slice())])?;
        }
        tx.commit()?;
        inner.seq = seq;
        let released: Vec<[u8; 32]> = records.into_iter().filter_map(|r| inner.state.apply(r)).collect();
        for (sha, k) in content {
            inner.state.content.insert(sha, k);
        }
        inner.unswept.extend(released);
        Ok(out)
    }

    /// Applies the feed's changes after `inner.seq` (other servers' writes): each touched photo
    /// and content re-read as it is now. Index updates are queued for [`PhotoStore::refresh`].
    fn catch_up(&self, c: &mut impl postgres::GenericClient, inner: &mut Inner) -> Result<(), postgres::Error> {
        let rows = c.query("SELECT seq, photo_id, sha256 FROM gallery_changes WHERE seq > $1 ORDER BY seq", &[&inner.seq])?;
        let Some(last) = rows.last().map(|r| r.get::<_, i64>(0)) else { return Ok(()) };
        // The feed has no gaps: a first change past the next one means it was pruned.
        if rows[0].get::<_, i64>(0) != inner.seq + 1 {
            return self.reload(c, inner);
        }
        // Each touched id once, in the order first touched.
        let mut seen = std::collections::HashSet::new();
        let mut ids: Vec<String> = Vec::new();
        let mut shas: Vec<Vec<u8>> = Vec::new();
        for r in &rows {
            if let Some(id) = r.get::<_, Option<String>>(1) {
                if seen.insert(id.clone()) {
                    ids.push(id);
                }
            } else if let Some(sha) = r.get::<_, Option<Vec<u8>>>(2) {
                shas.push(sha);
            }
        }
        let now = c.query(&format!("SELECT {PHOTO_COLUMNS} FROM photos WHERE id = ANY($1) AND encoder_sha256 = $2"), &[&ids, &self.encoder_sha256])?;
        let mut present: std::collections::HashMap<String, Record> =
            now.iter().filter_map(|r| Some((r.get::<_, String>(0), put_of(r)?))).collect();
        for id in ids {
            match present.remove(&id) {
                Some(put) => {
                    let Record::Put { vector, .. } = &put else { unreachable!("built as a Put") };
                    let change = IndexChange::Upsert(Arc::from(id.as_str()), Arc::new(vector.clone()));
                    let same = inner.state.photos.get(id.as_str()).is_some_and(|p| p.vector.as_slice() == vector.as_slice());
                    if let Some(released) = inner.state.apply(put) {
                        inner.unswept.push(released);
                    }
                    if !same {
                        inner.unindexed.push(change);
                    }
                }
                None if inner.state.photos.contains_key(id.as_str()) => {
                    if let Some(released) = inner.state.apply(Record::Remove { id: id.clone() }) {
                        inner.unswept.push(released);
                    }
                    inner.unindexed.push(IndexChange::Remove(Arc::from(id.as_str())));
                }
                None => {}
            }
        }
        if !shas.is_empty() {
            let rows = c.query("SELECT sha256, flag, reviewed_by, note FROM content_flags WHERE sha256 = ANY($1)", &[&shas])?;
            inner.state.content.extend(rows.iter().filter_map(known_of));
        }
        inner.seq = last;
        Ok(())
    }

    /// Deletes the bytes of contents no photo and no stage of this server holds.
    fn sweep_released(&self, inner: &mut Inner) {
        let candidates: Vec<Vec<u8>> =
            inner.unswept.iter().filter(|sha| !inner.state.held(sha)).map(|sha| sha.to_vec()).collect();
        if candidates.is_empty() {
            inner.unswept.clear();
            return;
        }
        let deleted = self.pool.run("sweep", |c| {
            c.execute(
                "DELETE FROM photo_contents c WHERE c.sha256 = ANY($1) AND NOT EXISTS (SELECT 1 FROM photos p WHERE p.sha256 = c.sha256)",
                &[&candidates],
            )
        });
        match deleted {
            Ok(_) => inner.unswept.clear(),
            Err(e) => tracing::warn!(error = %e, "could not delete released photo bytes; retried on the next write"),
        }
    }
}

/// Why a write failed: the database, or the plan (bad input, the law).
enum Failed {
    Db(postgres::Error),
    Refused(ServeError),
}

impl From<postgres::Error> for Failed {
    fn from(e: postgres::Error) -> Self {
        Failed::Db(e)
    }
}

/// Columns a photo is read with, in the order [`put_of`] expects.
const PHOTO_COLUMNS: &str =
    "id, sha256, mime, captions, flag, vector, attributes::text, round(extract(epoch FROM added_at) * 1000)::int8";

/// A `photos` row (read with [`PHOTO_COLUMNS`]) as the record that stores it.
fn put_of(r: &postgres::Row) -> Option<Record> {
    let sha256 = sha_of(r.get::<_, &[u8]>(1))?;
    let vector: Vector = r.get(5);
    let attributes: std::collections::BTreeMap<String, String> = serde_json::from_str(r.get(6)).ok()?;
    Some(Record::Put {
        id: r.get(0),
        sha256,
        mime: r.get(2),
        captions: r.get(3),
        flag: flag_of(r.get(4)),
        vector: vector.to_vec(),
        attributes: attributes.into_iter().collect(),
        added_ms: r.get(7),
    })
}

/// A photo's captions as the text full-text search reads: all of them, and those that do not
/// describe a child (the only ones a restricted region's keyword search matches).
fn caption_texts(captions: &[String]) -> (String, String) {
    let open: Vec<&str> = captions.iter().map(String::as_str).filter(|c| imagesearch_compliance::describes_child(c).is_none()).collect();
    (captions.join("\n"), open.join("\n"))
}

/// Flags of photos a restricted region may be shown, as the database stores them.
fn open_flags() -> Vec<i16> {
    (0..=u8::MAX).filter_map(Flag::from_u8).filter(|f| !f.restricted()).map(|f| f as i16).collect()
}

/// A `content_flags` row (sha256, flag, reviewed_by, note).
fn known_of(r: &postgres::Row) -> Option<([u8; 32], Known)> {
    Some((sha_of(r.get::<_, &[u8]>(0))?, Known { flag: flag_of(r.get(1)), by: r.get(2), note: r.get(3) }))
}

/// A flag number from the database; an unknown one is restricted (fail closed).
fn flag_of(n: i16) -> Flag {
    u8::try_from(n).ok().and_then(Flag::from_u8).unwrap_or(Flag::Unverified)
}

/// The records as rows, then the content knowledge (inside the caller's transaction).
fn write_records(
    tx: &mut postgres::Transaction<'_>,
    records: &[Record],
    content: &std::collections::HashMap<[u8; 32], Known>,
    encoder_sha256: &str,
) -> Result<(), postgres::Error> {
    let put = tx.prepare(
        "INSERT INTO photos (id, sha256, mime, captions, flag, encoder_sha256, vector, attributes, added_at, caption_text, open_caption_text)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::jsonb, to_timestamp($9::int8 / 1000.0), $10, $11)
         ON CONFLICT (id) DO UPDATE SET sha256 = excluded.sha256, mime = excluded.mime, captions = excluded.captions,
             flag = excluded.flag, encoder_sha256 = excluded.encoder_sha256, vector = excluded.vector,
             attributes = excluded.attributes, added_at = excluded.added_at, caption_text = excluded.caption_text,
             open_caption_text = excluded.open_caption_text, updated_at = now()",
    )?;
    let remove = tx.prepare("DELETE FROM photos WHERE id = $1")?;
    let set_flag = tx.prepare("UPDATE photos SET flag = $2, updated_at = now() WHERE id = $1")?;
    for r in records {
        match r {
            Record::Put { id, sha256, mime, captions, flag, vector, attributes, added_ms } => {
                let v = Vector::from(vector.clone());
                let attrs: serde_json::Map<String, serde_json::Value> =
                    attributes.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
                let attrs = serde_json::Value::Object(attrs).to_string();
                let (all, open) = caption_texts(captions);
                tx.execute(&put, &[id, &sha256.as_slice(), mime, captions, &(*flag as i16), &encoder_sha256, &v, &attrs, added_ms, &all, &open])?;
            }
            Record::Remove { id } => {
                tx.execute(&remove, &[id])?;
            }
            Record::SetFlag { id, flag } => {
                tx.execute(&set_flag, &[id, &(*flag as i16)])?;
            }
            // Written below with the knowledge the other records teach.
            Record::Content { .. } => {}
        }
    }
    let known = tx.prepare(
        "INSERT INTO content_flags (sha256, flag, reviewed_by, note) VALUES ($1, $2, $3, $4)
         ON CONFLICT (sha256) DO UPDATE SET flag = excluded.flag, reviewed_by = excluded.reviewed_by,
             note = excluded.note, updated_at = now()",
    )?;
    for (sha, k) in content {
        tx.execute(&known, &[&sha.as_slice(), &(k.flag as i16), &k.by, &k.note])?;
    }
    Ok(())
}

impl PhotoStore for PgStore {
    fn stage(&self, sha256: &[u8; 32], bytes: &[u8]) -> Result<(), ServeError> {
        // Pin first, so a concurrent removal of a photo with the same bytes keeps them.
        bump(&mut self.lock().state.staged, *sha256, true);
        let written = self.pool.run("photo upload", |c| {
            c.execute(
                "INSERT INTO photo_contents (sha256, bytes) VALUES ($1, $2) ON CONFLICT (sha256) DO UPDATE SET staged_at = now()",
                &[&sha256.as_slice(), &bytes],
            )
            .map(|_| ())
        });
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
        inner.unswept.extend(shas.iter().copied());
        self.sweep_released(&mut inner);
    }

    fn upsert(&self, photos: Vec<NewPhoto>) -> Result<Upserted, ServeError> {
        let mut inner = self.lock();
        let shas: Vec<[u8; 32]> = photos.iter().map(|p| p.sha256).collect();
        let committed = self.write(&mut inner, "add", &|state: &State| state.upsert_records(photos.clone()));
        // Committed or not, the stream's pins are released.
        for sha in &shas {
            bump(&mut inner.state.staged, *sha, false);
        }
        inner.unswept.extend(shas);
        self.sweep_released(&mut inner);
        committed
    }

    fn remove(&self, ids: &[String]) -> Result<Vec<String>, ServeError> {
        let mut inner = self.lock();
        let missing = self.write(&mut inner, "removal", &|state: &State| Ok(state.remove_records(ids)))?;
        self.sweep_released(&mut inner);
        Ok(missing)
    }

    fn set_flags(&self, changes: &[(String, Flag)]) -> Result<(), ServeError> {
        let mut inner = self.lock();
        self.write(&mut inner, "flag change", &|state: &State| Ok(((), state.flag_records(changes))))
    }

    fn content_flag(&self, sha256: &[u8; 32]) -> Option<Flag> {
        self.lock().state.content.get(sha256).map(|k| k.flag)
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn refresh(&self) -> Result<Vec<IndexChange>, ServeError> {
        let mut inner = self.lock();
        let mut c = self.pool.get("refresh")?;
        let caught = self.catch_up(&mut *c, &mut inner);
        if let Err(e) = caught {
            return Err(db_error("refresh", &e));
        }
        let changes = std::mem::take(&mut inner.unindexed);
        if !inner.unswept.is_empty() {
            drop(c);
            self.sweep_released(&mut inner);
        }
        Ok(changes)
    }

    fn review(&self, id: &str, review: &Review) -> Result<Vec<(Arc<str>, Flag)>, ServeError> {
        let mut inner = self.lock();
        self.write(&mut inner, "review", &|state: &State| state.review_records(id, review))
    }

    fn get(&self, id: &str) -> Option<PhotoMeta> {
        self.lock().state.photos.get(id).cloned()
    }

    fn photo_bytes(&self, id: &str) -> Result<Option<Vec<u8>>, ServeError> {
        let Some(sha) = self.lock().state.photos.get(id).map(|p| p.sha256) else { return Ok(None) };
        let row = self.pool.run("photo read", |c| c.query_opt("SELECT bytes FROM photo_contents WHERE sha256 = $1", &[&sha.as_slice()]))?;
        Ok(row.map(|r| r.get(0)))
    }

    fn all(&self) -> Vec<PhotoMeta> {
        self.lock().state.photos.values().cloned().collect()
    }

    fn len(&self) -> usize {
        self.lock().state.photos.len()
    }

    fn stats(&self) -> StoreStats {
        let flags: Vec<Flag> = self.lock().state.photos.values().map(|p| p.flag).collect();
        let mut s = StoreStats { photos: flags.len() as u64, ..Default::default() };
        for f in flags {
            s.by_flag[f as usize] += 1;
        }
        // Sizes from the database; unknown (0) while it is unreachable.
        let sizes = self.pool.run("stats", |c| {
            c.query_one(
                "SELECT coalesce((SELECT sum(octet_length(bytes)) FROM photo_contents), 0)::bigint,
                        (pg_total_relation_size('photos') + pg_total_relation_size('content_flags'))::bigint",
                &[],
            )
        });
        if let Ok(r) = sizes {
            s.photo_bytes = r.get::<_, i64>(0) as u64;
            s.log_bytes = r.get::<_, i64>(1) as u64;
        }
        s
    }

    fn matching(&self, filter: &PhotoFilter) -> HashSet<Arc<str>> {
        self.lock().state.matching(filter)
    }

    /// PostgreSQL full-text search (`english` configuration), any query term matching, ranked
    /// by `ts_rank`; in a restricted region over the open caption text of open photos only.
    fn keyword_ranking(&self, query: &str, restricted_region: bool, filter: &PhotoFilter, limit: usize) -> Result<Vec<Arc<str>>, ServeError> {
        let terms = crate::keywords::terms(query);
        if terms.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let tsv = if restricted_region { "p.open_captions_tsv" } else { "p.captions_tsv" };
        let mut params: Params = vec![Box::new(terms.join(" | ")), Box::new(self.encoder_sha256.clone()), Box::new(limit as i64)];
        let mut sql = format!("SELECT p.id FROM photos p, to_tsquery('english', $1) q WHERE {tsv} @@ q AND p.encoder_sha256 = $2");
        if restricted_region {
            params.push(Box::new(open_flags()));
            sql.push_str(&format!(" AND p.flag = ANY(${})", params.len()));
        }
        push_filter(filter, &mut sql, &mut params);
        sql.push_str(&format!(" ORDER BY ts_rank({tsv}, q) DESC, p.id LIMIT $3"));
        let rows = self.pool.run("keyword search", |c| c.query(&sql, &refs(&params)))?;
        // Only photos this server knows (and so can show under the law) are answered.
        let inner = self.lock();
        Ok(rows.iter().filter_map(|r| inner.state.photos.get(r.get::<_, &str>(0)).map(|p| p.id.clone())).collect())
    }
}

impl PgStore {
    /// Copies a gallery's records (a [`crate::local_store::LocalStore::snapshot`]) into this
    /// store, `batch` photos per transaction, reading each photo's bytes with `bytes`; the
    /// knowledge of contents last. Refuses a store that already holds photos.
    pub fn import(
        &self,
        records: Vec<Record>,
        batch: usize,
        bytes: impl Fn(&str) -> Result<Option<Vec<u8>>, ServeError>,
    ) -> Result<(), ServeError> {
        let mut inner = self.lock();
        if !inner.state.photos.is_empty() {
            return Err(ServeError::FailedPrecondition(format!(
                "the target gallery already holds {} photos; migrate into an empty database",
                inner.state.photos.len()
            )));
        }
        let (puts, rest): (Vec<Record>, Vec<Record>) = records.into_iter().partition(|r| matches!(r, Record::Put { .. }));
        let total = puts.len();
        let mut done = 0;
        let mut puts = puts.into_iter().peekable();
        while puts.peek().is_some() {
            let chunk: Vec<Record> = puts.by_ref().take(batch.max(1)).collect();
            let mut pinned = Vec::new();
            let staged = chunk.iter().try_for_each(|r| {
                let Record::Put { id, sha256, .. } = r else { return Ok(()) };
                let data = bytes(id)?.ok_or_else(|| ServeError::Storage(format!("photo '{}' has no bytes in the source", imagesearch_compliance::quote(id, 64))))?;
                self.pool.run("photo upload", |c| {
                    c.execute(
                        "INSERT INTO photo_contents (sha256, bytes) VALUES ($1, $2) ON CONFLICT (sha256) DO UPDATE SET staged_at = now()",
                        &[&sha256.as_slice(), &data],
                    )
                })?;
                bump(&mut inner.state.staged, *sha256, true);
                pinned.push(*sha256);
                Ok::<_, ServeError>(())
            });
            let n = chunk.len();
            let committed = staged.and_then(|()| self.write(&mut inner, "migration", &|_: &State| Ok(((), chunk.clone()))));
            for sha in &pinned {
                bump(&mut inner.state.staged, *sha, false);
            }
            committed?;
            done += n;
            tracing::info!(photos = done, of = total, "migrating the gallery");
        }
        self.write(&mut inner, "migration", &|_: &State| Ok(((), rest.clone())))
    }

    /// What is known of contents, as (sha256, flag) sorted (migration checks).
    pub fn content_flags(&self) -> Vec<([u8; 32], Flag)> {
        let mut v: Vec<([u8; 32], Flag)> = self.lock().state.content.iter().map(|(s, k)| (*s, k.flag)).collect();
        v.sort_by_key(|(s, _)| *s);
        v
    }

    /// Ids in the gallery, sorted (tests and migration checks).
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.lock().state.photos.keys().map(|id| id.to_string()).collect();
        ids.sort();
        ids
    }

    /// Photos in the database that no staged stream of this server holds and no photo refers
    /// to (zero after every write settles).
    pub fn orphan_contents(&self) -> Result<i64, ServeError> {
        let r = self.pool.run("check", |c| {
            c.query_one("SELECT count(*) FROM photo_contents c WHERE NOT EXISTS (SELECT 1 FROM photos p WHERE p.sha256 = c.sha256)", &[])
        })?;
        Ok(r.get(0))
    }
}

impl crate::rollout::RolloutStore for PgStore {
    fn load_rollout(&self) -> Result<Option<(crate::rollout::Rollout, i64)>, ServeError> {
        let row = self.pool.run("rollout read", |c| {
            c.query_opt("SELECT stable, canary, canary_percent, generation FROM rollout WHERE id = 1", &[])
        })?;
        Ok(row.map(|r| {
            let n = |i: usize| u32::try_from(r.get::<_, i32>(i)).unwrap_or(0);
            (crate::rollout::Rollout { stable: n(0), canary: n(1), canary_percent: n(2) }, r.get(3))
        }))
    }

    fn save_rollout(&self, r: crate::rollout::Rollout, expected: i64) -> Result<i64, ServeError> {
        let n = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
        let row = self.pool.run("rollout save", |c| {
            c.query_opt(
                "INSERT INTO rollout (id, stable, canary, canary_percent, generation) VALUES (1, $1, $2, $3, 1)
                 ON CONFLICT (id) DO UPDATE SET stable = excluded.stable, canary = excluded.canary,
                     canary_percent = excluded.canary_percent, generation = rollout.generation + 1, updated_at = now()
                 WHERE rollout.generation = $4
                 RETURNING generation",
                &[&n(r.stable), &n(r.canary), &n(r.canary_percent), &expected],
            )
        })?;
        // No row back: a rollout is saved and its generation is not `expected`.
        match row {
            Some(r) => Ok(r.get(0)),
            None => Err(ServeError::Conflict(
                "the rollout was changed by another server since this one read it; read it again (GetRollout) and retry".into(),
            )),
        }
    }
}
