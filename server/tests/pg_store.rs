//! The PostgreSQL gallery store against a real PostgreSQL + pgvector started for the test:
//! writes are durable transactions (a failed batch leaves nothing), the law's flags follow the
//! bytes, servers sharing one database see each other's writes (and decide the law on the
//! newest knowledge), and a lost database is UNAVAILABLE until it returns, with no restart of
//! the store.

use std::sync::Arc;
use std::time::Duration;

use imagesearch_server::gallery::{IndexChange, NewPhoto, PhotoStore, Review};
use imagesearch_server::pg_store::PgStore;
use imagesearch_server::wal::Flag;
use imagesearch_tests::Postgres;
use tonic::Code;

const ENCODER: &str = "encoder-sha-for-tests";

fn open(pg: &Postgres) -> PgStore {
    PgStore::open(&pg.url("gallery"), ENCODER, Duration::from_secs(5)).unwrap()
}

fn sha(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

fn photo(id: &str, bytes: &[u8], flag: Flag, captions: &[&str]) -> NewPhoto {
    NewPhoto {
        id: id.into(),
        sha256: sha(bytes),
        mime: "image/jpeg".into(),
        captions: captions.iter().map(|c| c.to_string()).collect(),
        flag,
        vector: Arc::new(vec![bytes.len() as f32, 0.5, -1.0]),
        attributes: vec![("owner".into(), id.into())],
        added_ms: 1_764_000_000_000,
    }
}

fn add(store: &PgStore, photos: &[(&str, &[u8], Flag, &[&str])]) -> imagesearch_server::gallery::Upserted {
    let new: Vec<NewPhoto> = photos.iter().map(|(id, b, f, c)| photo(id, b, *f, c)).collect();
    for (_, b, _, _) in photos {
        store.stage(&sha(b), b).unwrap();
    }
    store.upsert(new).unwrap()
}

#[test]
fn photos_flags_and_reviews_are_durable_and_follow_the_bytes() {
    let pg = Postgres::start();
    {
        let store = open(&pg);
        let up = add(&store, &[("a", b"AAAA", Flag::Clear, &["a dog"]), ("b", b"BBBB", Flag::Captions, &["a boy"]), ("c", b"CCCC", Flag::Clear, &[])]);
        assert_eq!((up.added, up.replaced), (3, 0));
        assert_eq!(store.photo_bytes("b").unwrap().as_deref(), Some(&b"BBBB"[..]));
        // The same bytes as "b" under another id and harmless captions: the store knows them.
        assert_eq!(store.content_flag(&sha(b"BBBB")), Some(Flag::Captions));
        // A review restricts every photo with the reviewed bytes.
        add(&store, &[("c2", b"CCCC", Flag::Clear, &[])]);
        let changed = store.review("c", &Review { restricted: true, by: "rev".into(), note: "seen".into() }).unwrap();
        let mut ids: Vec<String> = changed.iter().map(|(id, _)| id.to_string()).collect();
        ids.sort();
        assert_eq!(ids, ["c", "c2"]);
        // Removing the photo that raised the evidence keeps the evidence.
        assert!(store.remove(&["b".into(), "nope".into()]).unwrap() == ["nope"]);
        assert_eq!(store.orphan_contents().unwrap(), 0, "the removed photo's bytes are deleted");
    }
    // A new store (a restart) sees exactly what was acknowledged.
    let store = open(&pg);
    assert_eq!(store.ids(), ["a", "c", "c2"]);
    assert_eq!(store.get("c2").unwrap().flag, Flag::Reviewed);
    assert_eq!(store.get("a").unwrap().vector.as_slice(), &[4.0, 0.5, -1.0]);
    assert_eq!(store.content_flag(&sha(b"BBBB")), Some(Flag::Captions), "the evidence outlived its photo");
    assert_eq!(store.content_flag(&sha(b"CCCC")), Some(Flag::Reviewed));
    let stats = store.stats();
    assert_eq!((stats.photos, stats.by_flag[Flag::Reviewed as usize], stats.by_flag[Flag::Clear as usize]), (3, 2, 1));
    assert_eq!(stats.photo_bytes, 8, "AAAA and CCCC, stored once each");
    assert_eq!(pg.psql("gallery", "SELECT count(*) FROM content_flags WHERE reviewed_by = 'rev' AND note = 'seen'"), "1");
    assert_eq!(pg.psql("gallery", "SELECT max(version) FROM imagesearch_schema"), imagesearch_server::pg_schema::MIGRATIONS.len().to_string());
}

#[test]
fn a_failed_batch_stores_nothing() {
    let pg = Postgres::start();
    let store = open(&pg);
    add(&store, &[("keep", b"KEEP", Flag::Clear, &[])]);
    // pgvector refuses NaN: the second photo fails the transaction, so the first is not stored.
    let mut bad = photo("bad", b"BAD!", Flag::Clear, &[]);
    bad.vector = Arc::new(vec![f32::NAN, 0.0, 0.0]);
    let good = photo("good", b"GOOD", Flag::Clear, &[]);
    store.stage(&good.sha256, b"GOOD").unwrap();
    store.stage(&bad.sha256, b"BAD!").unwrap();
    let err = store.upsert(vec![good, bad]).unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err}");
    assert!(err.to_string().contains("nothing was stored"), "{err}");
    assert_eq!(store.ids(), ["keep"]);
    assert_eq!(pg.psql("gallery", "SELECT string_agg(id, ',') FROM photos"), "keep");
    assert_eq!(store.orphan_contents().unwrap(), 0, "the failed stream's staged bytes are released");
    assert_eq!(pg.psql("gallery", "SELECT count(*) FROM gallery_changes WHERE photo_id IN ('good', 'bad')"), "0", "nor fed to replicas");
}

