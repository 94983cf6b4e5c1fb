//! The admin token check: `authorization: Bearer <token>`, compared in constant time (both sides
//! hashed first, so neither the content nor the length of the token leaks through timing).

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::{Request, Status};

use crate::error::ServeError;

/// An interceptor for the admin service.
#[derive(Clone)]
pub struct AdminAuth {
    token_sha: Option<[u8; 32]>,
}

impl AdminAuth {
    /// `None` refuses every admin call.
    pub fn new(token: Option<&str>) -> Self {
        AdminAuth { token_sha: token.filter(|t| !t.is_empty()).map(|t| Sha256::digest(t.as_bytes()).into()) }
    }

    /// Whether a presented `authorization` value carries the token.
    pub fn allows(&self, header: Option<&str>) -> bool {
        let (Some(want), Some(value)) = (self.token_sha, header) else { return false };
        let Some(presented) = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")) else { return false };
        let got: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        got.ct_eq(&want).into()
    }
}

impl tonic::service::Interceptor for AdminAuth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let header = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
        if self.allows(header) {
            Ok(req)
        } else {
            Err(ServeError::Unauthenticated.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_bearer_token_passes() {
        let auth = AdminAuth::new(Some("s3cret"));
        assert!(auth.allows(Some("Bearer s3cret")));
        assert!(!auth.allows(Some("Bearer s3cre")));
        assert!(!auth.allows(Some("s3cret")));
        assert!(!auth.allows(None));
        let none = AdminAuth::new(None);
        assert!(!none.allows(Some("Bearer ")));
        assert!(!AdminAuth::new(Some("")).allows(Some("Bearer ")));
    }
}
