//! The CPU kernels' per-shape caches and their bounds.
//!
//! On a CPU, libtorch runs convolutions and bf16 matrix products through oneDNN, which keeps
//! what it built for each input shape it meets in two least-recently-used caches, 1,024 entries
//! each by default: ideep's (`LRU_CACHE_CAPACITY`), whose entries hold the weights reordered for
//! that shape, and oneDNN's own primitive cache (`ONEDNN_PRIMITIVE_CACHE_CAPACITY`), whose
//! entries hold the compiled kernels. A text encoder meets a new shape for every batch size ×
//! token length, so in bf16 ideep's cache grows the process by gigabytes (measured in the
//! server: 0.86 → 2.03 GB in 90 s of Search, still rising), while the kernels are what a pass
//! would otherwise rebuild (bounding both at 256 cost ~8% of throughput; ideep's alone, nothing
//! measurable). Both are read at their first use, so the bounds are set in the environment
//! before libtorch runs anything.

/// How many entries each of libtorch's CPU kernel caches may hold (0 = libtorch's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelCaches {
    /// ideep's cache of weights reordered per input shape (`LRU_CACHE_CAPACITY`).
    pub weights: usize,
    /// oneDNN's cache of compiled kernels per input shape (`ONEDNN_PRIMITIVE_CACHE_CAPACITY`).
    pub primitives: usize,
}

impl KernelCaches {
    /// The serving defaults: weights bounded at 256 entries (the memory), kernels at libtorch's
    /// 1,024 (the speed).
    pub const SERVING: KernelCaches = KernelCaches { weights: 256, primitives: 1024 };

    /// The settings that apply these bounds, leaving a variable the operator already set
    /// (`is_set`) as it is: `(name, value)` pairs to write. A bound of 0 writes nothing (an ideep
    /// capacity of 0 crashes libtorch).
    pub fn settings(self, is_set: impl Fn(&str) -> bool) -> Vec<(&'static str, String)> {
        [("LRU_CACHE_CAPACITY", self.weights), ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", self.primitives)]
            .into_iter()
            .filter(|(name, n)| *n > 0 && !is_set(name))
            .map(|(name, n)| (name, n.to_string()))
            .collect()
    }

    /// Applies [`KernelCaches::settings`] to this process's environment and returns what it
    /// set. Call it first in `main`: before any other thread exists (it writes the environment)
    /// and before libtorch's first operation.
    pub fn apply(self) -> Vec<(&'static str, String)> {
        let settings = self.settings(|name| std::env::var_os(name).is_some());
        for (name, value) in &settings {
            std::env::set_var(name, value);
        }
        settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cache_is_bounded_unless_the_operator_sized_it() {
        let caches = KernelCaches { weights: 256, primitives: 1024 };
        assert_eq!(
            caches.settings(|_| false),
            vec![("LRU_CACHE_CAPACITY", "256".to_string()), ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "1024".to_string())]
        );
        let one_set = caches.settings(|n| n == "LRU_CACHE_CAPACITY");
        assert_eq!(one_set, vec![("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "1024".to_string())]);
        let defaults = KernelCaches { weights: 0, primitives: 0 };
        assert!(defaults.settings(|_| false).is_empty(), "0 keeps libtorch's defaults and never writes a 0");
    }
}
