//! Label aggregation: the three expert ratings (1..4) and the crowd's yes/no votes of a pair
//! become one target in [0, 1].
//!
//! The default, `pooled`, counts every judgment once: an expert rating r as (r − 1) / 3, a
//! crowd vote as 1 (yes) or 0 (no), and takes the mean. README defends it with numbers; the
//! earlier analyses' methods are kept as alternatives.

use std::collections::{BTreeMap, HashMap};

use crate::tables::{CrowdRow, ExpertRow, QueryId};

/// How expert and crowd judgments are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Aggregation {
    /// Mean over all individual judgments: expert (r−1)/3 and crowd votes 0/1, each counted once.
    Pooled,
    /// 0.6 × expert mean + 0.4 × crowd share where both exist, otherwise the one that exists.
    Weighted,
    /// Experts' majority rating (three-way ties dropped), crowd share where no expert judged.
    ExpertMajority,
    /// Expert mean where experts judged, crowd share otherwise.
    ExpertFirst,
}

impl std::fmt::Display for Aggregation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Aggregation::Pooled => "pooled",
            Aggregation::Weighted => "weighted",
            Aggregation::ExpertMajority => "expert-majority",
            Aggregation::ExpertFirst => "expert-first",
        };
        f.write_str(s)
    }
}

/// All human judgments of one (image, query) pair.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Judgments {
    pub expert: Option<[u8; 3]>,
    /// (yes votes, no votes)
    pub crowd: Option<(u32, u32)>,
}

impl Judgments {
    /// Mean expert rating mapped to [0, 1].
    pub fn expert_mean(&self) -> Option<f64> {
        self.expert.map(|r| r.iter().map(|&x| f64::from(x - 1) / 3.0).sum::<f64>() / 3.0)
    }

    /// Share of yes votes.
    pub fn crowd_share(&self) -> Option<f64> {
        self.crowd.map(|(y, n)| f64::from(y) / f64::from(y + n))
    }

    /// The experts' majority rating mapped to [0, 1]; None on a three-way tie.
    pub fn expert_majority(&self) -> Option<f64> {
        let r = self.expert?;
        let maj = if r[0] == r[1] || r[0] == r[2] {
            r[0]
        } else if r[1] == r[2] {
            r[1]
        } else {
            return None;
        };
        Some(f64::from(maj - 1) / 3.0)
    }

    /// The target under an aggregation method; None when the method drops the pair.
    pub fn target(&self, method: Aggregation) -> Option<f64> {
        match method {
            Aggregation::Pooled => {
                let (mut sum, mut n) = (0.0, 0.0);
                if let Some(r) = self.expert {
                    sum += r.iter().map(|&x| f64::from(x - 1) / 3.0).sum::<f64>();
                    n += 3.0;
                }
                if let Some((y, no)) = self.crowd {
                    sum += f64::from(y);
                    n += f64::from(y + no);
                }
                (n > 0.0).then(|| sum / n)
            }
            Aggregation::Weighted => match (self.expert_mean(), self.crowd_share()) {
                (Some(e), Some(c)) => Some(0.6 * e + 0.4 * c),
                (e, c) => e.or(c),
            },
            Aggregation::ExpertMajority => {
                if self.expert.is_some() {
                    self.expert_majority()
                } else {
                    self.crowd_share()
                }
            }
            Aggregation::ExpertFirst => self.expert_mean().or_else(|| self.crowd_share()),
        }
    }
}

/// A judged (image, query) pair with its text and target.
#[derive(Clone, Debug)]
pub struct JudgedPair {
    pub image: String,
    pub query: QueryId,
    pub text: String,
    pub judgments: Judgments,
    pub target: f64,
}

impl JudgedPair {
    /// True when the query was written for this very image (its own caption).
    pub fn is_own_caption(&self) -> bool {
        self.query.image == self.image
    }
}

