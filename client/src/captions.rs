//! Caption files for `gallery add`: the captions decide the restricted flags of the photos
//! they describe.

use std::collections::HashMap;
use std::path::Path;

use crate::ClientError;

/// Reads captions: one per line, `<file name>[#n]<TAB><caption>` (Flickr8k's token format).
pub fn read_captions(path: &Path) -> Result<HashMap<String, Vec<String>>, ClientError> {
    let text = std::fs::read_to_string(path).map_err(|e| ClientError::Io { path: path.display().to_string(), message: e.to_string() })?;
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let (key, caption) = line.split_once('\t').ok_or_else(|| {
            ClientError::InvalidInput(format!("{}:{}: expected '<file name><TAB><caption>'", path.display(), n + 1))
        })?;
        let id = key.split('#').next().unwrap_or(key).trim().to_string();
        out.entry(id).or_default().push(caption.trim().to_string());
    }
    Ok(out)
}
