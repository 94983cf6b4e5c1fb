//! The gallery's write-ahead log: length- and CRC-framed records appended to one file and
//! synced before a write is acknowledged. Replay stops at the first torn or corrupt record
//! (only an unacknowledged tail can be torn) and cuts the file there.
//!
//! A failed append (a full disk, an I/O error) is cut back to the last good record before the
//! error is returned; if even that fails, the log refuses every append until a later one has
//! cut it back. So nothing is ever appended after a torn record, and an acknowledged record is
//! never lost to a replay that stops early.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// A restricted flag and where it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flag {
    /// May be shown everywhere: no caption describes a child and a child detector cleared it.
    Clear = 0,
    /// A caption describes a child.
    Captions = 1,
    /// The child detector flagged it.
    Detector = 2,
    /// No caption and no detector could check it: restricted until one does (fail closed).
    Unverified = 3,
    /// A reviewer marked it as showing a child.
    Reviewed = 4,
    /// A reviewer cleared it (a detector's or an unverified flag lifted by an authenticated review).
    ReviewedClear = 5,
}

impl Flag {
    /// Every flag, in the order of their numbers.
    pub const ALL: [Flag; 6] = [Flag::Clear, Flag::Captions, Flag::Detector, Flag::Unverified, Flag::Reviewed, Flag::ReviewedClear];

    /// Whether a photo with this flag may not be shown in restricted regions.
    pub fn restricted(self) -> bool {
        !matches!(self, Flag::Clear | Flag::ReviewedClear)
    }

    /// A short name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Flag::Clear => "clear",
            Flag::Captions => "captions",
            Flag::Detector => "detector",
            Flag::Unverified => "unverified",
            Flag::Reviewed => "reviewed",
            Flag::ReviewedClear => "reviewed-clear",
        }
    }

    pub fn from_u8(b: u8) -> Option<Flag> {
        Some(match b {
            0 => Flag::Clear,
            1 => Flag::Captions,
            2 => Flag::Detector,
            3 => Flag::Unverified,
            4 => Flag::Reviewed,
            5 => Flag::ReviewedClear,
            _ => return None,
        })
    }
}

/// One change to the gallery.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// A photo stored (replacing one of the same id); `attributes` sorted by key, `added_ms`
    /// in Unix milliseconds.
    Put {
        id: String,
        sha256: [u8; 32],
        mime: String,
        captions: Vec<String>,
        flag: Flag,
        vector: Vec<f32>,
        attributes: Vec<(String, String)>,
        added_ms: i64,
    },
    Remove { id: String },
    SetFlag { id: String, flag: Flag },
    /// What is known of some bytes whatever id they are stored under: evidence that they show a
    /// child, or a reviewer's decision (`by` names the reviewer, `note` says why).
    Content { sha256: [u8; 32], flag: Flag, by: String, note: String },
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    }
    fn string(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        self.take(n).and_then(|b| String::from_utf8(b.to_vec()).ok())
    }
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Record::Put { id, sha256, mime, captions, flag, vector, attributes, added_ms } => {
                // Tag 5; tag 1 (the same without attributes and added time) is still read.
                out.push(5);
                put_str(&mut out, id);
                out.extend_from_slice(sha256);
                put_str(&mut out, mime);
                out.extend_from_slice(&(captions.len() as u32).to_le_bytes());
                for c in captions {
                    put_str(&mut out, c);
                }
                out.push(*flag as u8);
                out.extend_from_slice(&(vector.len() as u32).to_le_bytes());
                for x in vector {
                    out.extend_from_slice(&x.to_le_bytes());
                }
                out.extend_from_slice(&(attributes.len() as u32).to_le_bytes());
                for (k, v) in attributes {
                    put_str(&mut out, k);
                    put_str(&mut out, v);
                }
                out.extend_from_slice(&added_ms.to_le_bytes());
            }
            Record::Remove { id } => {
                out.push(2);
                put_str(&mut out, id);
            }
            Record::SetFlag { id, flag } => {
                out.push(3);
                put_str(&mut out, id);
                out.push(*flag as u8);
            }
            Record::Content { sha256, flag, by, note } => {
                out.push(4);
                out.extend_from_slice(sha256);
                out.push(*flag as u8);
                put_str(&mut out, by);
                put_str(&mut out, note);
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Record> {
        let mut r = Reader(bytes);
        let rec = match r.u8()? {
            tag @ (1 | 5) => {
                let id = r.string()?;
                let sha256: [u8; 32] = r.take(32)?.try_into().ok()?;
                let mime = r.string()?;
                let n = r.u32()? as usize;
                let captions = (0..n).map(|_| r.string()).collect::<Option<Vec<_>>>()?;
                let flag = Flag::from_u8(r.u8()?)?;
                let dim = r.u32()? as usize;
                let raw = r.take(dim.checked_mul(4)?)?;
                let vector = raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
                let (attributes, added_ms) = if tag == 5 {
                    let n = r.u32()? as usize;
                    let attributes = (0..n).map(|_| Some((r.string()?, r.string()?))).collect::<Option<Vec<_>>>()?;
                    (attributes, i64::from_le_bytes(r.take(8)?.try_into().ok()?))
                } else {
                    (Vec::new(), 0)
                };
                Record::Put { id, sha256, mime, captions, flag, vector, attributes, added_ms }
            }
            2 => Record::Remove { id: r.string()? },
            3 => Record::SetFlag { id: r.string()?, flag: Flag::from_u8(r.u8()?)? },
            4 => {
                let sha256: [u8; 32] = r.take(32)?.try_into().ok()?;
                let flag = Flag::from_u8(r.u8()?)?;
                Record::Content { sha256, flag, by: r.string()?, note: r.string()? }
            }
            _ => return None,
        };
        r.0.is_empty().then_some(rec)
    }
}

