//! The server image (`make image`, deploy/container/Dockerfile) run as a platform would run it:
//! read-only root file system, non-root, its gallery in the test PostgreSQL, the model
//! repository mounted read-only. Docker's own HEALTHCHECK (grpc.health.v1 through the CLI in
//! the image) must say healthy; then a gallery write, a search under the law, the metrics
//! endpoint, and a graceful stop on SIGTERM (exit 0).
//!
//! The image is `$IMAGESEARCH_IMAGE` (default `imagesearch:cpu`, what `make image` tags); the
//! test fails, saying so, when Docker or the image is missing (`make test` builds it first).

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use imagesearch_client::{Client, ClientConfig, Slot};
use imagesearch_proto::DISCLAIMER;
use imagesearch_tests::{captioned_add_requests, captioned_photos, encoders, free_port, http, trained_repository, Postgres};

const DOCKER: &str = "/usr/bin/docker";
const WRITER: &str = "container-writer-token";
const ADMIN: &str = "container-admin-token";

fn docker(args: &[&str]) -> Output {
    Command::new(DOCKER).args(args).output().unwrap_or_else(|e| panic!("{DOCKER} {args:?}: {e} (run scripts/setup_deploy.sh)"))
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(out.status.success(), "docker {args:?} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A started container, removed (with its logs printed on failure) on drop.
struct Container(String);

impl Container {
    fn logs(&self) -> String {
        let out = docker(&["logs", "--tail", "80", &self.0]);
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }

    fn inspect(&self, format: &str) -> String {
        docker_ok(&["inspect", "--format", format, &self.0])
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("container {} log:\n{}", self.0, self.logs());
        }
        let _ = docker(&["rm", "--force", &self.0]);
    }
}

/// Lets the image's non-root user (uid 10001) read the test's files: temporary directories are
/// created 0700 for root.
fn readable_by_all(path: &Path) {
    let ok = Command::new("chmod").arg("-R").arg("a+rX").arg(path).status().unwrap().success();
    assert!(ok, "chmod -R a+rX {}", path.display());
}

#[test]
fn the_image_serves_healthy_non_root_read_only_from_postgres_and_stops_cleanly() {
    let image = std::env::var("IMAGESEARCH_IMAGE").unwrap_or_else(|_| "imagesearch:cpu".into());
    let present = docker(&["image", "inspect", &image]);
    assert!(present.status.success(), "no image {image}: run `make image` first ({})", String::from_utf8_lossy(&present.stderr).trim());

    let repo = trained_repository(1);
    // The model repository as a platform mounts it: at /models, its encoders/ a link to the
    // encoders mounted at /encoders (the host's paths, e.g. under /root, are not the container's).
    let models = repo.path().join("container-models");
    std::fs::create_dir(&models).unwrap();
    for entry in std::fs::read_dir(repo.path().join("models")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "encoders" {
            let ok = Command::new("cp").arg("-a").arg(entry.path()).arg(&models).status().unwrap().success();
            assert!(ok, "cp -a {}", entry.path().display());
        }
    }
    std::os::unix::fs::symlink("/encoders", models.join("encoders")).unwrap();
    readable_by_all(repo.path());
    let enc = std::fs::canonicalize(encoders()).unwrap();
    let pg = Postgres::start();
    let (port, metrics_port) = (free_port(), free_port());
    let name = format!("imagesearch-test-{port}");
    let env = [
        format!("IMAGESEARCH_LISTEN=127.0.0.1:{port}"),
        format!("IMAGESEARCH_METRICS_LISTEN=127.0.0.1:{metrics_port}"),
        "IMAGESEARCH_MODELS=/models".into(),
        "IMAGESEARCH_STORE=postgres".into(),
        format!("IMAGESEARCH_DATABASE_URL={}", pg.url("gallery")),
        "IMAGESEARCH_RESTRICTED_REGIONS=DE,FR".into(),
        format!("IMAGESEARCH_WRITER_TOKEN={WRITER}"),
        format!("IMAGESEARCH_ADMIN_TOKEN={ADMIN}"),
        "IMAGESEARCH_DEVICE=cpu".into(),
        "IMAGESEARCH_DRAIN_TIMEOUT_S=5".into(),
    ];
    let mut args: Vec<String> = ["run", "--detach", "--name", &name, "--network", "host", "--read-only"].map(String::from).to_vec();
    args.extend(["--tmpfs", "/tmp", "--tmpfs", "/var/lib/imagesearch:uid=10001,gid=10001"].map(String::from));
    args.extend(["--health-interval", "1s", "--health-start-period", "180s"].map(String::from));
    for (from, to) in [(models.as_path(), "/models"), (enc.as_path(), "/encoders")] {
        args.extend(["--volume".to_string(), format!("{}:{to}:ro", from.display())]);
    }
    for e in &env {
        args.extend(["--env".to_string(), e.clone()]);
    }
    args.push(image.clone());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let container = Container(docker_ok(&args));

    // Docker's health check (the image's HEALTHCHECK) turns healthy once the version is warm.
    let until = Instant::now() + Duration::from_secs(240);
    loop {
        let status = container.inspect("{{.State.Status}} {{.State.Health.Status}}");
        if status == "running healthy" {
            break;
        }
        assert!(status.starts_with("running"), "container stopped ({status}):\n{}", container.logs());
        assert!(Instant::now() < until, "not healthy within 240 s ({status}):\n{}", container.logs());
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(docker_ok(&["exec", &name, "id", "-u"]), "10001", "the server runs as the image's non-root user");
    let uid = docker_ok(&["exec", &name, "sh", "-c", "stat -c %u /proc/1"]);
    assert_eq!(uid, "10001", "PID 1 (the server) is not root");
    let ro = docker(&["exec", &name, "sh", "-c", "touch /opt/imagesearch/x"]);
    assert!(!ro.status.success(), "the root file system is read-only");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let (kids, adults) = captioned_photos(2);
    rt.block_on(async {
        let mut cfg = ClientConfig::new(format!("http://127.0.0.1:{port}"));
        cfg.writer_token = Some(WRITER.into());
        cfg.request_timeout = Duration::from_secs(60);
        let c = Client::connect(cfg).await.unwrap();
        assert_eq!(c.health("").await.unwrap(), 1, "SERVING");
        let added = c.add_photos(captioned_add_requests(&kids)).await.unwrap();
        assert_eq!((added.added, added.restricted), (2, 2));
        c.add_photos(captioned_add_requests(&adults)).await.unwrap();
        let us = c.search("a photo", Some("US"), 4).await.unwrap();
        assert_eq!(us.hits.len(), 4, "all four photos ranked in the US");
        let de = c.search("a photo", Some("DE"), 4).await.unwrap();
        for kid in &kids {
            assert!(!de.hits.iter().any(|s| matches!(s, Slot::Photo(p) if p.id == kid.0)), "{} shown in DE", kid.0);
        }
        let withheld = de.hits.iter().filter(|s| matches!(s, Slot::Withheld { disclaimer, .. } if disclaimer == DISCLAIMER)).count();
        assert!(withheld >= 2, "the children's photos are withheld with the disclaimer in DE");
    });
    assert_eq!(pg.psql("gallery", "SELECT count(*) FROM photos"), "4", "the container's writes are in PostgreSQL");
    let (code, body) = http::get(&format!("127.0.0.1:{metrics_port}"), "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("imagesearch_requests_total{method=\"Search\""), "{body}");

    // SIGTERM (docker stop): NOT_SERVING, drain, exit 0 well inside docker's 30 s grace.
    docker_ok(&["stop", "--time", "30", &name]);
    assert_eq!(container.inspect("{{.State.ExitCode}}"), "0", "{}", container.logs());
    assert!(container.logs().contains("stopped"), "{}", container.logs());
}
