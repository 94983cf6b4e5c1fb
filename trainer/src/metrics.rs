//! Evaluation statistics for the trainer: rank correlations (Kendall τb and
//! Stuart's τc, both O(n log n)), the cluster bootstrap used for confidence
//! intervals, retrieval metrics (recall@k, MRR, ranks) with their chance
//! levels, and small numeric helpers (mean, RMSE, histogram).
//!
//! Everything here is pure and deterministic: no I/O, and the bootstrap is
//! seeded.

use std::collections::HashMap;
use std::hash::Hash;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------
// Kendall rank correlation
// ---------------------------------------------------------------------------

/// Pair counts behind Kendall's τ, computed with Knight's algorithm.
#[derive(Debug, Clone, Copy, PartialEq)]
struct KendallCounts {
    /// Number of observations.
    n: usize,
    /// All pairs, n(n−1)/2.
    n0: u64,
    /// Pairs tied in x (including those also tied in y).
    n1: u64,
    /// Pairs tied in y (including those also tied in x).
    n2: u64,
    /// Pairs tied in both x and y.
    n3: u64,
    /// Discordant pairs.
    discordant: u64,
    /// Number of distinct x values.
    distinct_x: usize,
    /// Number of distinct y values.
    distinct_y: usize,
}

impl KendallCounts {
    /// Concordant minus discordant pairs.
    fn s(&self) -> i64 {
        // nc + nd = n0 − n1 − n2 + n3, and nd = discordant.
        self.n0 as i64 - self.n1 as i64 - self.n2 as i64 + self.n3 as i64
            - 2 * self.discordant as i64
    }
}

/// Number of pairs among `t` tied items.
#[inline]
fn pairs(t: u64) -> u64 {
    t * t.saturating_sub(1) / 2
}

/// Counts pairs for Kendall's τ in O(n log n): sort by (x, y), count ties in
/// x and joint ties in one pass, then count discordant pairs as the strict
/// inversions of the y sequence with a merge sort, which also leaves y sorted
/// for counting its ties. Returns `None` for mismatched lengths, n < 2 or
/// any NaN.
fn kendall_counts(x: &[f64], y: &[f64]) -> Option<KendallCounts> {
    let n = x.len();
    if n != y.len() || n < 2 || x.iter().chain(y).any(|v| v.is_nan()) {
        return None;
    }
    // Pack each pair into one integer key ordered like (x, y), so the sort
    // is a plain integer sort and ties are integer equality.
    let mut keys: Vec<u128> = x
        .iter()
        .zip(y)
        .map(|(&a, &b)| (u128::from(order_key(a)) << 64) | u128::from(order_key(b)))
        .collect();
    keys.sort_unstable();

    let (mut n1, mut n3) = (0u64, 0u64);
    let mut distinct_x = 1usize;
    let (mut run_x, mut run_xy) = (1u64, 1u64);
    for w in keys.windows(2) {
        if w[0] == w[1] {
            run_x += 1;
            run_xy += 1;
        } else if w[0] >> 64 == w[1] >> 64 {
            run_x += 1;
            n3 += pairs(run_xy);
            run_xy = 1;
        } else {
            distinct_x += 1;
            n1 += pairs(run_x);
            n3 += pairs(run_xy);
            run_x = 1;
            run_xy = 1;
        }
    }
    n1 += pairs(run_x);
    n3 += pairs(run_xy);

    let mut ys: Vec<u64> = keys.iter().map(|&k| k as u64).collect();
    drop(keys);
    let discordant = sort_counting_inversions(&mut ys);

    let mut n2 = 0u64;
    let mut distinct_y = 1usize;
    let mut run_y = 1u64;
    for w in ys.windows(2) {
        if w[0] == w[1] {
            run_y += 1;
        } else {
            distinct_y += 1;
            n2 += pairs(run_y);
            run_y = 1;
        }
    }
    n2 += pairs(run_y);

    Some(KendallCounts {
        n,
        n0: pairs(n as u64),
        n1,
        n2,
        n3,
        discordant,
        distinct_x,
        distinct_y,
    })
}

