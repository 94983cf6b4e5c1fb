//! The training and evaluation data, loaded and validated: the judged set (`image_search/`),
//! the captioned photos (`flickr8k_train/`), the test queries and photos — and what the law
//! excludes from training.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use imagesearch_compliance::describes_child;

use crate::labels::{aggregate, Aggregation, JudgedPair};
use crate::tables::{self, Caption, Problem, QueryId, TableError, TestQuery};

/// Where the data lives.
#[derive(Clone, Debug)]
pub struct DataPaths {
    /// `image_search/`: the judged set, test queries and photos.
    pub judged_dir: PathBuf,
    /// `flickr8k_train/`: captioned photos for contrastive training.
    pub flickr_dir: PathBuf,
}

impl DataPaths {
    pub fn train_queries(&self) -> PathBuf {
        self.judged_dir.join("train_dataset.csv")
    }
    pub fn expert(&self) -> PathBuf {
        self.judged_dir.join("ExpertAnnotations.tsv")
    }
    pub fn crowd(&self) -> PathBuf {
        self.judged_dir.join("CrowdAnnotations.tsv")
    }
    pub fn test_queries(&self) -> PathBuf {
        self.judged_dir.join("test_queries.csv")
    }
    pub fn test_images_list(&self) -> PathBuf {
        self.judged_dir.join("test_images.csv")
    }
    pub fn train_photo(&self, name: &str) -> PathBuf {
        self.judged_dir.join("train_images").join(name)
    }
    pub fn test_photo(&self, name: &str) -> PathBuf {
        self.judged_dir.join("test_images").join(name)
    }
    pub fn captions(&self) -> PathBuf {
        self.flickr_dir.join("Flickr8k.token.txt")
    }
    pub fn flickr_photo(&self, name: &str) -> PathBuf {
        self.flickr_dir.join("images").join(name)
    }
    /// The data files a version is trained from (for the manifest's sha256 list).
    pub fn files(&self) -> Vec<PathBuf> {
        vec![
            self.train_queries(),
            self.expert(),
            self.crowd(),
            self.test_queries(),
            self.test_images_list(),
            self.captions(),
        ]
    }
}

/// Why something was excluded by the child rule.
#[derive(Clone, Debug)]
pub struct Exclusion {
    pub text: String,
    pub rule: String,
}

/// Everything loaded.
pub struct Dataset {
    pub paths: DataPaths,
    /// Judged (image, query) pairs with aggregated targets.
    pub judged: Vec<JudgedPair>,
    /// Pairs dropped while aggregating, by reason.
    pub judged_dropped: BTreeMap<String, usize>,
    pub test_queries: Vec<TestQuery>,
    pub test_images: Vec<String>,
    /// Flickr8k training captions by photo.
    pub captions: BTreeMap<String, Vec<Caption>>,
    /// Photos whose own captions describe a child, with the first caption that does.
    pub child_photos: HashMap<String, Exclusion>,
    /// Photos with at least one known own caption; a photo without one cannot be cleared of
    /// depicting a child, so it is excluded from training too (fail closed).
    pub captioned: HashSet<String>,
    /// Every photo's own captions: its Flickr8k captions and the queries written for it
    /// (judged set and test queries).
    pub own_captions: HashMap<String, Vec<String>>,
    pub problems: Vec<Problem>,
}

/// Keeps the queries whose photo is among the test photos; each other one is a problem of `file`.
pub fn queries_on_test_photos(
    queries: Vec<TestQuery>,
    test_images: &[String],
    file: &Path,
    problems: &mut Vec<Problem>,
) -> Vec<TestQuery> {
    let test: HashSet<&str> = test_images.iter().map(String::as_str).collect();
    queries
        .into_iter()
        .filter(|q| {
            let ok = test.contains(q.image.as_str());
            if !ok {
                problems.push(Problem {
                    file: file.display().to_string(),
                    line: q.line,
                    reason: format!("query's photo {} is not among the test photos", q.image),
                });
            }
            ok
        })
        .collect()
}