/// Frames a record: payload length, CRC-32 of the payload, payload.
pub fn frame(record: &Record) -> Vec<u8> {
    let payload = record.encode();
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Reads every intact record of a log; returns them and the length of the intact prefix.
pub fn replay(bytes: &[u8]) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= 8 {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap());
        let Some(payload) = bytes.get(at + 8..at + 8 + len) else { break };
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Some(rec) = Record::decode(payload) else { break };
        records.push(rec);
        at += 8 + len;
    }
    (records, at)
}

/// Whether an I/O error means the disk (or the user's quota) is full.
pub fn is_disk_full(e: &std::io::Error) -> bool {
    // ENOSPC = 28, EDQUOT = 122 on Linux; EFBIG (27) when a file-size limit is hit.
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || e.kind() == std::io::ErrorKind::FileTooLarge
        || matches!(e.raw_os_error(), Some(27 | 28 | 122))
}

/// An open log, appended to and synced.
pub struct Log {
    file: File,
    /// Length of the intact, synced prefix: everything acknowledged and nothing else.
    len: u64,
    /// A failed append could not be cut back: the file may end in a torn record.
    torn: bool,
}

impl Log {
    /// Opens (or creates) the log, replays it and cuts a torn tail. Returns the records and
    /// how many bytes were cut.
    pub fn open(path: &Path) -> std::io::Result<(Log, Vec<Record>, u64)> {
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (records, good) = replay(&bytes);
        let cut = (bytes.len() - good) as u64;
        if cut > 0 {
            file.set_len(good as u64)?;
            file.sync_all()?;
        }
        file.seek(SeekFrom::End(0))?;
        Ok((Log { file, len: good as u64, torn: false }, records, cut))
    }

