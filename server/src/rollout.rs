//! Which version serves a request that does not pin one: a stable version and an optional
//! canary taking a percentage of routing keys. A key always lands in the same bucket (a hash,
//! stable across restarts and machines), so one user sees one version.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ServeError;

/// The traffic split.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Rollout {
    pub stable: u32,
    /// 0 = no canary.
    pub canary: u32,
    /// 0..=100.
    pub canary_percent: u32,
}

/// The bucket (0..100) of a routing key.
pub fn bucket(routing_key: &str) -> u32 {
    let d = Sha256::digest(routing_key.as_bytes());
    (u64::from_le_bytes(d[..8].try_into().expect("8 bytes")) % 100) as u32
}

impl Rollout {
    /// Checks the split against the versions that are ready.
    pub fn validate(&self, ready: &[u32]) -> Result<(), ServeError> {
        if self.canary_percent > 100 {
            return Err(ServeError::InvalidArgument(format!("canary_percent {} is above 100", self.canary_percent)));
        }
        if self.canary == 0 && self.canary_percent > 0 {
            return Err(ServeError::InvalidArgument(format!(
                "canary_percent {} needs a canary version (canary is 0); set canary or canary_percent 0",
                self.canary_percent
            )));
        }
        if !ready.contains(&self.stable) {
            return Err(ServeError::FailedPrecondition(format!(
                "stable version {} is not loaded and ready (ready: {ready:?}); load it first",
                self.stable
            )));
        }
        if self.canary != 0 && !ready.contains(&self.canary) {
            return Err(ServeError::FailedPrecondition(format!(
                "canary version {} is not loaded and ready (ready: {ready:?}); load it first",
                self.canary
            )));
        }
        if self.canary != 0 && self.canary == self.stable {
            return Err(ServeError::InvalidArgument("canary and stable are the same version".into()));
        }
        Ok(())
    }

    /// The version for a routing key; without a key the bucket is drawn at random.
    pub fn pick(&self, routing_key: &str) -> u32 {
        if self.canary == 0 || self.canary_percent == 0 {
            return self.stable;
        }
        let b = if routing_key.is_empty() { rand::random::<u32>() % 100 } else { bucket(routing_key) };
        if b < self.canary_percent {
            self.canary
        } else {
            self.stable
        }
    }

    /// The role of a version in this split.
    pub fn role(&self, version: u32) -> &'static str {
        if version == self.stable {
            "stable"
        } else if self.canary != 0 && version == self.canary {
            "canary"
        } else {
            ""
        }
    }

    pub fn load(path: &Path) -> Option<Rollout> {
        std::fs::read_to_string(path).ok().and_then(|s| serde_json::from_str(&s).ok())
    }

    pub fn save(&self, path: &Path) -> Result<(), ServeError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| ServeError::Internal(e.to_string()))?;
        imagesearch_model::repository::write_atomic(path, text.as_bytes()).map_err(|e| ServeError::Storage(e.to_string()))
    }
}

/// Where the rollout is kept: a file beside the local gallery, or the gallery's database when
/// servers share it. Saves are compare-and-set on a generation, so two servers setting a
/// rollout at once cannot both win unseen.
pub trait RolloutStore: Send + Sync {
    /// The saved rollout and its generation (0 = none saved).
    fn load_rollout(&self) -> Result<Option<(Rollout, i64)>, ServeError>;
    /// Saves `r` if the saved generation is still `expected`; returns the new generation. A
    /// rollout changed meanwhile is ABORTED.
    fn save_rollout(&self, r: Rollout, expected: i64) -> Result<i64, ServeError>;
}

/// The rollout in a JSON file (one server).
pub struct FileRollout {
    path: std::path::PathBuf,
    generation: std::sync::atomic::AtomicI64,
}

impl FileRollout {
    pub fn new(path: std::path::PathBuf) -> Self {
        FileRollout { path, generation: std::sync::atomic::AtomicI64::new(1) }
    }
}

impl RolloutStore for FileRollout {
    fn load_rollout(&self) -> Result<Option<(Rollout, i64)>, ServeError> {
        let g = self.generation.load(std::sync::atomic::Ordering::Acquire);
        Ok(Rollout::load(&self.path).map(|r| (r, g)))
    }

    fn save_rollout(&self, r: Rollout, _expected: i64) -> Result<i64, ServeError> {
        // One server owns the file: no one else can have changed it.
        r.save(&self.path)?;
        Ok(self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel) + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_always_sees_the_same_version_and_the_split_matches_the_percentage() {
        let r = Rollout { stable: 1, canary: 2, canary_percent: 30 };
        let mut canary = 0;
        for i in 0..10_000 {
            let key = format!("user-{i}");
            let v = r.pick(&key);
            assert_eq!(v, r.pick(&key), "sticky");
            canary += usize::from(v == 2);
        }
        assert!((2_700..3_300).contains(&canary), "{canary} of 10000 on the canary");
        let off = Rollout { stable: 1, canary: 2, canary_percent: 0 };
        assert!((0..100).all(|i| off.pick(&i.to_string()) == 1));
        let all = Rollout { stable: 1, canary: 2, canary_percent: 100 };
        assert!((0..100).all(|i| all.pick(&i.to_string()) == 2));
    }

    #[test]
    fn validation_names_the_problem() {
        let ready = [1, 2];
        assert!(Rollout { stable: 1, canary: 0, canary_percent: 0 }.validate(&ready).is_ok());
        let e = Rollout { stable: 3, canary: 0, canary_percent: 0 }.validate(&ready).unwrap_err();
        assert!(e.to_string().contains("stable version 3 is not loaded"));
        assert!(Rollout { stable: 1, canary: 2, canary_percent: 101 }.validate(&ready).is_err());
        assert!(Rollout { stable: 1, canary: 1, canary_percent: 5 }.validate(&ready).is_err());
        let e = Rollout { stable: 1, canary: 0, canary_percent: 50 }.validate(&ready).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.to_string().contains("needs a canary version"), "{e}");
    }

    #[test]
    fn survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rollout.json");
        let r = Rollout { stable: 4, canary: 5, canary_percent: 10 };
        r.save(&p).unwrap();
        assert_eq!(Rollout::load(&p), Some(r));
    }
}