/// Maps a non-NaN f64 to a u64 with the same order; −0.0 and +0.0 map to
/// the same key.
#[inline]
fn order_key(v: f64) -> u64 {
    let bits = (v + 0.0).to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

/// Sorts `v` ascending (stable bottom-up merge sort, insertion sort for short
/// runs) and returns the number of pairs i < j with v[i] > v[j] strictly.
fn sort_counting_inversions<T: Copy + PartialOrd + Default>(v: &mut [T]) -> u64 {
    const RUN: usize = 32;
    let n = v.len();
    let mut inversions = 0u64;

    for chunk in v.chunks_mut(RUN) {
        for i in 1..chunk.len() {
            let val = chunk[i];
            let mut j = i;
            while j > 0 && chunk[j - 1] > val {
                chunk[j] = chunk[j - 1];
                j -= 1;
            }
            chunk[j] = val;
            inversions += (i - j) as u64;
        }
    }
    if n <= RUN {
        return inversions;
    }

    let mut buf = vec![T::default(); n];
    let mut in_v = true; // whether the current sorted runs live in `v`
    let mut width = RUN;
    while width < n {
        let (src, dst): (&[T], &mut [T]) = if in_v {
            (&*v, &mut buf[..])
        } else {
            (&buf[..], &mut *v)
        };
        let mut lo = 0;
        while lo < n {
            let mid = (lo + width).min(n);
            let hi = (lo + 2 * width).min(n);
            let (mut i, mut j, mut k) = (lo, mid, lo);
            while i < mid && j < hi {
                if src[j] < src[i] {
                    dst[k] = src[j];
                    j += 1;
                    inversions += (mid - i) as u64;
                } else {
                    dst[k] = src[i];
                    i += 1;
                }
                k += 1;
            }
            dst[k..k + (mid - i)].copy_from_slice(&src[i..mid]);
            k += mid - i;
            dst[k..hi].copy_from_slice(&src[j..hi]);
            lo = hi;
        }
        in_v = !in_v;
        width *= 2;
    }
    if !in_v {
        v.copy_from_slice(&buf);
    }
    inversions
}

/// Kendall's τb rank correlation between `x` and `y`, adjusted for ties in
/// either variable. O(n log n).
///
/// Returns `None` when it is undefined: lengths differ, fewer than two
/// observations, a NaN anywhere, or either side constant.
pub fn kendall_tau_b(x: &[f64], y: &[f64]) -> Option<f64> {
    let c = kendall_counts(x, y)?;
    let denom = ((c.n0 - c.n1) as f64) * ((c.n0 - c.n2) as f64);
    if denom <= 0.0 {
        return None;
    }
    Some(c.s() as f64 / denom.sqrt())
}

/// Stuart's τc rank correlation, 2m(nc − nd) / (n²(m − 1)) with
/// m = min(#distinct x, #distinct y); suited to rectangular contingency
/// tables such as a continuous score against a few rating levels. O(n log n).
///
/// Returns `None` when it is undefined: lengths differ, fewer than two
/// observations, a NaN anywhere, or either side constant.
pub fn kendall_tau_c(x: &[f64], y: &[f64]) -> Option<f64> {
    let c = kendall_counts(x, y)?;
    let m = c.distinct_x.min(c.distinct_y) as f64;
    if m < 2.0 {
        return None;
    }
    let n = c.n as f64;
    Some(2.0 * m * c.s() as f64 / (n * n * (m - 1.0)))
}

// ---------------------------------------------------------------------------
// Cluster bootstrap
// ---------------------------------------------------------------------------

/// A point estimate with a 95% confidence interval.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    /// The statistic on the full data.
    pub estimate: f64,
    /// 2.5th percentile of the bootstrap distribution.
    pub lo: f64,
    /// 97.5th percentile of the bootstrap distribution.
    pub hi: f64,
}

/// Wilson score 95% interval of a proportion `successes / n` (None when `n` is 0). Unlike the
/// normal approximation it stays inside [0, 1] and is not empty at 0 or n successes, where a
/// detector's recall on a few dozen positives often lands.
pub fn wilson(successes: usize, n: usize) -> Option<Interval> {
    if n == 0 {
        return None;
    }
    let (z, n_f) = (1.959_964, n as f64);
    let p = successes as f64 / n_f;
    let denom = 1.0 + z * z / n_f;
    let centre = (p + z * z / (2.0 * n_f)) / denom;
    let half = z * (p * (1.0 - p) / n_f + z * z / (4.0 * n_f * n_f)).sqrt() / denom;
    Some(Interval { estimate: p, lo: (centre - half).max(0.0), hi: (centre + half).min(1.0) })
}

