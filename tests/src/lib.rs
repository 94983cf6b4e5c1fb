//! Support for the end-to-end tests: a small copy of the real data, a model repository with
//! tiny scorer versions trained on it by the real trainer, and the real server started on an
//! ephemeral loopback port.

use std::collections::HashSet;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use imagesearch_client::{Client, ClientConfig};

mod postgres;
pub use postgres::Postgres;
mod s3;
pub use s3::S3Server;
pub mod http;

/// The gRPC code of a failed call (the test fails when the error carries none).
pub fn status_code(e: &imagesearch_client::ClientError) -> tonic::Code {
    e.code().unwrap_or_else(|| panic!("no status: {e}"))
}

/// AddPhotos requests for (id, bytes) photos, without captions.
pub fn add_requests(photos: &[(String, Vec<u8>)]) -> Vec<imagesearch_proto::v1::AddPhotoRequest> {
    photos.iter().map(|(id, data)| imagesearch_proto::v1::AddPhotoRequest { id: id.clone(), data: data.clone(), captions: vec![], ..Default::default() }).collect()
}

/// AddPhotos requests for (id, bytes, captions) photos.
pub fn captioned_add_requests(photos: &[(String, Vec<u8>, Vec<String>)]) -> Vec<imagesearch_proto::v1::AddPhotoRequest> {
    photos
        .iter()
        .map(|(id, data, captions)| imagesearch_proto::v1::AddPhotoRequest { id: id.clone(), data: data.clone(), captions: captions.clone(), ..Default::default() })
        .collect()
}

/// A binary of the workspace, built by `cargo test --workspace` next to the test binaries.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(path.is_file(), "{} missing: run the tests with `cargo test --workspace`", path.display());
    path
}

/// The shared data directory (`../shared/data` or `$IMAGESEARCH_DATA`).
pub fn shared_data() -> PathBuf {
    std::env::var_os("IMAGESEARCH_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"))
}

/// The exported encoders (`$IMAGESEARCH_ENCODERS` or `models/encoders`).
pub fn encoders() -> PathBuf {
    let dir = std::env::var_os("IMAGESEARCH_ENCODERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/encoders"));
    assert!(dir.join("minilm-l6-v2/manifest.json").is_file(), "encoders missing in {}: run scripts/setup.sh", dir.display());
    dir
}

/// The Python of the project's venv (made by `scripts/setup.sh`): `$IMAGESEARCH_PYTHON`, else
/// `$IMAGESEARCH_HOME/venv/bin/python`, `IMAGESEARCH_HOME` defaulting to `~/.cache/imagesearch`
/// as in `scripts/env.sh`.
pub fn venv_python() -> PathBuf {
    if let Some(python) = std::env::var_os("IMAGESEARCH_PYTHON") {
        return PathBuf::from(python);
    }
    let home = std::env::var_os("IMAGESEARCH_HOME").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("set HOME or IMAGESEARCH_HOME")).join(".cache/imagesearch")
    });
    home.join("venv/bin/python")
}

/// Test photos of the product dataset (the real files).
pub fn test_photos(n: usize) -> Vec<(String, Vec<u8>)> {
    let dir = shared_data().join("image_search/test_images");
    let mut names: Vec<_> = fs::read_dir(&dir).unwrap().filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().to_string()).collect();
    names.sort();
    names.into_iter().take(n).map(|n| (n.clone(), fs::read(dir.join(&n)).unwrap())).collect()
}

/// Photos of the flickr set with their five captions: `n` whose captions describe a child and
/// `n` whose captions do not.
pub fn captioned_photos(n: usize) -> (Vec<(String, Vec<u8>, Vec<String>)>, Vec<(String, Vec<u8>, Vec<String>)>) {
    let dir = shared_data().join("flickr8k_train");
    let tokens = fs::read_to_string(dir.join("Flickr8k.token.txt")).unwrap();
    let mut by_photo: Vec<(String, Vec<String>)> = Vec::new();
    for l in tokens.lines() {
        let (key, caption) = l.split_once('\t').unwrap();
        let photo = key.split('#').next().unwrap().to_string();
        match by_photo.last_mut() {
            Some((p, caps)) if *p == photo => caps.push(caption.to_string()),
            _ => by_photo.push((photo, vec![caption.to_string()])),
        }
        if by_photo.len() > 400 {
            break;
        }
    }
    let read = |(p, caps): &(String, Vec<String>)| (p.clone(), fs::read(dir.join("images").join(p)).unwrap(), caps.clone());
    let child = |caps: &[String]| caps.iter().any(|c| imagesearch_compliance::describes_child(c).is_some());
    let kids: Vec<_> = by_photo.iter().filter(|(_, c)| child(c)).take(n).map(read).collect();
    let adults: Vec<_> = by_photo.iter().filter(|(_, c)| !child(c)).take(n).map(read).collect();
    (kids, adults)
}

