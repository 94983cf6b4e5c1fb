//! Tests of the local store: persistence, content flags and reviews, a full disk.

use std::process::Command;
use std::sync::Arc;

use super::*;
use crate::gallery::decide_flag;

fn sha(content: &[u8]) -> [u8; 32] {
    imagesearch_model::hashing::sha256(content)
}

fn photo(id: &str, content: &[u8], flag: Flag) -> NewPhoto {
    NewPhoto {
        id: id.into(),
        sha256: sha(content),
        mime: "image/jpeg".into(),
        captions: vec![],
        flag,
        vector: Arc::new(vec![content.len() as f32; 4]),
        attributes: vec![],
        added_ms: 0,
    }
}

/// Stages and stores photos given as (id, bytes, flag).
fn put(s: &LocalStore, photos: &[(&str, &[u8], Flag)]) -> Result<Upserted, ServeError> {
    let mut new = Vec::new();
    for (id, bytes, flag) in photos {
        s.stage(&sha(bytes), bytes)?;
        new.push(photo(id, bytes, *flag));
    }
    s.upsert(new)
}

#[test]
fn survives_reopen_with_replacements_removals_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = LocalStore::open(dir.path()).unwrap();
        let up = put(&s, &[("a", b"aaa", Flag::Clear), ("b", b"bb", Flag::Unverified)]).unwrap();
        assert_eq!((up.added, up.replaced), (2, 0));
        let up = put(&s, &[("a", b"a2", Flag::Clear)]).unwrap();
        assert_eq!((up.added, up.replaced), (0, 1));
        assert_eq!(s.remove(&["b".into(), "zzz".into()]).unwrap(), vec!["zzz".to_string()]);
        put(&s, &[("c", b"c", Flag::Unverified)]).unwrap();
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
        put(&s, &[("a", b"aaa", Flag::Clear)]).unwrap();
    }
    let log = dir.path().join("gallery.log");
    let mut bytes = std::fs::read(&log).unwrap();
    let framed = crate::wal::frame(&Record::Remove { id: "a".into() });
    bytes.extend_from_slice(&framed[..framed.len() - 3]);
    std::fs::write(&log, bytes).unwrap();
    let s = LocalStore::open(dir.path()).unwrap();
    assert_eq!(s.len(), 1);
    assert!(s.get("a").is_some());
}

#[test]
fn bytes_keep_their_flag_after_removal_compaction_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = LocalStore::open(dir.path()).unwrap();
        put(&s, &[("kid", b"child photo", Flag::Captions), ("det", b"detected", Flag::Detector)]).unwrap();
        s.remove(&["kid".into(), "det".into()]).unwrap();
        // Enough history that the next open compacts the log.
        for i in 0..20 {
            put(&s, &[("x", format!("{i}").as_bytes(), Flag::Clear)]).unwrap();
        }
    }
    let s = LocalStore::open(dir.path()).unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(s.content_flag(&sha(b"child photo")), Some(Flag::Captions));
    assert_eq!(s.content_flag(&sha(b"detected")), Some(Flag::Detector));
    // Re-added under a new id with harmless captions, the same bytes are still restricted.
    assert_eq!(decide_flag(false, s.content_flag(&sha(b"child photo")), Some(false)), Flag::Captions);
    assert_eq!(s.content_flag(&sha(b"9")), None);
}

#[test]
fn a_review_decides_for_every_id_with_the_same_bytes_and_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = LocalStore::open(dir.path()).unwrap();
        let mut own = photo("own", b"same", Flag::Captions);
        own.captions = vec!["a boy on a bike".into()];
        s.stage(&own.sha256, b"same").unwrap();
        s.upsert(vec![own]).unwrap();
        put(&s, &[("a", b"same", Flag::Detector), ("b", b"same", Flag::Detector), ("other", b"other", Flag::Detector)]).unwrap();
        let review = Review { restricted: false, by: "reviewer-1".into(), note: "a statue".into() };
        let mut changed = s.review("a", &review).unwrap();
        changed.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(changed, vec![(Arc::from("a"), Flag::ReviewedClear), (Arc::from("b"), Flag::ReviewedClear)]);
        // The photo whose own captions describe a child cannot be cleared.
        let refused = s.review("own", &review).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused}");
        assert_eq!(s.review("nope", &review).unwrap_err().code(), tonic::Code::NotFound);
    }
    let s = LocalStore::open(dir.path()).unwrap();
    assert_eq!(s.get("a").unwrap().flag, Flag::ReviewedClear);
    assert_eq!(s.get("own").unwrap().flag, Flag::Captions);
    assert_eq!(s.get("other").unwrap().flag, Flag::Detector);
    assert_eq!(s.content_flag(&sha(b"same")), Some(Flag::ReviewedClear));
    // A reviewer may restrict again.
    s.review("b", &Review { restricted: true, by: "reviewer-2".into(), note: String::new() }).unwrap();
    assert!(s.get("a").unwrap().flag.restricted());
}

#[test]
fn staged_bytes_survive_a_concurrent_removal_of_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStore::open(dir.path()).unwrap();
    put(&s, &[("old", b"bytes", Flag::Clear)]).unwrap();
    s.stage(&sha(b"bytes"), b"bytes").unwrap();
    s.remove(&["old".into()]).unwrap();
    s.upsert(vec![photo("new", b"bytes", Flag::Clear)]).unwrap();
    assert_eq!(s.photo_bytes("new").unwrap().unwrap(), b"bytes");
    // Unstaged bytes are deleted.
    s.stage(&sha(b"never"), b"never").unwrap();
    s.unstage(&[sha(b"never")]);
    assert!(!dir.path().join("photos").join(hex::encode(sha(b"never"))).exists());
}