impl Dataset {
    /// Reads and validates all tables and checks that every photo they name exists.
    pub fn load(paths: DataPaths, method: Aggregation, with_flickr: bool) -> Result<Self, TableError> {
        let mut problems = Vec::new();
        let train_queries = tables::read_train_queries(&paths.train_queries(), &mut problems)?;
        let expert = tables::read_expert(&paths.expert(), &mut problems)?;
        let crowd = tables::read_crowd(&paths.crowd(), &mut problems)?;
        let test_queries = tables::read_test_queries(&paths.test_queries(), &mut problems)?;
        let test_images = tables::read_image_list(&paths.test_images_list(), &mut problems)?;
        let flickr = if with_flickr { tables::read_captions(&paths.captions(), &mut problems)? } else { Vec::new() };

        let mut present: HashMap<PathBuf, bool> = HashMap::new();
        let mut check = |path: PathBuf, file: &Path, line: usize, problems: &mut Vec<Problem>| -> bool {
            *present.entry(path.clone()).or_insert_with(|| {
                let ok = path.is_file();
                if !ok {
                    problems.push(Problem {
                        file: file.display().to_string(),
                        line,
                        reason: format!("photo {} does not exist", path.display()),
                    });
                }
                ok
            })
        };
        let expert: Vec<_> =
            expert.into_iter().filter(|r| check(paths.train_photo(&r.image), &paths.expert(), r.line, &mut problems)).collect();
        let crowd: Vec<_> =
            crowd.into_iter().filter(|r| check(paths.train_photo(&r.image), &paths.crowd(), r.line, &mut problems)).collect();
        let test_images: Vec<String> = test_images
            .into_iter()
            .filter(|img| check(paths.test_photo(img), &paths.test_images_list(), 0, &mut problems))
            .collect();
        let test_queries = queries_on_test_photos(test_queries, &test_images, &paths.test_queries(), &mut problems);
        let mut captions: BTreeMap<String, Vec<Caption>> = BTreeMap::new();
        for c in flickr {
            if check(paths.flickr_photo(&c.query.image), &paths.captions(), c.line, &mut problems) {
                captions.entry(c.query.image.clone()).or_default().push(c);
            }
        }

        let texts: HashMap<QueryId, String> =
            train_queries.iter().map(|q| (q.query.clone(), q.text.clone())).collect();
        let (judged, judged_dropped) = aggregate(&expert, &crowd, &texts, method);

        // A photo's own captions: the queries written for it (judged set and test queries)
        // and its Flickr8k captions.
        let own_captions = texts
            .iter()
            .map(|(q, t)| (q.image.as_str(), t.as_str()))
            .chain(test_queries.iter().map(|q| (q.image.as_str(), q.text.as_str())))
            .chain(captions.values().flatten().map(|c| (c.query.image.as_str(), c.text.as_str())));
        let mut child_photos = HashMap::new();
        let mut captioned = HashSet::new();
        let mut by_photo: HashMap<String, Vec<String>> = HashMap::new();
        for (image, text) in own_captions {
            captioned.insert(image.to_string());
            by_photo.entry(image.to_string()).or_default().push(text.to_string());
            if child_photos.contains_key(image) {
                continue;
            }
            if let Some(m) = describes_child(text) {
                child_photos.insert(image.to_string(), Exclusion { text: text.to_string(), rule: m.rule.to_string() });
            }
        }
        Ok(Dataset {
            paths,
            judged,
            judged_dropped,
            test_queries,
            test_images,
            captions,
            child_photos,
            captioned,
            own_captions: by_photo,
            problems,
        })
    }

    /// True when the law excludes a pair from training: its text describes a child, its
    /// photo's own captions do, or the photo has no known caption to clear it.
    pub fn excluded(&self, image: &str, text: &str) -> bool {
        self.photo_excluded(image) || describes_child(text).is_some()
    }

    /// True when a photo may not be used for training (see [`Dataset::excluded`]).
    pub fn photo_excluded(&self, image: &str) -> bool {
        self.child_photos.contains_key(image) || !self.captioned.contains(image)
    }
}