/// Joins expert and crowd rows on (image, query) and aggregates each pair. Pairs whose query
/// has no known text, or that the method drops, are counted in the returned map of reasons.
pub fn aggregate(
    expert: &[ExpertRow],
    crowd: &[CrowdRow],
    texts: &HashMap<QueryId, String>,
    method: Aggregation,
) -> (Vec<JudgedPair>, BTreeMap<String, usize>) {
    let mut pairs: BTreeMap<(String, QueryId), Judgments> = BTreeMap::new();
    for e in expert {
        pairs.entry((e.image.clone(), e.query.clone())).or_default().expert = Some(e.ratings);
    }
    for c in crowd {
        pairs.entry((c.image.clone(), c.query.clone())).or_default().crowd = Some((c.yes, c.no));
    }
    let mut dropped = BTreeMap::new();
    let mut out = Vec::with_capacity(pairs.len());
    for ((image, query), judgments) in pairs {
        let Some(text) = texts.get(&query) else {
            *dropped.entry("query text unknown".to_string()).or_insert(0) += 1;
            continue;
        };
        match judgments.target(method) {
            Some(target) => out.push(JudgedPair { image, query, text: text.clone(), judgments, target }),
            None => *dropped.entry(format!("dropped by {method} (expert three-way tie)")).or_insert(0) += 1,
        }
    }
    (out, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Hand-computed from real rows of ExpertAnnotations.tsv / CrowdAnnotations.tsv:
    //   1056338697_4f7d7ce270.jpg  2718495608_d8533e3ac5.jpg#2  experts 1 1 2
    //   1056338697_4f7d7ce270.jpg  1056338697_4f7d7ce270.jpg#2  crowd 1 (3 yes, 0 no)
    fn experts_112() -> Judgments {
        Judgments { expert: Some([1, 1, 2]), crowd: None }
    }

    #[test]
    fn expert_only_pair() {
        let j = experts_112();
        let mean = (0.0 + 0.0 + 1.0 / 3.0) / 3.0; // 1/9
        assert!((j.target(Aggregation::Pooled).unwrap() - mean).abs() < 1e-12);
        assert!((j.target(Aggregation::ExpertFirst).unwrap() - mean).abs() < 1e-12);
        assert!((j.target(Aggregation::Weighted).unwrap() - mean).abs() < 1e-12);
        assert_eq!(j.target(Aggregation::ExpertMajority), Some(0.0));
    }

    #[test]
    fn crowd_only_pair() {
        let j = Judgments { expert: None, crowd: Some((3, 0)) };
        for m in [Aggregation::Pooled, Aggregation::Weighted, Aggregation::ExpertFirst, Aggregation::ExpertMajority] {
            assert_eq!(j.target(m), Some(1.0), "{m}");
        }
    }

    #[test]
    fn both_judged_pair() {
        // Real rows: 1119015538_e8e796281e.jpg  416106657_cab2a107a5.jpg#2
        //   experts 4 4 4 → mean 1; crowd 0.666667 (2 yes, 1 no)
        let j = Judgments { expert: Some([4, 4, 4]), crowd: Some((2, 1)) };
        assert!((j.target(Aggregation::Pooled).unwrap() - 5.0 / 6.0).abs() < 1e-12);
        let weighted = 0.6 * 1.0 + 0.4 * (2.0 / 3.0);
        assert!((j.target(Aggregation::Weighted).unwrap() - weighted).abs() < 1e-12);
        assert_eq!(j.target(Aggregation::ExpertFirst), Some(1.0));
        assert_eq!(j.target(Aggregation::ExpertMajority), Some(1.0));

        // Real rows: 1084040636_97d9633581.jpg  256085101_2c2617c5d0.jpg#2
        //   experts 2 3 3 → (1/3 + 2/3 + 2/3) / 3 = 5/9; crowd 1 yes, 2 no
        let j = Judgments { expert: Some([2, 3, 3]), crowd: Some((1, 2)) };
        let pooled = (1.0 / 3.0 + 2.0 / 3.0 + 2.0 / 3.0 + 1.0) / 6.0;
        assert!((j.target(Aggregation::Pooled).unwrap() - pooled).abs() < 1e-12);
        assert!((j.target(Aggregation::ExpertFirst).unwrap() - 5.0 / 9.0).abs() < 1e-12);
        assert!((j.target(Aggregation::ExpertMajority).unwrap() - 2.0 / 3.0).abs() < 1e-12);
        let weighted = 0.6 * (5.0 / 9.0) + 0.4 * (1.0 / 3.0);
        assert!((j.target(Aggregation::Weighted).unwrap() - weighted).abs() < 1e-12);
    }

    #[test]
    fn three_way_tie_is_dropped_by_majority_only() {
        let j = Judgments { expert: Some([1, 2, 3]), crowd: Some((0, 3)) };
        assert_eq!(j.target(Aggregation::ExpertMajority), None);
        assert!(j.target(Aggregation::Pooled).is_some());
    }

    #[test]
    fn join_counts_unknown_texts() {
        let q = QueryId::parse("b.jpg#2").unwrap();
        let expert = vec![ExpertRow { line: 1, image: "a.jpg".into(), query: q.clone(), ratings: [1, 1, 2] }];
        let crowd = vec![
            CrowdRow { line: 1, image: "a.jpg".into(), query: q.clone(), share: 0.0, yes: 0, no: 3 },
            CrowdRow { line: 2, image: "a.jpg".into(), query: QueryId::parse("z.jpg#0").unwrap(), share: 0.0, yes: 0, no: 3 },
        ];
        let texts = HashMap::from([(q.clone(), "A dog .".to_string())]);
        let (pairs, dropped) = aggregate(&expert, &crowd, &texts, Aggregation::Pooled);
        assert_eq!(pairs.len(), 1);
        assert_eq!(pairs[0].judgments, Judgments { expert: Some([1, 1, 2]), crowd: Some((0, 3)) });
        assert!((pairs[0].target - (1.0 / 3.0) / 6.0).abs() < 1e-12);
        assert_eq!(dropped.get("query text unknown"), Some(&1));
    }
}