fn upserted_ids(changes: &[IndexChange]) -> Vec<String> {
    let mut ids: Vec<String> = changes.iter().filter_map(|c| match c { IndexChange::Upsert(id, _) => Some(id.to_string()), _ => None }).collect();
    ids.sort();
    ids
}

#[test]
fn servers_sharing_a_database_follow_each_other_and_decide_on_the_newest_knowledge() {
    let pg = Postgres::start();
    let a = open(&pg);
    let b = open(&pg);
    assert!(a.is_shared());
    add(&a, &[("x", b"XXXX", Flag::Clear, &["a dog"]), ("kid", b"KIDS", Flag::Captions, &["a boy"])]);
    // B learns A's photos from the feed, with their index changes.
    let changes = b.refresh().unwrap();
    assert_eq!(upserted_ids(&changes), ["kid", "x"]);
    assert_eq!(b.get("kid").unwrap().flag, Flag::Captions);
    assert!(b.refresh().unwrap().is_empty(), "nothing new");
    // B has not refreshed since A learned that some bytes show a child; B's write of those bytes
    // under harmless captions still comes out restricted: a write catches up under the lock.
    add(&a, &[("evidence", b"SAME", Flag::Captions, &["two girls"])]);
    let up = add(&b, &[("innocent", b"SAME", Flag::Clear, &["a field"])]);
    assert_eq!(b.get("innocent").unwrap().flag, Flag::Captions, "B decided on A's evidence");
    assert_eq!((up.added, up.restricted), (1, 1), "and counts it restricted in its answer");
    // A review on B reaches A, reviewer and all; a removal on A reaches B.
    b.review("x", &Review { restricted: true, by: "rev-b".into(), note: String::new() }).unwrap();
    a.remove(&["kid".into()]).unwrap();
    let on_a = a.refresh().unwrap();
    assert_eq!(upserted_ids(&on_a), ["innocent"], "A indexes B's photo; a flag change needs no re-index");
    assert_eq!(a.get("x").unwrap().flag, Flag::Reviewed);
    assert_eq!(a.content_flag(&sha(b"XXXX")), Some(Flag::Reviewed));
    let on_b = b.refresh().unwrap();
    assert!(on_b.iter().any(|c| matches!(c, IndexChange::Remove(id) if &**id == "kid")), "{on_b:?}");
    assert!(b.get("kid").is_none());
    assert_eq!(a.ids(), b.ids());
    // A detector re-check on A that saw an old flag cannot lift B's review.
    a.set_flags(&[("x".into(), Flag::Clear)]).unwrap();
    assert_eq!(a.get("x").unwrap().flag, Flag::Reviewed);
}

