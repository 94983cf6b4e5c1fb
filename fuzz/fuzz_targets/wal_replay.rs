//! The gallery's write-ahead log (the server's `wal.rs`, compiled here without libtorch): replay
//! of any bytes never panics and always yields a prefix — the records it returns, framed
//! again, are exactly the bytes it kept — and every record survives encode/decode.
#![no_main]

#[path = "../../server/src/wal.rs"]
#[allow(dead_code)]
mod wal;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (records, good) = wal::replay(data);
    assert!(good <= data.len());
    let reframed: Vec<u8> = records.iter().flat_map(wal::frame).collect();
    assert_eq!(&reframed[..], &data[..good], "replay is not a prefix of the log");
    for r in &records {
        // Compared as bytes: a vector may hold NaNs.
        assert_eq!(wal::Record::decode(&r.encode()).map(|d| d.encode()), Some(r.encode()));
    }
    // A payload without its frame decodes to at most one record and never panics.
    let _ = wal::Record::decode(data);
});
