//! A bounded weight cache holds the memory of a bf16 text encoder that meets many input shapes
//! (unbounded, oneDNN keeps reordered weights and kernels for every batch × length: measured
//! +689 MB over 296 shapes). One test in its own process: the bounds must be set before
//! libtorch's first operation.

use std::path::PathBuf;

use imagesearch_model::encoder::cpu_has_native_bf16;
use imagesearch_model::kernel_caches::KernelCaches;
use imagesearch_model::{EncoderFile, TextEncoder};
use tch::Device;

fn rss_mb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    kb / 1024
}

/// `n` texts of `words` words each (distinct words, so every text has about `words` tokens).
fn texts(n: usize, words: usize) -> Vec<String> {
    (0..n).map(|i| (0..words).map(|w| ["dog", "beach", "red", "kite", "runs", "over", "grass", "sunny"][(i + w) % 8]).collect::<Vec<_>>().join(" ")).collect()
}

#[test]
fn bounded_kernel_caches_keep_a_bf16_text_encoder_flat_over_many_shapes() {
    let set = KernelCaches { weights: 64, primitives: 64 }.apply();
    assert_eq!(set.len(), 2, "neither cache variable may be set for this test");
    if !cpu_has_native_bf16() {
        eprintln!("skipped: this CPU has no native bf16, where the bf16 text file is not served");
        return;
    }
    let dir = PathBuf::from(std::env::var_os("IMAGESEARCH_ENCODERS").expect("IMAGESEARCH_ENCODERS (scripts/setup.sh sets it)"));
    let encoder = TextEncoder::load_file(&dir.join("minilm-l6-v2"), Device::Cpu, EncoderFile::ServingBf16).unwrap();
    let _guard = tch::no_grad_guard();
    let run = |batch: usize, words: usize| {
        let owned = texts(batch, words);
        let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
        let _vectors = encoder.encode(&refs).unwrap();
    };
    // Warm-up at a few shapes, then ~300 distinct batch × length shapes.
    for words in [4, 8] {
        run(1, words);
    }
    let before = rss_mb();
    for batch in 1..=8 {
        for words in 3..40 {
            run(batch, words);
        }
    }
    let grown = rss_mb().saturating_sub(before);
    assert!(grown < 250, "RSS grew by {grown} MB over 296 shapes with both caches bounded at 64 entries");
}