fn link(from: &Path, to: &Path) {
    std::os::unix::fs::symlink(from, to).unwrap();
}

/// A small copy of the data layout under `root`: 12 judged photos, 8 test photos, 40 captioned photos.
pub fn data_subset(root: &Path) {
    let src = shared_data();
    let js = src.join("image_search");
    let jd = root.join("image_search");
    fs::create_dir_all(jd.join("train_images")).unwrap();
    fs::create_dir_all(jd.join("test_images")).unwrap();
    let expert = fs::read_to_string(js.join("ExpertAnnotations.tsv")).unwrap();
    let mut photos: Vec<&str> = Vec::new();
    for line in expert.lines() {
        let img = line.split('\t').next().unwrap();
        if !photos.contains(&img) {
            photos.push(img);
        }
        if photos.len() == 12 {
            break;
        }
    }
    let keep: HashSet<&str> = photos.iter().copied().collect();
    let pick = |text: &str| -> String { text.lines().filter(|l| keep.contains(l.split('\t').next().unwrap())).map(|l| format!("{l}\n")).collect() };
    fs::write(jd.join("ExpertAnnotations.tsv"), pick(&expert)).unwrap();
    fs::write(jd.join("CrowdAnnotations.tsv"), pick(&fs::read_to_string(js.join("CrowdAnnotations.tsv")).unwrap())).unwrap();
    let train = fs::read_to_string(js.join("train_dataset.csv")).unwrap();
    let mut train_out = String::from("image,query_id,query_text\n");
    for l in train.lines().skip(1) {
        let mut f = l.split(',');
        let (image, query) = (f.next().unwrap(), f.next().unwrap());
        if keep.contains(image) || keep.contains(query.split('#').next().unwrap()) {
            train_out.push_str(l);
            train_out.push('\n');
        }
    }
    fs::write(jd.join("train_dataset.csv"), train_out).unwrap();
    for p in &photos {
        link(&js.join("train_images").join(p), &jd.join("train_images").join(p));
    }
    let tests: Vec<String> = fs::read_to_string(js.join("test_images.csv")).unwrap().lines().skip(1).take(8).map(String::from).collect();
    fs::write(jd.join("test_images.csv"), format!("image\n{}\n", tests.join("\n"))).unwrap();
    for p in &tests {
        link(&js.join("test_images").join(p), &jd.join("test_images").join(p));
    }
    let queries = fs::read_to_string(js.join("test_queries.csv")).unwrap();
    let mut q_out = String::from("|query_id|query_text|image\n");
    for l in queries.lines().skip(1) {
        if tests.iter().any(|t| l.ends_with(&format!("|{t}"))) {
            q_out.push_str(l);
            q_out.push('\n');
        }
    }
    fs::write(jd.join("test_queries.csv"), q_out).unwrap();
    let fs_src = src.join("flickr8k_train");
    let fd = root.join("flickr8k_train");
    fs::create_dir_all(fd.join("images")).unwrap();
    let tokens = fs::read_to_string(fs_src.join("Flickr8k.token.txt")).unwrap();
    let mut flickr: Vec<&str> = Vec::new();
    let mut out = String::new();
    for l in tokens.lines() {
        let img = l.split('#').next().unwrap();
        if !flickr.contains(&img) {
            if flickr.len() == 40 {
                break;
            }
            flickr.push(img);
        }
        out.push_str(l);
        out.push('\n');
    }
    fs::write(fd.join("Flickr8k.token.txt"), out).unwrap();
    for p in &flickr {
        link(&fs_src.join("images").join(p), &fd.join("images").join(p));
    }
}

