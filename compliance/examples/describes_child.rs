//! Reads texts, one per line, from stdin and writes `1` (describes a child under the law's word
//! list) or `0` per line to stdout: the labels the trainer's detectors learn from, for probes
//! outside Rust (`bench/probes/lite2_detector.py`).
//!
//! `cargo run -q -p imagesearch-compliance --example describes_child < texts.txt`

use std::io::{self, BufRead, BufWriter, Write};

fn main() -> io::Result<()> {
    let mut out = BufWriter::new(io::stdout().lock());
    for line in io::stdin().lock().lines() {
        let child = imagesearch_compliance::describes_child(&line?).is_some();
        writeln!(out, "{}", u8::from(child))?;
    }
    out.flush()
}
