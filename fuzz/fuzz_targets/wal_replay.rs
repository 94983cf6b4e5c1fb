//! The gallery's write-ahead log (the server's `wal.rs`, compiled here without libtorch): replay
//! of any bytes never panics and always yields a prefix — replaying the bytes it kept gives the
//! same records, and those records framed again replay as themselves — and every record
//! survives encode/decode.
#![no_main]

#[path = "../../server/src/wal.rs"]
#[allow(dead_code)]
mod wal;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (records, good) = wal::replay(data);
    assert!(good <= data.len());
    // Compared as encodings: a vector may hold NaNs, and a Put of the first format (tag 1) is
    // written again in the current one.
    let encoded = |rs: &[wal::Record]| rs.iter().map(wal::Record::encode).collect::<Vec<_>>();
    let (kept, n) = wal::replay(&data[..good]);
    assert_eq!((n, encoded(&kept)), (good, encoded(&records)), "replay is not a prefix of the log");
    let reframed: Vec<u8> = records.iter().flat_map(wal::frame).collect();
    let (again, m) = wal::replay(&reframed);
    assert_eq!((m, encoded(&again)), (reframed.len(), encoded(&records)), "framed records do not replay as themselves");
    for r in &records {
        // Compared as bytes: a vector may hold NaNs.
        assert_eq!(wal::Record::decode(&r.encode()).map(|d| d.encode()), Some(r.encode()));
    }
    // A payload without its frame decodes to at most one record and never panics.
    let _ = wal::Record::decode(data);
});
