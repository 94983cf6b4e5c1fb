//! SHA-256 of bytes and files, as lower-case hex: the identity of encoders, scorer files,
//! data files and cached vectors.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::ModelError;

/// SHA-256 of a byte slice.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// SHA-256 of a byte slice, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// SHA-256 of a file, streamed, hex.
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let mut file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| ModelError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Checks every `file -> sha256` entry of a manifest against the files in `dir`.
pub fn verify_files<'a>(
    dir: &Path,
    files: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<(), ModelError> {
    for (name, expected) in files {
        let path = dir.join(name);
        let actual = sha256_file(&path)?;
        if &actual != expected {
            return Err(ModelError::Checksum { path, expected: expected.clone(), actual });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn file_digest_matches_bytes_and_verify_detects_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        std::fs::write(&path, b"hello").unwrap();
        let digest = sha256_file(&path).unwrap();
        assert_eq!(digest, sha256_hex(b"hello"));
        let name = "f.bin".to_string();
        verify_files(dir.path(), [(&name, &digest)]).unwrap();
        std::fs::write(&path, b"hellO").unwrap();
        let err = verify_files(dir.path(), [(&name, &digest)]).unwrap_err();
        assert!(matches!(err, ModelError::Checksum { .. }), "{err}");
    }
}
