//! deploy/ observability against the real thing: a real Prometheus (Debian's `prometheus`)
//! scrapes a real server (its gallery in the test PostgreSQL) that served varied traffic (two versions as stable and canary, the
//! law, bad requests, cache hits) and loads `deploy/prometheus/rules/`. Every query of every
//! panel of `deploy/grafana/imagesearch.json` must evaluate without error and return data,
//! and every recording and alerting rule must evaluate healthy.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use imagesearch_client::{ImageRef, SearchOptions};
use imagesearch_proto::v1 as pb;
use pb::image_search_client::ImageSearchClient;
use imagesearch_tests::{captioned_add_requests, captioned_photos, free_port, http, status_code, trained_repository, Postgres, Server};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// A Prometheus server on loopback; killed on drop.
struct Prometheus {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str, rules: &Path) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}/*.yml\n\
                 scrape_configs:\n  - job_name: imagesearch\n    static_configs:\n      - targets: ['{target}']\n",
                rules.display()
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus (Debian package prometheus, installed by scripts/setup_deploy.sh)");
        Prometheus { child, addr, _dir: dir }
    }

    fn api(&self, path: &str) -> serde_json::Value {
        let (code, body) = http::get(&self.addr, path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path} ({code}): {e}: {body}"));
        v
    }

    fn query(&self, expr: &str) -> serde_json::Value {
        self.api(&format!("/api/v1/query?query={}", http::encode(expr)))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every `expr` of every panel (rows' nested panels included), with its panel's title.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    fn walk(panels: &[serde_json::Value], out: &mut Vec<(String, String)>) {
        for p in panels {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    out.push((title.clone(), expr.to_string()));
                }
            }
            walk(p["panels"].as_array().map(Vec::as_slice).unwrap_or(&[]), out);
        }
    }
    let mut out = Vec::new();
    walk(dashboard["panels"].as_array().expect("dashboard has panels"), &mut out);
    out
}

/// Traffic that touches every metric the dashboard shows.
async fn traffic(server: &mut Server) {
    let c = server.ready_client().await;
    c.set_rollout(1, 2, 50).await.expect("version 2 as a 50% canary");
    let (kids, adults) = captioned_photos(2);
    c.add_photos(captioned_add_requests(&kids)).await.unwrap();
    c.add_photos(captioned_add_requests(&adults)).await.unwrap();
    for i in 0..24 {
        let opts = SearchOptions { routing_key: format!("user-{i}"), ..Default::default() };
        c.search_with(&format!("a dog running {}", i % 3), Some("US"), 3, &opts).await.unwrap();
    }
    c.search("a photo", Some("DE"), 4).await.unwrap();
    // A child query in a restricted region, past the client's own check: the server withholds it.
    let mut raw = ImageSearchClient::connect(server.endpoint()).await.unwrap();
    let de = || Some(pb::Routing { region: "DE".into(), ..Default::default() });
    let req = pb::SearchRequest { query: "a little boy on a bike".into(), k: 4, routing: de(), ..Default::default() };
    assert!(raw.search(req).await.unwrap().into_inner().query_withheld.is_some());
    let bad = c.search("", Some("US"), 4).await.unwrap_err();
    assert_eq!(status_code(&bad), tonic::Code::InvalidArgument);
    let pairs = vec![(ImageRef::Bytes(adults[0].1.clone()), "a person".to_string()), (ImageRef::Gallery(adults[1].0.clone()), "two dogs".into())];
    c.score(pairs.clone(), Some("US")).await.unwrap();
    c.score(pairs, Some("US")).await.unwrap();
    let stream = vec![pb::ScoreRequest { pairs: vec![], ..Default::default() }];
    let _ = c.score_stream(stream, 1).await;
    c.gallery_stats().await.unwrap();
}

#[test]
fn every_dashboard_query_and_rule_evaluates_against_prometheus_scraping_the_server() {
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(deploy().join("grafana/imagesearch.json")).unwrap()).unwrap();
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 10, "the dashboard has {} queries", queries.len());

    let repo = trained_repository(2);
    let data = tempfile::tempdir().unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    // The gallery in PostgreSQL, as deployed: the database panels and alert have a series.
    let pg = Postgres::start();
    let url = pg.url("gallery");
    let args = ["--metrics-listen", &metrics, "--store", "postgres", "--database-url", &url, "--versions", "1,2"];
    let mut server = Server::start(&repo.path().join("models"), &data.path().join("server"), &args);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(traffic(&mut server));

    let prom = Prometheus::start(&metrics, &deploy().join("prometheus/rules"));
    // Two rounds of traffic a few scrapes apart: every counter has samples before and after.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let up = std::panic::catch_unwind(|| prom.query("up{job=\"imagesearch\"} == 1")).ok();
        if up.as_ref().and_then(|v| v["data"]["result"].as_array()).is_some_and(|r| r.len() == 1) {
            break;
        }
        assert!(Instant::now() < until, "Prometheus never scraped the server ({up:?})");
        std::thread::sleep(Duration::from_millis(250));
    }
    std::thread::sleep(Duration::from_secs(3));
    rt.block_on(traffic(&mut server));
    std::thread::sleep(Duration::from_secs(4));

    let mut failures = Vec::new();
    for (title, expr) in &queries {
        let concrete = expr.replace("$__rate_interval", "1m").replace("$job", "imagesearch");
        assert!(!concrete.contains('$'), "panel {title:?}: a variable the test does not know in {expr}");
        let v = prom.query(&concrete);
        if v["status"] != "success" {
            failures.push(format!("{title}: {concrete}: {}", v["error"]));
        } else if v["data"]["result"].as_array().is_none_or(|r| r.is_empty()) {
            failures.push(format!("{title}: {concrete}: no data"));
        }
    }
    assert!(failures.is_empty(), "dashboard queries that fail against the real server:\n{}", failures.join("\n"));

    // The rules load and evaluate healthy (each group evaluated at least once).
    let until = Instant::now() + Duration::from_secs(30);
    let rules = loop {
        let v = prom.api("/api/v1/rules");
        let groups = v["data"]["groups"].as_array().cloned().unwrap_or_default();
        let evaluated = !groups.is_empty() && groups.iter().all(|g| g["lastEvaluation"].as_str().is_some_and(|t| !t.starts_with("0001")));
        if evaluated {
            break groups;
        }
        assert!(Instant::now() < until, "rules not evaluated: {v}");
        std::thread::sleep(Duration::from_millis(250));
    };
    let all: Vec<&serde_json::Value> = rules.iter().flat_map(|g| g["rules"].as_array().unwrap().iter()).collect();
    assert!(all.iter().filter(|r| r["type"] == "alerting").count() >= 6, "{} rules", all.len());
    for r in &all {
        assert_eq!(r["health"], "ok", "rule {} evaluates with an error: {}", r["name"], r["lastError"]);
    }
    // Nothing is wrong with this server: no alert is pending or firing.
    let alerts = prom.api("/api/v1/alerts");
    let active: Vec<&serde_json::Value> = alerts["data"]["alerts"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
    assert!(active.is_empty(), "alerts active on a healthy server: {active:?}");
}