#[test]
fn a_lost_database_is_unavailable_and_the_store_recovers_when_it_returns() {
    let mut pg = Postgres::start();
    let store = open(&pg);
    add(&store, &[("before", b"BEFORE", Flag::Clear, &[])]);
    pg.crash();
    // Metadata is served from memory; writes and photo bytes say the database is gone.
    assert!(store.get("before").is_some());
    let read = store.photo_bytes("before").unwrap_err();
    assert_eq!(read.code(), Code::Unavailable, "{read}");
    let staged = store.stage(&sha(b"DURING"), b"DURING").unwrap_err();
    assert_eq!(staged.code(), Code::Unavailable, "{staged}");
    assert!(staged.to_string().contains("gallery database is unreachable"), "{staged}");
    let removed = store.remove(&["before".into()]).unwrap_err();
    assert_eq!(removed.code(), Code::Unavailable, "{removed}");
    assert!(store.get("before").is_some(), "a refused removal changes nothing");
    pg.resume();
    // Back without reopening the store: reconnects and retakes the writer lock.
    add(&store, &[("after", b"AFTER", Flag::Clear, &[])]);
    assert_eq!(store.photo_bytes("before").unwrap().as_deref(), Some(&b"BEFORE"[..]));
    drop(store);
    assert_eq!(open(&pg).ids(), ["after", "before"]);
}

#[test]
fn the_shared_rollout_is_compare_and_set() {
    use imagesearch_server::rollout::{Rollout, RolloutStore};
    let pg = Postgres::start();
    let (a, b) = (open(&pg), open(&pg));
    assert_eq!(a.load_rollout().unwrap(), None);
    let one = Rollout { stable: 2, canary: 1, canary_percent: 10 };
    assert_eq!(a.save_rollout(one, 0).unwrap(), 1);
    // B saves over what it has not read: refused, ABORTED, nothing changed.
    let two = Rollout { stable: 2, canary: 0, canary_percent: 0 };
    let e = b.save_rollout(two, 0).unwrap_err();
    assert_eq!(e.code(), Code::Aborted, "{e}");
    assert_eq!(b.load_rollout().unwrap(), Some((one, 1)));
    assert_eq!(b.save_rollout(two, 1).unwrap(), 2);
    assert_eq!(a.load_rollout().unwrap(), Some((two, 2)));
    assert_eq!(a.save_rollout(one, 1).unwrap_err().code(), Code::Aborted, "a stale generation loses");
}

#[test]
fn a_server_behind_a_pruned_feed_reloads_and_converges() {
    let pg = Postgres::start();
    let (a, b) = (open(&pg), open(&pg));
    add(&a, &[("p1", b"P1P1", Flag::Clear, &[]), ("p2", b"P2P2", Flag::Clear, &[])]);
    assert_eq!(upserted_ids(&b.refresh().unwrap()), ["p1", "p2"]);
    a.remove(&["p1".into()]).unwrap();
    add(&a, &[("p3", b"P3P3", Flag::Captions, &["a boy"])]);
    // The feed loses what B has not read (its newest change is always kept).
    pg.psql("gallery", "DELETE FROM gallery_changes WHERE seq < (SELECT max(seq) FROM gallery_changes)");
    let changes = b.refresh().unwrap();
    assert_eq!(upserted_ids(&changes), ["p3"]);
    assert!(changes.iter().any(|c| matches!(c, IndexChange::Remove(id) if &**id == "p1")), "{changes:?}");
    assert_eq!(b.ids(), ["p2", "p3"]);
    assert_eq!(b.get("p3").unwrap().flag, Flag::Captions);
    // And B writes on from there: numbering continues.
    add(&b, &[("p4", b"P4P4", Flag::Clear, &[])]);
    assert_eq!(upserted_ids(&a.refresh().unwrap()), ["p4"]);
}