/// Cluster (block) bootstrap with a 95% percentile interval.
///
/// Each replicate draws `clusters.len()` clusters uniformly with replacement,
/// concatenates their item indices and evaluates `statistic` on them, so
/// correlated items (e.g. all ratings of one photo) are resampled together.
/// The estimate is `statistic` on all items (the clusters concatenated in
/// order). Replicates on which the statistic is undefined (`None` or NaN) are
/// skipped. Deterministic for a given `seed` (ChaCha8).
///
/// Returns `None` when there are no clusters, the statistic is undefined on
/// the full data, or no replicate produced a value (including `reps == 0`).
pub fn bootstrap<F: Fn(&[usize]) -> Option<f64>>(
    clusters: &[Vec<usize>],
    reps: usize,
    seed: u64,
    statistic: F,
) -> Option<Interval> {
    if clusters.is_empty() {
        return None;
    }
    let all: Vec<usize> = clusters.iter().flatten().copied().collect();
    let estimate = statistic(&all).filter(|v| !v.is_nan())?;

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let k = clusters.len() as u64;
    let mut sample: Vec<usize> = Vec::with_capacity(all.len());
    let mut values: Vec<f64> = Vec::with_capacity(reps);
    for _ in 0..reps {
        sample.clear();
        for _ in 0..k {
            let c = rng.gen_range(0..k) as usize;
            sample.extend_from_slice(&clusters[c]);
        }
        if let Some(v) = statistic(&sample) {
            if !v.is_nan() {
                values.push(v);
            }
        }
    }
    if values.is_empty() {
        return None;
    }
    values.sort_unstable_by(f64::total_cmp);
    Some(Interval {
        estimate,
        lo: quantile_sorted(&values, 0.025),
        hi: quantile_sorted(&values, 0.975),
    })
}

/// Linear-interpolation quantile (Hyndman–Fan type 7) of sorted, non-empty data.
fn quantile_sorted(sorted: &[f64], p: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * p.clamp(0.0, 1.0);
    let i = h.floor() as usize;
    if i + 1 >= sorted.len() {
        return sorted[sorted.len() - 1];
    }
    sorted[i] + (h - i as f64) * (sorted[i + 1] - sorted[i])
}

/// Groups item indices by key: one cluster per distinct key, clusters in
/// order of first appearance, indices ascending within a cluster.
pub fn clusters_by<K: Hash + Eq>(keys: &[K]) -> Vec<Vec<usize>> {
    let mut slot: HashMap<&K, usize> = HashMap::new();
    let mut clusters: Vec<Vec<usize>> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let c = *slot.entry(key).or_insert_with(|| {
            clusters.push(Vec::new());
            clusters.len() - 1
        });
        clusters[c].push(i);
    }
    clusters
}

// ---------------------------------------------------------------------------
// Retrieval
// ---------------------------------------------------------------------------

/// 1-based rank of `scores[relevant]` among `scores` (higher is better).
///
/// Pessimistic on ties: every other candidate with an equal score counts as
/// ranked above it. NaN scores rank last: other NaN candidates never outrank
/// a real score, and a NaN `relevant` score gets rank `scores.len()`.
///
/// # Panics
/// If `relevant` is out of bounds.
pub fn rank_of(scores: &[f32], relevant: usize) -> usize {
    let target = scores[relevant];
    if target.is_nan() {
        return scores.len();
    }
    1 + scores
        .iter()
        .enumerate()
        .filter(|&(i, &s)| i != relevant && s >= target)
        .count()
}

/// Retrieval quality over a set of queries, each with one relevant item.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Retrieval {
    /// Number of queries.
    pub queries: usize,
    /// Number of candidates each query ranks.
    pub candidates: usize,
    /// Fraction of queries whose relevant item ranks first.
    pub r_at_1: f64,
    /// Fraction of queries whose relevant item ranks in the top 5.
    pub r_at_5: f64,
    /// Fraction of queries whose relevant item ranks in the top 10.
    pub r_at_10: f64,
    /// Mean reciprocal rank.
    pub mrr: f64,
    /// Median rank (mean of the two middle ranks for an even count).
    pub median_rank: f64,
    /// Mean rank.
    pub mean_rank: f64,
}

