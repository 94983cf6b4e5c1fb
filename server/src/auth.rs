//! Bearer-token credentials: `authorization: Bearer <token>`, compared in constant time (both
//! sides hashed first, so neither the content nor the length of the token leaks through timing).
//!
//! Two roles: the **admin** token (ModelAdmin, and reviews of the law's flags) and the **writer**
//! token (gallery writes: AddPhotos, RemovePhotos). They must differ, so a service that uploads
//! photos cannot also lift a flag or switch a model. A role without a token refuses every call.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

use crate::error::ServeError;

/// One role's token.
#[derive(Clone)]
pub struct TokenAuth {
    role: &'static str,
    token_sha: Option<[u8; 32]>,
}

impl TokenAuth {
    /// `None` (or an empty token) refuses every call of the role.
    pub fn new(role: &'static str, token: Option<&str>) -> Self {
        TokenAuth { role, token_sha: token.map(str::trim).filter(|t| !t.is_empty()).map(|t| Sha256::digest(t.as_bytes()).into()) }
    }

    /// The role's name ("admin", "writer").
    pub fn role(&self) -> &'static str {
        self.role
    }

    /// Whether a token is configured.
    pub fn is_configured(&self) -> bool {
        self.token_sha.is_some()
    }

    /// Whether both roles were given the same token (refused at start).
    pub fn same_token_as(&self, other: &TokenAuth) -> bool {
        matches!((self.token_sha, other.token_sha), (Some(a), Some(b)) if bool::from(a.ct_eq(&b)))
    }

    /// Whether a presented `authorization` value carries the token.
    pub fn allows(&self, header: Option<&str>) -> bool {
        let (Some(want), Some(value)) = (self.token_sha, header) else { return false };
        let Some(presented) = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")) else { return false };
        let got: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        got.ct_eq(&want).into()
    }

    /// Checks a request's metadata.
    pub fn check(&self, md: &MetadataMap) -> Result<(), ServeError> {
        let header = md.get("authorization").and_then(|v| v.to_str().ok());
        if self.allows(header) {
            Ok(())
        } else {
            metrics::counter!(crate::metrics::UNAUTHENTICATED, "role" => self.role).increment(1);
            Err(ServeError::Unauthenticated(self.role))
        }
    }
}

impl tonic::service::Interceptor for TokenAuth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        self.check(req.metadata())?;
        Ok(req)
    }
}

/// Reads a token from a file (its first line, trimmed), for `--admin-token-file` and
/// `--writer-token-file`: a token in a file stays out of `ps` and the environment.
pub fn read_token_file(path: &std::path::Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "the token file is empty"));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_bearer_token_passes() {
        let auth = TokenAuth::new("admin", Some("s3cret"));
        assert!(auth.allows(Some("Bearer s3cret")));
        assert!(!auth.allows(Some("Bearer s3cre")));
        assert!(!auth.allows(Some("s3cret")));
        assert!(!auth.allows(None));
        let none = TokenAuth::new("admin", None);
        assert!(!none.allows(Some("Bearer ")));
        assert!(!TokenAuth::new("admin", Some("")).allows(Some("Bearer ")));
        let writer = TokenAuth::new("writer", Some("w"));
        assert!(!writer.allows(Some("Bearer s3cret")), "the admin token is not a writer token");
        assert!(!writer.same_token_as(&auth));
        assert!(TokenAuth::new("writer", Some("s3cret ")).same_token_as(&auth));
        let e = writer.check(&MetadataMap::new()).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(e.to_string().contains("writer token"), "{e}");
    }

    #[test]
    fn token_files_give_their_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "  abc  \nignored\n").unwrap();
        assert_eq!(read_token_file(&p).unwrap(), "abc");
        std::fs::write(&p, "\n").unwrap();
        assert!(read_token_file(&p).is_err());
    }
}
