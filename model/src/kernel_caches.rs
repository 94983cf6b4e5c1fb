//! The CPU kernels' per-shape caches and their bound.
//!
//! On a CPU, libtorch runs convolutions and bf16 matrix products through oneDNN, which keeps a
//! compiled primitive (with its weights reordered for it) for each input shape it meets, in two
//! least-recently-used caches: oneDNN's own (`ONEDNN_PRIMITIVE_CACHE_CAPACITY`) and ideep's in
//! front of it (`LRU_CACHE_CAPACITY`), 1,024 entries each by default. A text encoder sees a new
//! shape for every batch size × token length, so in bf16 those caches grow to gigabytes (measured:
//! MiniLM in bf16 over 296 shapes, 567 → 1,276 MB; with both at 64, 567 → 621 MB, at no
//! measurable cost per pass). Both are read at their first use, so the bound is set in the
//! environment before libtorch runs anything.

/// The environment variables that size oneDNN's caches in libtorch, in entries.
pub const KERNEL_CACHE_VARS: [&str; 2] = ["ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"];

/// The settings that bound both caches at `capacity` entries, leaving a variable the operator
/// already set as it is: `(name, value)` pairs to apply. `capacity` 0 keeps libtorch's defaults
/// (an ideep capacity of 0 crashes libtorch, so 0 is never written).
pub fn kernel_cache_settings(capacity: usize, current: impl Fn(&str) -> Option<String>) -> Vec<(&'static str, String)> {
    if capacity == 0 {
        return Vec::new();
    }
    KERNEL_CACHE_VARS
        .into_iter()
        .filter(|name| current(name).is_none())
        .map(|name| (name, capacity.to_string()))
        .collect()
}

/// Bounds this process's kernel caches at `capacity` entries each (see
/// [`kernel_cache_settings`]) and returns what it set. Call it first in `main`: before any other
/// thread exists (it writes the environment) and before libtorch's first operation.
pub fn bound_kernel_caches(capacity: usize) -> Vec<(&'static str, String)> {
    let settings = kernel_cache_settings(capacity, |name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()));
    for (name, value) in &settings {
        std::env::set_var(name, value);
    }
    settings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_caches_are_bounded_unless_the_operator_sized_them() {
        let unset = kernel_cache_settings(64, |_| None);
        assert_eq!(unset, vec![("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64".to_string()), ("LRU_CACHE_CAPACITY", "64".to_string())]);
        let one_set = kernel_cache_settings(64, |n| (n == "LRU_CACHE_CAPACITY").then(|| "2048".to_string()));
        assert_eq!(one_set, vec![("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64".to_string())]);
        assert!(kernel_cache_settings(0, |_| None).is_empty(), "0 keeps libtorch's defaults and never writes a 0");
    }
}