/// Summarises 1-based ranks (one per query) into retrieval metrics. With no
/// queries every rate and rank is NaN.
pub fn retrieval(ranks: &[usize], candidates: usize) -> Retrieval {
    let q = ranks.len();
    let frac = |k: usize| {
        if q == 0 {
            f64::NAN
        } else {
            ranks.iter().filter(|&&r| r <= k).count() as f64 / q as f64
        }
    };
    let as_f64: Vec<f64> = ranks.iter().map(|&r| r as f64).collect();
    let mut sorted = as_f64.clone();
    sorted.sort_unstable_by(f64::total_cmp);
    let median_rank = if q == 0 {
        f64::NAN
    } else {
        quantile_sorted(&sorted, 0.5)
    };
    Retrieval {
        queries: q,
        candidates,
        r_at_1: frac(1),
        r_at_5: frac(5),
        r_at_10: frac(10),
        mrr: mean(&as_f64.iter().map(|r| 1.0 / r).collect::<Vec<_>>()),
        median_rank,
        mean_rank: mean(&as_f64),
    }
}

/// Expected retrieval metrics under a uniformly random ranking of
/// `candidates` items: R@k = min(k, N)/N, MRR = H_N/N, median and mean rank
/// (N + 1)/2. With no candidates every rate and rank is NaN.
pub fn chance_retrieval(queries: usize, candidates: usize) -> Retrieval {
    let n = candidates as f64;
    let nan_if_empty = |v: f64| if candidates == 0 { f64::NAN } else { v };
    let r_at = |k: usize| nan_if_empty(k.min(candidates) as f64 / n);
    let harmonic: f64 = (1..=candidates).map(|i| 1.0 / i as f64).sum();
    Retrieval {
        queries,
        candidates,
        r_at_1: r_at(1),
        r_at_5: r_at(5),
        r_at_10: r_at(10),
        mrr: nan_if_empty(harmonic / n),
        median_rank: nan_if_empty((n + 1.0) / 2.0),
        mean_rank: nan_if_empty((n + 1.0) / 2.0),
    }
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

/// Root-mean-square error between `pred` and `target`; NaN when empty.
///
/// # Panics
/// If the lengths differ.
pub fn rmse(pred: &[f64], target: &[f64]) -> f64 {
    assert_eq!(pred.len(), target.len(), "rmse: length mismatch");
    if pred.is_empty() {
        return f64::NAN;
    }
    let sse: f64 = pred
        .iter()
        .zip(target)
        .map(|(p, t)| (p - t) * (p - t))
        .sum();
    (sse / pred.len() as f64).sqrt()
}

/// Arithmetic mean; NaN when empty.
pub fn mean(x: &[f64]) -> f64 {
    if x.is_empty() {
        return f64::NAN;
    }
    x.iter().sum::<f64>() / x.len() as f64
}

/// Counts `values` into `bins` equal-width bins over [lo, hi]. Bins are
/// half-open except the last, which includes `hi`; values outside the range
/// and NaN are ignored. All counts are zero when `hi <= lo` (or either bound
/// is not finite).
pub fn histogram(values: &[f64], lo: f64, hi: f64, bins: usize) -> Vec<usize> {
    let mut counts = vec![0usize; bins];
    if bins == 0 || !(lo.is_finite() && hi.is_finite() && hi > lo) {
        return counts;
    }
    let width = (hi - lo) / bins as f64;
    for &v in values {
        if !(v >= lo && v <= hi) {
            continue;
        }
        let b = (((v - lo) / width) as usize).min(bins - 1);
        counts[b] += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    /// O(n²) reference: (nc − nd, ties in x, ties in y, n0).
    fn brute_counts(x: &[f64], y: &[f64]) -> (i64, u64, u64, u64) {
        let n = x.len();
        let (mut s, mut tx, mut ty) = (0i64, 0u64, 0u64);
        for i in 0..n {
            for j in i + 1..n {
                let dx = x[i] - x[j];
                let dy = y[i] - y[j];
                if dx == 0.0 {
                    tx += 1;
                }
                if dy == 0.0 {
                    ty += 1;
                }
                if dx * dy > 0.0 {
                    s += 1;
                } else if dx * dy < 0.0 {
                    s -= 1;
                }
            }
        }
        (s, tx, ty, (n * (n - 1) / 2) as u64)
    }

    fn brute_tau_b(x: &[f64], y: &[f64]) -> Option<f64> {
        if x.len() < 2 {
            return None;
        }
        let (s, tx, ty, n0) = brute_counts(x, y);
        let d = ((n0 - tx) as f64 * (n0 - ty) as f64).sqrt();
        (d > 0.0).then(|| s as f64 / d)
    }

    fn brute_tau_c(x: &[f64], y: &[f64]) -> Option<f64> {
        if x.len() < 2 {
            return None;
        }
        let distinct = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            v.dedup();
            v.len()
        };
        let m = distinct(x).min(distinct(y)) as f64;
        if m < 2.0 {
            return None;
        }
        let (s, ..) = brute_counts(x, y);
        let n = x.len() as f64;
        Some(2.0 * m * s as f64 / (n * n * (m - 1.0)))
    }

    #[test]
    fn tau_scipy_examples() {
        let x = [12.0, 2.0, 1.0, 12.0, 2.0];
        let y = [1.0, 4.0, 7.0, 1.0, 0.0];
        assert!(close(
            kendall_tau_b(&x, &y).unwrap(),
            -0.47140452079103173,
            1e-15
        ));
        assert!(close(kendall_tau_c(&x, &y).unwrap(), -0.48, 1e-15));
    }

    #[test]
    fn tau_perfect_and_reversed() {
        let x: Vec<f64> = (0..100).map(f64::from).collect();
        let rev: Vec<f64> = x.iter().rev().copied().collect();
        assert!(close(kendall_tau_b(&x, &x).unwrap(), 1.0, 1e-12));
        assert!(close(kendall_tau_b(&x, &rev).unwrap(), -1.0, 1e-12));
        // τc with m = n reaches ±1 only asymptotically: 2n·s/(n²(n−1)) = 1 here.
        assert!(close(kendall_tau_c(&x, &x).unwrap(), 1.0, 1e-12));
    }

    #[test]
    fn tau_undefined_cases() {
        assert_eq!(kendall_tau_b(&[], &[]), None);
        assert_eq!(kendall_tau_b(&[1.0], &[2.0]), None);
        assert_eq!(kendall_tau_b(&[1.0, 2.0], &[1.0]), None);
        assert_eq!(kendall_tau_b(&[1.0, 2.0, 3.0], &[5.0, 5.0, 5.0]), None);
        assert_eq!(kendall_tau_c(&[4.0, 4.0, 4.0], &[1.0, 2.0, 3.0]), None);
        assert_eq!(kendall_tau_b(&[1.0, f64::NAN], &[1.0, 2.0]), None);
        // Signed zeros are the same value.
        assert_eq!(kendall_tau_b(&[0.0, -0.0], &[1.0, 2.0]), None);
    }

    #[test]
    fn tau_matches_brute_force_with_ties() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for trial in 0..300 {
            let n = match trial % 4 {
                0 => rng.gen_range(0..8),
                1 => rng.gen_range(8..40),
                2 => rng.gen_range(40..200),
                _ => rng.gen_range(200..700),
            };
            let x_levels = [2, 3, 10, 1000][(trial % 4) ^ ((trial / 4) % 4)];
            let x: Vec<f64> = (0..n)
                .map(|_| (rng.gen_range(0..x_levels) - x_levels / 2) as f64 * 0.5)
                .collect();
            let y: Vec<f64> = (0..n).map(|_| rng.gen_range(1..=4) as f64).collect();
            for (a, b) in [(&x, &y), (&y, &x)] {
                match (kendall_tau_b(a, b), brute_tau_b(a, b)) {
                    (Some(f), Some(r)) => assert!(close(f, r, 1e-12), "τb {f} vs {r} (n={n})"),
                    (f, r) => assert_eq!(f, r, "τb n={n}"),
                }
                match (kendall_tau_c(a, b), brute_tau_c(a, b)) {
                    (Some(f), Some(r)) => assert!(close(f, r, 1e-12), "τc {f} vs {r} (n={n})"),
                    (f, r) => assert_eq!(f, r, "τc n={n}"),
                }
            }
        }
    }

    #[test]
    fn order_key_preserves_order() {
        let v = [
            f64::NEG_INFINITY,
            -1e300,
            -2.5,
            -1e-300,
            0.0,
            1e-300,
            3.0,
            1e300,
            f64::INFINITY,
        ];
        for w in v.windows(2) {
            assert!(order_key(w[0]) < order_key(w[1]), "{} < {}", w[0], w[1]);
        }
        assert_eq!(order_key(-0.0), order_key(0.0));
    }

    #[test]
    fn inversion_count_matches_brute_force() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for n in [0usize, 1, 2, 31, 32, 33, 64, 65, 100, 257, 1000] {
            let v: Vec<f64> = (0..n).map(|_| rng.gen_range(0..20) as f64).collect();
            let mut brute = 0u64;
            for i in 0..n {
                for j in i + 1..n {
                    brute += (v[i] > v[j]) as u64;
                }
            }
            let mut s = v.clone();
            assert_eq!(sort_counting_inversions(&mut s), brute, "n={n}");
            let mut expect = v.clone();
            expect.sort_by(f64::total_cmp);
            assert_eq!(s, expect);
        }
    }

    #[test]
    fn bootstrap_is_deterministic_and_brackets_estimate() {
        let values: Vec<f64> = (0..200).map(|i| ((i * 37) % 101) as f64).collect();
        let keys: Vec<usize> = (0..200).map(|i| i / 4).collect();
        let clusters = clusters_by(&keys);
        let stat = |idx: &[usize]| Some(mean(&idx.iter().map(|&i| values[i]).collect::<Vec<_>>()));
        let a = bootstrap(&clusters, 500, 42, stat).unwrap();
        let b = bootstrap(&clusters, 500, 42, stat).unwrap();
        let c = bootstrap(&clusters, 500, 43, stat).unwrap();
        assert_eq!(a, b);
        assert_ne!((a.lo, a.hi), (c.lo, c.hi));
        assert!(close(a.estimate, mean(&values), 1e-12));
        assert!(a.lo < a.estimate && a.estimate < a.hi, "{a:?}");
    }

    #[test]
    fn bootstrap_resamples_whole_clusters() {
        // Cluster c holds items 3c, 3c+1, 3c+2: every replicate must contain
        // whole, contiguous triples.
        let clusters: Vec<Vec<usize>> =
            (0..20).map(|c| vec![3 * c, 3 * c + 1, 3 * c + 2]).collect();
        let r = bootstrap(&clusters, 50, 1, |idx| {
            assert_eq!(idx.len(), 60);
            for t in idx.chunks(3) {
                assert_eq!(t[0] % 3, 0);
                assert_eq!((t[1], t[2]), (t[0] + 1, t[0] + 2));
            }
            Some(idx.len() as f64)
        })
        .unwrap();
        assert_eq!(
            r,
            Interval {
                estimate: 60.0,
                lo: 60.0,
                hi: 60.0
            }
        );
    }

    #[test]
    fn bootstrap_undefined_cases() {
        let clusters = vec![vec![0], vec![1]];
        assert_eq!(bootstrap(&[], 10, 0, |_| Some(1.0)), None);
        assert_eq!(bootstrap(&clusters, 10, 0, |_| None), None);
        assert_eq!(bootstrap(&clusters, 0, 0, |_| Some(1.0)), None);
        // Undefined replicates are skipped, not fatal.
        let r = bootstrap(&clusters, 100, 0, |idx| (idx != [0, 0]).then_some(2.0)).unwrap();
        assert_eq!(r.estimate, 2.0);
    }

    #[test]
    fn clusters_by_groups_in_first_appearance_order() {
        let keys = ["b", "a", "b", "c", "a"];
        assert_eq!(clusters_by(&keys), vec![vec![0, 2], vec![1, 4], vec![3]]);
        assert!(clusters_by::<u8>(&[]).is_empty());
    }

    #[test]
    fn rank_of_is_pessimistic_and_sinks_nan() {
        let s = [0.5f32, 0.9, 0.5, 0.1, f32::NAN];
        assert_eq!(rank_of(&s, 1), 1);
        assert_eq!(rank_of(&s, 0), 3); // tied with item 2, which counts against it
        assert_eq!(rank_of(&s, 2), 3);
        assert_eq!(rank_of(&s, 3), 4); // the NaN does not outrank it
        assert_eq!(rank_of(&s, 4), 5);
        assert_eq!(rank_of(&[1.0], 0), 1);
    }

    #[test]
    fn retrieval_summary() {
        let r = retrieval(&[1, 2, 6, 20], 100);
        assert_eq!((r.queries, r.candidates), (4, 100));
        assert_eq!((r.r_at_1, r.r_at_5, r.r_at_10), (0.25, 0.5, 0.75));
        assert!(close(r.mrr, (1.0 + 0.5 + 1.0 / 6.0 + 0.05) / 4.0, 1e-12));
        assert_eq!(r.median_rank, 4.0);
        assert_eq!(r.mean_rank, 7.25);
        assert_eq!(retrieval(&[3, 1, 2], 3).median_rank, 2.0);
        assert!(retrieval(&[], 10).mrr.is_nan());
    }

    #[test]
    fn wilson_intervals_match_the_formula_and_stay_in_range() {
        // 43 of 44 (the test photos' recall): Wilson 95% [0.882, 0.996] (computed apart, in Python).
        let w = wilson(43, 44).unwrap();
        assert!((w.estimate - 43.0 / 44.0).abs() < 1e-12);
        assert!((w.lo - 0.8819).abs() < 5e-4 && (w.hi - 0.9960).abs() < 5e-4, "{w:?}");
        let all = wilson(10, 10).unwrap();
        assert!(all.hi > 0.9999 && all.hi <= 1.0 && (all.lo - 0.7225).abs() < 5e-4, "{all:?}");
        let none = wilson(0, 10).unwrap();
        assert!(none.lo.abs() < 1e-9 && (none.hi - 0.2775).abs() < 5e-4, "{none:?}");
        assert!(wilson(0, 0).is_none());
    }

    #[test]
    fn chance_retrieval_matches_exhaustive_expectation() {
        // Under a uniform ranking the relevant item's rank is uniform on 1..=N,
        // so averaging over every possible rank gives the expectation.
        for n in [1usize, 3, 7, 50] {
            let ranks: Vec<usize> = (1..=n).collect();
            let exact = retrieval(&ranks, n);
            let chance = chance_retrieval(12, n);
            assert_eq!(chance.queries, 12);
            for (a, b) in [
                (chance.r_at_1, exact.r_at_1),
                (chance.r_at_5, exact.r_at_5),
                (chance.r_at_10, exact.r_at_10),
                (chance.mrr, exact.mrr),
                (chance.median_rank, exact.median_rank),
                (chance.mean_rank, exact.mean_rank),
            ] {
                assert!(close(a, b, 1e-12), "n={n}: {a} vs {b}");
            }
        }
        assert!(chance_retrieval(1, 0).r_at_1.is_nan());
    }

    #[test]
    fn rmse_mean_histogram() {
        assert!(close(
            rmse(&[1.0, 2.0, 3.0], &[1.0, 2.0, 5.0]),
            (4.0f64 / 3.0).sqrt(),
            1e-12
        ));
        assert!(rmse(&[], &[]).is_nan());
        assert_eq!(mean(&[1.0, 2.0, 6.0]), 3.0);
        assert!(mean(&[]).is_nan());
        let h = histogram(
            &[0.0, 0.1, 0.25, 0.5, 0.99, 1.0, -0.1, 1.1, f64::NAN],
            0.0,
            1.0,
            4,
        );
        assert_eq!(h, vec![2, 1, 1, 2]);
        assert_eq!(histogram(&[0.5], 1.0, 1.0, 3), vec![0, 0, 0]);
        assert!(histogram(&[0.5], 0.0, 1.0, 0).is_empty());
    }

    #[test]
    #[should_panic]
    fn rmse_length_mismatch_panics() {
        rmse(&[1.0], &[]);
    }
}