/// A model repository with `versions` tiny scorer versions, trained by the real trainer on
/// [`data_subset`]. Lives as long as the returned directory.
pub fn trained_repository(versions: usize) -> tempfile::TempDir {
    trained_repository_with(versions, &encoders(), "efficientnet-lite0", "minilm-l6-v2")
}

/// [`trained_repository`] on the encoders `image` and `text` of the encoder directory `encoders`.
pub fn trained_repository_with(versions: usize, encoders: &Path, image: &str, text: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    data_subset(&root.path().join("data"));
    let models = root.path().join("models");
    fs::create_dir_all(&models).unwrap();
    link(encoders, &models.join("encoders"));
    for seed in 0..versions {
        let out = Command::new(bin("imagesearch-train"))
            .args(["train", "--members", "1", "--max-epochs", "2", "--val-photos", "8", "--batch-size", "32"])
            .args(["--image-encoder", image, "--text-encoder", text])
            .args(["--report-queries", "2", "--holdout-fraction", "0.25", "--dim", "64", "--hidden", "128", "--device", "cpu"])
            // Two views per gallery photo keep the servers' gallery adds cheap in tests; no word
            // map, so a test can add one to a copy and compare (the trainer's own test covers
            // choosing the levers).
            .args(["--index-views", "both", "--query-word-map", "off"])
            // The detector threshold the tests' galleries were written against (the default is
            // 0.98 since; these tests check the mechanism, not the default).
            .args(["--detector-recall", "0.95"])
            .args(["--seed", &(7 + seed).to_string()])
            .arg("--data-dir")
            .arg(root.path().join("data"))
            .arg("--models")
            .arg(&models)
            .arg("--encoders")
            .arg(encoders)
            .arg("--cache-dir")
            .arg(root.path().join("cache"))
            .output()
            .unwrap();
        assert!(out.status.success(), "training failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    root
}

/// Trains a tiny version on the encoders `image` and `text` of `encoders`, serves it with the
/// real server and checks it end to end: the version names both encoders, three test photos are
/// added, Score gives a score in [0, 1] to each of the first `scored` of them, and Search in an
/// open region shows the three photos.
pub fn assert_serves_a_version_on(encoders: &Path, image: &str, text: &str, scored: usize) {
    use imagesearch_client::{ImageRef, Slot};
    let repo = trained_repository_with(1, encoders, image, text);
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(&repo.path().join("models"), data.path(), &[]);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let c = server.ready_client().await;
        let info = c.info().await.unwrap();
        let v = &info.versions[0];
        assert_eq!((v.image_encoder.as_str(), v.text_encoder.as_str()), (image, text));
        let photos = test_photos(3);
        assert_eq!(c.add_photos(add_requests(&photos)).await.unwrap().added, 3);
        let pairs = photos[..scored].iter().map(|(_, bytes)| (ImageRef::Bytes(bytes.clone()), "a dog runs on the grass".to_string())).collect();
        let (scores, _) = c.score(pairs, Some("US")).await.unwrap();
        assert_eq!(scores.len(), scored);
        assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)), "{scores:?}");
        let found = c.search("two people ride bikes", Some("US"), 3).await.unwrap();
        let ids: Vec<&str> = found.hits.iter().filter_map(|s| match s { Slot::Photo(p) => Some(p.id.as_str()), Slot::Withheld { .. } => None }).collect();
        assert_eq!(ids.len(), 3, "an open region shows every photo: {:?}", found.hits);
        assert!(ids.iter().all(|id| photos.iter().any(|(p, _)| p == id)), "{ids:?}");
    });
}

/// Polls `check` until it holds, failing the test after 20 s (a server follows a shared
/// gallery within a poll).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < until, "{what}: not seen within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The real server as a child process; killed on drop.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

/// Admin token the tests' servers use.
pub const ADMIN_TOKEN: &str = "test-admin-token";
/// Writer token (gallery writes) the tests' servers use.
pub const WRITER_TOKEN: &str = "test-writer-token";

impl Server {
    /// Starts the server on the repository and data directory; `extra` adds flags.
    pub fn start(models: &Path, data_dir: &Path, extra: &[&str]) -> Server {
        let port = free_port();
        Self::start_on(port, models, data_dir, &data_dir.with_extension(format!("{port}.log")), extra)
    }

