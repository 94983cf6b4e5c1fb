//! The law's text path: normalisation and the child lexicon never panic, normalising is
//! idempotent, the lexicon judges a text exactly as it judges what the model reads (its
//! normalised form), and quoting untrusted text stays bounded and printable.
#![no_main]

use imagesearch_compliance::{describes_child, normalize, quote};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let model_reads = normalize(&text);
    assert_eq!(normalize(&model_reads), model_reads, "normalize is not idempotent");
    let verdict = describes_child(&text).is_some();
    assert_eq!(verdict, describes_child(&model_reads).is_some(), "the law and the model read different texts");
    let quoted = quote(&text, 64);
    assert!(quoted.len() <= 64 * 10 + 40, "quote grew to {} bytes", quoted.len());
    assert!(!quoted.chars().any(|c| c.is_control()), "quote let a control character through");
});
