//! [`ClientConfig`]: where the server is, how long calls may take, how they are retried, which
//! credentials and TLS material the client presents, and which regions it restricts itself.

use std::time::Duration;

use imagesearch_compliance::RegionPolicy;

use crate::RetryPolicy;

/// How to reach the server.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `http://host:port` or `https://host:port`.
    pub endpoint: String,
    /// Longest wait for the connection (and for reconnections).
    pub connect_timeout: Duration,
    /// Deadline of each call, retries included.
    pub request_timeout: Duration,
    /// TCP and HTTP/2 keep-alive interval.
    pub keep_alive: Duration,
    /// Which failures are retried, how often and after what back-off.
    pub retry: RetryPolicy,
    /// Bearer token for model admin calls and reviews of photo flags.
    pub admin_token: Option<String>,
    /// Bearer token for gallery writes (add, remove).
    pub writer_token: Option<String>,
    /// Regions the client itself treats as restricted (united with the server's list).
    pub restricted_regions: Option<RegionPolicy>,
    /// PEM of a CA to trust for `https://` endpoints (system roots otherwise).
    pub tls_ca_pem: Option<Vec<u8>>,
    /// PEM certificate and key the client presents (servers that ask for client certificates).
    pub tls_identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// Name the server's certificate must carry, when it differs from the endpoint's host.
    pub tls_domain: Option<String>,
    /// Largest message accepted from the server.
    pub max_message_bytes: usize,
}

impl ClientConfig {
    /// Defaults for `endpoint`: 5 s to connect, 30 s per call, the default retry policy, no
    /// tokens, no client-side region list, system TLS roots, messages up to 64 MiB.
    pub fn new(endpoint: impl Into<String>) -> Self {
        ClientConfig {
            endpoint: endpoint.into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            admin_token: None,
            writer_token: None,
            restricted_regions: None,
            tls_ca_pem: None,
            tls_identity_pem: None,
            tls_domain: None,
            max_message_bytes: 64 << 20,
        }
    }
}