    /// Starts the server with its log in `log` (e.g. off a deliberately tiny data disk).
    pub fn start_logging_to(models: &Path, data_dir: &Path, log: &Path, extra: &[&str]) -> Server {
        Self::start_on(free_port(), models, data_dir, log, extra)
    }

    fn start_on(port: u16, models: &Path, data_dir: &Path, log: &Path, extra: &[&str]) -> Server {
        let log = log.to_path_buf();
        fs::create_dir_all(data_dir).unwrap();
        // Metrics off unless the test asks for an endpoint.
        let metrics: &[&str] = if extra.contains(&"--metrics-listen") { &[] } else { &["--metrics-listen", "off"] };
        let child = Command::new(bin("imagesearch-server"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--device", "cpu"])
            .args(metrics)
            .args(["--restricted-regions", "DE,FR", "--admin-token", ADMIN_TOKEN, "--writer-token", WRITER_TOKEN])
            .arg("--models")
            .arg(models)
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Server { child, port, log }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What the server wrote to its log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Client settings for this server: its endpoint, the tests' tokens, a generous deadline.
    pub fn client_config(&self) -> ClientConfig {
        let mut cfg = ClientConfig::new(self.endpoint());
        cfg.admin_token = Some(ADMIN_TOKEN.to_string());
        cfg.writer_token = Some(WRITER_TOKEN.to_string());
        cfg.request_timeout = Duration::from_secs(60);
        cfg
    }

    /// A client of a server that already serves (one that [`Server::ready_client`] waited
    /// for), on the caller's runtime; needs no `&mut`, so a shared server can hand out clients.
    pub async fn client(&self) -> Client {
        Client::connect(self.client_config())
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}\n{}", self.endpoint(), self.log_text()))
    }

    /// Kills the server, then removes `paths`, when this process exits, however it exits: for
    /// a server kept in a `static`, which is never dropped. A watchdog shell reads its standard
    /// input, a pipe that only this process holds open (Rust opens it close-on-exec), until the
    /// kernel closes it as this process ends (it ignores the Ctrl-C that ends this process).
    pub fn stop_when_this_process_exits(&self, paths: &[&Path]) {
        let script = r#"trap '' INT HUP; cat >/dev/null; kill -9 "$1" 2>/dev/null; shift; sleep 1; rm -rf -- "$@""#;
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("imagesearch-test-watchdog")
            .arg(self.child.id().to_string())
            .args(paths)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the watchdog shell");
        // Its standard input must stay open for as long as this process lives.
        std::mem::forget(watchdog);
    }

    /// Waits until the server reports SERVING (models warm), then connects a client.
    pub async fn ready_client(&mut self) -> Client {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("server exited with {status}:\n{}", self.log_text());
            }
            if let Ok(c) = Client::connect(self.client_config()).await {
                if c.health("").await.ok() == Some(1) {
                    return c;
                }
            }
            assert!(Instant::now() < deadline, "server not ready:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A well-formed PNG whose header claims `width`×`height` pixels, with no pixel data.
pub fn png_header_claiming(width: u32, height: u32) -> Vec<u8> {
    // A PNG signature and an IHDR chunk claiming a huge image, no pixel data.
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut chunk = b"IHDR".to_vec();
    chunk.extend_from_slice(&ihdr);
    let crc = crc32(&chunk);
    let mut png = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    png.extend_from_slice(&(ihdr.len() as u32).to_be_bytes());
    png.extend_from_slice(&chunk);
    png.extend_from_slice(&crc.to_be_bytes());
    // An IDAT with an empty zlib stream and IEND: a well-formed file whose header lies.
    for (kind, data) in [(&b"IDAT"[..], &[0x78, 0x01, 0x01, 0x00, 0x00, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x01][..]), (&b"IEND"[..], &[][..])] {
        let mut chunk = kind.to_vec();
        chunk.extend_from_slice(data);
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        png.extend_from_slice(&chunk);
        png.extend_from_slice(&crc32(&chunk).to_be_bytes());
    }
    png
}

/// CRC-32 (IEEE), as PNG chunks carry it.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}