    /// Appends records and syncs them to disk before returning. On failure the file is cut back
    /// to its last good record (see the module comment) and the error returned.
    pub fn append(&mut self, records: &[Record]) -> std::io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if self.torn {
            self.cut_back()?;
        }
        let mut buf = Vec::new();
        for r in records {
            buf.extend_from_slice(&frame(r));
        }
        let written = self.file.write_all(&buf).and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // A failed fsync may have dropped the written pages: the tail is unknown, cut it.
            self.torn = true;
            let _ = self.cut_back();
            return Err(e);
        }
        self.len += buf.len() as u64;
        Ok(())
    }

    /// Cuts the file back to the last good record and syncs the cut.
    fn cut_back(&mut self) -> std::io::Result<()> {
        self.file.set_len(self.len)?;
        self.file.sync_all()?;
        self.file.seek(SeekFrom::End(0))?;
        self.torn = false;
        Ok(())
    }

    /// Whether the log may end in a torn record that is not cut back yet.
    pub fn is_torn(&self) -> bool {
        self.torn
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// Replaces the log with exactly `records` (compaction): written beside, synced, renamed.
    pub fn rewrite(path: &Path, records: &[Record]) -> std::io::Result<Log> {
        let tmp = path.with_extension("compact");
        {
            let mut f = File::create(&tmp)?;
            for r in records {
                f.write_all(&frame(r))?;
            }
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        let (log, _, _) = Log::open(path)?;
        Ok(log)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(id: &str, flag: Flag) -> Record {
        Record::Put {
            id: id.into(),
            sha256: [7; 32],
            mime: "image/jpeg".into(),
            captions: vec!["a dog".into(), "ünïcödé".into()],
            flag,
            vector: vec![0.5, -1.25, 3.0],
            attributes: vec![("album".into(), "tōkyō".into()), ("owner".into(), String::new())],
            added_ms: 1_764_000_000_123,
        }
    }

    #[test]
    fn puts_of_the_first_format_still_replay() {
        // Tag 1: a Put as logs before attributes wrote it.
        let mut old = vec![1u8];
        put_str(&mut old, "a");
        old.extend_from_slice(&[7; 32]);
        put_str(&mut old, "image/png");
        old.extend_from_slice(&1u32.to_le_bytes());
        put_str(&mut old, "a cat");
        old.push(Flag::Clear as u8);
        old.extend_from_slice(&1u32.to_le_bytes());
        old.extend_from_slice(&2.5f32.to_le_bytes());
        let Some(Record::Put { captions, vector, attributes, added_ms, .. }) = Record::decode(&old) else { panic!("not read") };
        assert_eq!((captions, vector, attributes, added_ms), (vec!["a cat".to_string()], vec![2.5], vec![], 0));
    }

    #[test]
    fn records_round_trip() {
        let content = Record::Content { sha256: [9; 32], flag: Flag::ReviewedClear, by: "reviewer".into(), note: "no person".into() };
        for r in [put("a", Flag::Clear), Record::Remove { id: "a".into() }, Record::SetFlag { id: "b".into(), flag: Flag::Detector }, content] {
            assert_eq!(Record::decode(&r.encode()), Some(r));
        }
    }

    #[test]
    fn a_log_cut_anywhere_replays_to_a_prefix_of_its_records() {
        let records = vec![put("a", Flag::Clear), Record::SetFlag { id: "a".into(), flag: Flag::Unverified }, put("b", Flag::Captions), Record::Remove { id: "a".into() }];
        let bytes: Vec<u8> = records.iter().flat_map(frame).collect();
        for cut in 0..=bytes.len() {
            let (got, good) = replay(&bytes[..cut]);
            assert!(good <= cut);
            assert_eq!(got[..], records[..got.len()], "cut at {cut}");
        }
        assert_eq!(replay(&bytes).0, records);
        // A flipped bit ends the replay at that record.
        let mut bad = bytes.clone();
        let second = frame(&records[0]).len() + 10;
        bad[second] ^= 0x40;
        assert_eq!(replay(&bad).0, records[..1]);
    }

    #[test]
    fn open_cuts_a_torn_tail_and_appends_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        {
            let (mut log, recs, _) = Log::open(&path).unwrap();
            assert!(recs.is_empty());
            log.append(&[put("a", Flag::Clear), put("b", Flag::Clear)]).unwrap();
        }
        // A crash in the middle of a third append.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&frame(&put("c", Flag::Clear))[..20]).unwrap();
        drop(f);
        let (mut log, recs, cut) = Log::open(&path).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(cut, 20);
        log.append(&[Record::Remove { id: "a".into() }]).unwrap();
        drop(log);
        let (_, recs, cut) = Log::open(&path).unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(cut, 0);
    }
}