#[test]
fn removing_many_unknown_ids_reports_each_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStore::open(dir.path()).unwrap();
    put(&s, &[("a", b"a", Flag::Clear)]).unwrap();
    let ids: Vec<String> = (0..40_000).map(|i| format!("missing-{i}")).chain(["a".to_string(), "a".to_string()]).collect();
    let missing = s.remove(&ids).unwrap();
    assert_eq!(missing.len(), 40_000);
    assert_eq!(missing[39_999], "missing-39999");
    assert!(s.is_empty());
}

/// A tmpfs of `kib` KiB mounted on a new directory; unmounted on drop.
struct TinyDisk(tempfile::TempDir);

impl TinyDisk {
    fn mount(kib: u32) -> TinyDisk {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mounting a tmpfs failed: the disk-full test needs root (as in CI)");
        TinyDisk(dir)
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn a_full_disk_refuses_writes_and_loses_nothing_acknowledged() {
    let disk = TinyDisk::mount(512);
    let dir = disk.0.path().join("gallery");
    let mut acked: Vec<(String, Vec<u8>)> = Vec::new();
    let mut refused = 0;
    {
        let s = LocalStore::open(&dir).unwrap();
        // Photos of 20 KiB each, with pseudo-random bytes (distinct content) until the disk is full.
        let mut seed = 7u64;
        for i in 0..60 {
            let bytes: Vec<u8> = (0..20_000)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (seed >> 56) as u8
                })
                .collect();
            let id = format!("p{i}");
            match put(&s, &[(id.as_str(), &bytes, Flag::Clear)]) {
                Ok(_) => acked.push((id, bytes)),
                Err(e) => {
                    refused += 1;
                    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");
                    let msg = e.to_string();
                    assert!(msg.contains("disk is full") && !msg.contains('/'), "message names the disk, not paths: {msg}");
                }
            }
        }
        assert!(refused > 0 && acked.len() > 5, "the disk filled up ({} acknowledged, {refused} refused)", acked.len());
        // Fill what is left with a filler file, so the log append itself fails too.
        let filler = disk.0.path().join("filler");
        let _ = std::fs::write(&filler, vec![0u8; 1 << 20]);
        // Enough records to need new pages (a small one can fit in the log's last page).
        let many: Vec<(String, Flag)> = (0..5000).map(|_| (acked[0].0.clone(), Flag::Detector)).collect();
        assert_eq!(s.set_flags(&many).unwrap_err().code(), tonic::Code::ResourceExhausted);
        assert_eq!(s.get(&acked[0].0).unwrap().flag, Flag::Clear, "a refused write changes nothing");
        // Space comes back: later writes land after the last good record, not after a torn one.
        std::fs::remove_file(&filler).unwrap();
        for (id, _) in acked.drain(..acked.len() - 4).collect::<Vec<_>>() {
            s.remove(&[id]).unwrap();
        }
        let late = b"written after space came back".to_vec();
        put(&s, &[("late", &late, Flag::Clear)]).unwrap();
        acked.push(("late".into(), late));
        // Searches (reads) kept working throughout.
        assert!(s.get("late").is_some());
    }
    let s = LocalStore::open(&dir).unwrap();
    assert_eq!(s.len(), acked.len(), "every acknowledged photo is there after a restart");
    for (id, bytes) in &acked {
        assert_eq!(s.photo_bytes(id).unwrap().as_deref(), Some(bytes.as_slice()), "photo {id}");
    }
    // No temporary file was left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.join("photos")).unwrap().filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().contains("tmp")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn new_evidence_restricts_every_photo_with_the_same_bytes_and_survives_compaction() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = LocalStore::open(dir.path()).unwrap();
        put(&s, &[("dog", b"same bytes", Flag::Clear), ("cleared", b"reviewed", Flag::Clear)]).unwrap();
        put(&s, &[("kid", b"same bytes", Flag::Captions)]).unwrap();
        assert_eq!(s.get("dog").unwrap().flag, Flag::Captions, "the earlier photo with the same bytes is restricted too");
        // A review clear of bytes that another id's own captions restrict keeps that one restricted.
        let mut own = photo("own", b"reviewed", Flag::Captions);
        own.captions = vec!["two girls".into()];
        s.stage(&own.sha256, b"reviewed").unwrap();
        s.upsert(vec![own]).unwrap();
        s.review("cleared", &Review { restricted: false, by: "r".into(), note: "adults".into() }).unwrap();
        assert_eq!(s.get("cleared").unwrap().flag, Flag::ReviewedClear);
        for i in 0..40 {
            put(&s, &[("churn", format!("{i}").as_bytes(), Flag::Clear)]).unwrap();
        }
    }
    // Reopen twice: the first compacts, the second replays the compacted log.
    for _ in 0..2 {
        let s = LocalStore::open(dir.path()).unwrap();
        assert_eq!(s.get("dog").unwrap().flag, Flag::Captions);
        assert_eq!(s.get("cleared").unwrap().flag, Flag::ReviewedClear);
        assert_eq!(s.get("own").unwrap().flag, Flag::Captions);
        assert_eq!(s.content_flag(&sha(b"reviewed")), Some(Flag::ReviewedClear));
    }
}
