//! The load tester: closed loop (a fixed number of workers, each waiting for its answer) or
//! open loop (requests sent on a fixed schedule; latency counted from the scheduled time, so a
//! slow server cannot hide its queueing by slowing the client — no coordinated omission).
//! Latencies go into an HDR histogram; warm-up is excluded; errors are counted by status code
//! and answers by the version that served.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use imagesearch_proto::v1 as pb;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::{score_request, Client, ClientError, ImageRef, ScoreStream, SearchOptions};

/// A kind of request in the mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Score,
    Stream,
    Search,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Score => "score",
            Op::Stream => "stream",
            Op::Search => "search",
        }
    }
}

/// Parses "score=2,search=1,stream=1".
pub fn parse_mix(s: &str) -> Result<Vec<(Op, u32)>, String> {
    let mut mix = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, w) = part.split_once('=').unwrap_or((part, "1"));
        let op = match name.trim() {
            "score" => Op::Score,
            "stream" => Op::Stream,
            "search" => Op::Search,
            other => return Err(format!("unknown operation '{other}' in the mix (score, stream, search)")),
        };
        let w: u32 = w.trim().parse().map_err(|_| format!("weight '{w}' of {name} is not a whole number"))?;
        mix.push((op, w));
    }
    if mix.iter().map(|(_, w)| w).sum::<u32>() == 0 {
        return Err("the mix has no weight".into());
    }
    Ok(mix)
}

/// How the load is offered.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "lowercase", tag = "mode")]
pub enum Mode {
    Closed { concurrency: usize },
    Open { rate: f64 },
}

/// A run's settings.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub mode: Mode,
    pub duration: Option<Duration>,
    /// Stop after this many measured requests (whichever of duration and count comes first).
    pub requests: Option<u64>,
    pub warmup: Duration,
    pub mix: Vec<(Op, u32)>,
    pub seed: u64,
    /// Most requests outstanding in open-loop mode before new ones count as client overload.
    pub max_outstanding: usize,
    /// Closed loop: a worker whose request was refused with a retry pushback waits that long
    /// before its next request, as a well-behaved client does (the refusal is still counted).
    pub honour_pushback: bool,
}

/// A request that did not succeed: the status code's name, and the wait the server asked for.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub code: String,
    pub retry_after: Option<Duration>,
}

impl Failure {
    /// A failure without a pushback.
    pub fn code(code: impl Into<String>) -> Self {
        Failure { code: code.into(), retry_after: None }
    }
}

impl From<&ClientError> for Failure {
    fn from(e: &ClientError) -> Self {
        let code = match e.code() {
            Some(c) => crate::code_name(c),
            None => "CLIENT".into(),
        };
        Failure { code, retry_after: e.retry_after() }
    }
}

/// Something to send requests to (the server, or a stub in tests).
pub trait Target: Send + Sync + 'static {
    /// Sends request number `i` of kind `op`; returns the version that served, or the status code name.
    fn call(&self, op: Op, i: u64) -> impl std::future::Future<Output = Result<u32, Failure>> + Send;
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

fn summarise(h: &Histogram<u64>) -> Latency {
    let ms = |us: u64| us as f64 / 1000.0;
    Latency {
        count: h.len(),
        mean_ms: h.mean() / 1000.0,
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p95_ms: ms(h.value_at_quantile(0.95)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
    }
}

/// What a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub mode: Mode,
    pub measured_s: f64,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    /// How long refusals and other errors took to come back (count 0 without errors).
    pub error_latency: Latency,
    /// Successful requests per second over the measured window.
    pub throughput_rps: f64,
    pub latency: Latency,
    pub by_op: BTreeMap<String, Latency>,
    pub versions: BTreeMap<u32, u64>,
    /// Closed loop: how often a worker waited as a refusal's pushback asked, and for how long
    /// in all (seconds).
    pub pushbacks: u64,
    pub pushed_back_s: f64,
}

struct Recorder {
    all: Histogram<u64>,
    failed: Histogram<u64>,
    by_op: BTreeMap<Op, Histogram<u64>>,
    errors: BTreeMap<String, u64>,
    versions: BTreeMap<u32, u64>,
    ok: u64,
    pushbacks: u64,
    pushed_back: Duration,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

impl Recorder {
    fn new() -> Self {
        Recorder { all: histogram(), failed: histogram(), by_op: BTreeMap::new(), errors: BTreeMap::new(), versions: BTreeMap::new(), ok: 0, pushbacks: 0, pushed_back: Duration::ZERO }
    }

    fn record(&mut self, op: Op, latency: Duration, outcome: Result<u32, Failure>) {
        match outcome {
            Ok(v) => {
                let us = (latency.as_micros() as u64).clamp(1, 120_000_000);
                self.all.saturating_record(us);
                self.by_op.entry(op).or_insert_with(histogram).saturating_record(us);
                *self.versions.entry(v).or_default() += 1;
                self.ok += 1;
            }
            Err(f) => {
                self.failed.saturating_record((latency.as_micros() as u64).clamp(1, 120_000_000));
                *self.errors.entry(f.code).or_default() += 1
            }
        }
    }
}

fn pick(mix: &[(Op, u32)], rng: &mut impl Rng) -> Op {
    let total: u32 = mix.iter().map(|(_, w)| w).sum();
    let mut x = rng.gen_range(0..total);
    for (op, w) in mix {
        if x < *w {
            return *op;
        }
        x -= w;
    }
    mix[0].0
}

/// Runs a load test against `target`.
pub async fn run<T: Target>(target: Arc<T>, cfg: &LoadConfig) -> Report {
    let rec = Arc::new(Mutex::new(Recorder::new()));
    let start = Instant::now();
    let measure_from = start + cfg.warmup;
    let end = cfg.duration.map(|d| measure_from + d);
    let counted = Arc::new(AtomicU64::new(0));
    let issued = Arc::new(AtomicU64::new(0));
    let limit = cfg.requests.unwrap_or(u64::MAX);
    let done = {
        let counted = counted.clone();
        move || end.is_some_and(|e| Instant::now() >= e) || counted.load(Ordering::Relaxed) >= limit
    };
    let finish = {
        let counted = counted.clone();
        move |rec: &Arc<Mutex<Recorder>>, op: Op, scheduled: Instant, outcome: Result<u32, Failure>| {
            let in_window = scheduled >= measure_from && end.is_none_or(|e| scheduled < e);
            if in_window && counted.fetch_add(1, Ordering::Relaxed) < limit {
                rec.lock().unwrap_or_else(|e| e.into_inner()).record(op, scheduled.elapsed(), outcome);
            }
        }
    };
    match cfg.mode {
        Mode::Closed { concurrency } => {
            let mut workers = tokio::task::JoinSet::new();
            for w in 0..concurrency.max(1) {
                let (target, rec, mix, issued) = (target.clone(), rec.clone(), cfg.mix.clone(), issued.clone());
                let done = done.clone();
                let finish = finish.clone();
                let honour = cfg.honour_pushback;
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_add(w as u64));
                workers.spawn(async move {
                    while !done() {
                        let op = pick(&mix, &mut rng);
                        let i = issued.fetch_add(1, Ordering::Relaxed);
                        let t0 = Instant::now();
                        let outcome = target.call(op, i).await;
                        let asked = outcome.as_ref().err().and_then(|f| f.retry_after).filter(|_| honour);
                        finish(&rec, op, t0, outcome);
                        if let Some(wait) = asked {
                            let asked_until = Instant::now() + crate::retry::jittered(wait);
                            let until = end.map_or(asked_until, |e| e.min(asked_until));
                            let waited = until.saturating_duration_since(Instant::now());
                            tokio::time::sleep_until(until.into()).await;
                            let mut rec = rec.lock().unwrap_or_else(|e| e.into_inner());
                            rec.pushbacks += 1;
                            rec.pushed_back += waited;
                        }
                    }
                });
            }
            while workers.join_next().await.is_some() {}
        }
        Mode::Open { rate } => {
            let interval = Duration::from_secs_f64(1.0 / rate.max(1e-3));
            let outstanding = Arc::new(AtomicU64::new(0));
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed);
            let mut tasks = tokio::task::JoinSet::new();
            let mut i: u64 = 0;
            while !done() {
                let scheduled = start + interval.mul_f64(i as f64);
                tokio::time::sleep_until(scheduled.into()).await;
                let op = pick(&cfg.mix, &mut rng);
                if outstanding.load(Ordering::Relaxed) as usize >= cfg.max_outstanding {
                    finish(&rec, op, scheduled, Err(Failure::code("CLIENT_OVERLOAD")));
                } else {
                    outstanding.fetch_add(1, Ordering::Relaxed);
                    let (target, rec, outstanding, finish) = (target.clone(), rec.clone(), outstanding.clone(), finish.clone());
                    tasks.spawn(async move {
                        let outcome = target.call(op, i).await;
                        // Latency from the scheduled send time, not from when we got round to it.
                        finish(&rec, op, scheduled, outcome);
                        outstanding.fetch_sub(1, Ordering::Relaxed);
                    });
                }
                i += 1;
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
        }
    }
    let measured = Instant::now().min(end.unwrap_or_else(Instant::now)).saturating_duration_since(measure_from);
    let rec = rec.lock().unwrap_or_else(|e| e.into_inner());
    let measured_s = measured.as_secs_f64().max(1e-9);
    Report {
        mode: cfg.mode,
        measured_s,
        ok: rec.ok,
        errors: rec.errors.clone(),
        error_latency: summarise(&rec.failed),
        throughput_rps: rec.ok as f64 / measured_s,
        latency: summarise(&rec.all),
        by_op: rec.by_op.iter().map(|(op, h)| (op.name().to_string(), summarise(h))).collect(),
        versions: rec.versions.clone(),
        pushbacks: rec.pushbacks,
        pushed_back_s: rec.pushed_back.as_secs_f64(),
    }
}

/// The real test queries and photos a load is made of.
pub struct Workload {
    pub queries: Vec<String>,
    pub photos: Vec<Vec<u8>>,
    pub region: String,
    pub k: u32,
    pub pairs_per_score: usize,
    pub routing_keys: usize,
}

impl Workload {
    /// Reads `test_queries.csv` (separator `|`) and the photos of `test_images/` from the
    /// product dataset's directory.
    pub fn from_dataset(dir: &Path, max_photos: usize) -> Result<Self, ClientError> {
        let io = |p: &Path, e: std::io::Error| ClientError::Io { path: p.display().to_string(), message: e.to_string() };
        let qpath = dir.join("test_queries.csv");
        let text = std::fs::read_to_string(&qpath).map_err(|e| io(&qpath, e))?;
        let queries: Vec<String> = text
            .lines()
            .skip(1)
            .filter_map(|l| l.split('|').nth(2).map(|q| q.trim().to_string()))
            .filter(|q| !q.is_empty())
            .collect();
        let pdir = dir.join("test_images");
        let mut files: Vec<_> = std::fs::read_dir(&pdir).map_err(|e| io(&pdir, e))?.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        let photos = files.iter().take(max_photos).map(|p| std::fs::read(p).map_err(|e| io(p, e))).collect::<Result<Vec<_>, _>>()?;
        if queries.is_empty() || photos.is_empty() {
            return Err(ClientError::InvalidInput(format!("{}: no queries or no photos", dir.display())));
        }
        Ok(Workload { queries, photos, region: String::new(), k: 5, pairs_per_score: 1, routing_keys: 1000 })
    }
}

type StreamJob = (pb::ScoreRequest, oneshot::Sender<Result<u32, Failure>>);

/// The server as a load target: Score, Search, and ScoreStream over one shared stream.
pub struct GrpcTarget {
    client: Client,
    work: Workload,
    stream: mpsc::Sender<StreamJob>,
}

impl GrpcTarget {
    /// Opens the shared ScoreStream (at most `in_flight` requests outstanding on it).
    pub async fn new(client: Client, work: Workload, in_flight: usize) -> Result<Self, ClientError> {
        let mut stream = ScoreStream::open(&client, in_flight).await?;
        let (tx, mut rx) = mpsc::channel::<StreamJob>(in_flight.max(1));
        tokio::spawn(async move {
            let mut waiting: std::collections::HashMap<u64, oneshot::Sender<Result<u32, Failure>>> = Default::default();
            let mut next_id = 0u64;
            let mut open = true;
            loop {
                tokio::select! {
                    job = rx.recv(), if open && waiting.len() < in_flight.max(1) => match job {
                        Some((req, reply)) => {
                            next_id += 1;
                            if let Err(e) = stream.send(next_id, req).await {
                                let _ = reply.send(Err(Failure::from(&e)));
                            } else {
                                waiting.insert(next_id, reply);
                            }
                        }
                        None => open = false,
                    },
                    answer = stream.recv(), if !waiting.is_empty() => match answer {
                        Ok((id, r)) => {
                            if let Some(reply) = waiting.remove(&id) {
                                let _ = reply.send(r.map(|(resp, _)| resp.version).map_err(|e| Failure::from(&e)));
                            }
                        }
                        Err(e) => {
                            for (_, reply) in waiting.drain() {
                                let _ = reply.send(Err(Failure::from(&e)));
                            }
                            break;
                        }
                    },
                    else => break,
                }
            }
        });
        Ok(GrpcTarget { client, work, stream: tx })
    }

    fn pairs(&self, i: u64) -> pb::ScoreRequest {
        let w = &self.work;
        let pairs = (0..w.pairs_per_score.max(1))
            .map(|j| {
                let n = i as usize * w.pairs_per_score.max(1) + j;
                (ImageRef::Bytes(w.photos[n % w.photos.len()].clone()), w.queries[(n * 7 + 3) % w.queries.len()].clone())
            })
            .collect();
        let key = format!("user-{}", i % w.routing_keys.max(1) as u64);
        score_request(pairs, Some(&w.region), 0, &key)
    }
}

impl Target for GrpcTarget {
    async fn call(&self, op: Op, i: u64) -> Result<u32, Failure> {
        match op {
            Op::Score => self.client.score_request(self.pairs(i)).await.map(|(r, _)| r.version).map_err(|e| Failure::from(&e)),
            Op::Stream => {
                let (tx, rx) = oneshot::channel();
                self.stream.send((self.pairs(i), tx)).await.map_err(|_| Failure::code("STREAM_CLOSED"))?;
                rx.await.map_err(|_| Failure::code("STREAM_CLOSED"))?
            }
            Op::Search => {
                let w = &self.work;
                let q = &w.queries[i as usize % w.queries.len()];
                let opts = SearchOptions { routing_key: format!("user-{}", i % w.routing_keys.max(1) as u64), ..Default::default() };
                match self.client.search_with(q, Some(&w.region), w.k, &opts).await {
                    Ok(r) => Ok(r.version),
                    // The client refused a child query itself: a correct answer, not an error.
                    Err(ClientError::QueryWithheld { .. }) => Ok(0),
                    Err(e) => Err(Failure::from(&e)),
                }
            }
        }
    }
}

/// A Markdown table of a sweep.
pub fn sweep_table(rows: &[(usize, Report)]) -> String {
    let mut t = String::from("| concurrency | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (c, r) in rows {
        let l = &r.latency;
        t.push_str(&format!(
            "| {c} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |\n",
            r.throughput_rps,
            l.p50_ms,
            l.p90_ms,
            l.p99_ms,
            l.p999_ms,
            l.max_ms,
            r.errors.values().sum::<u64>()
        ));
    }
    t
}

/// An SVG plot of latency (p50 and p99) against throughput, one point per concurrency.
pub fn sweep_svg(rows: &[(usize, Report)], title: &str) -> String {
    let (w, h, pad) = (640.0, 400.0, 60.0);
    let max_x = rows.iter().map(|(_, r)| r.throughput_rps).fold(1e-9, f64::max) * 1.1;
    let max_y = rows.iter().map(|(_, r)| r.latency.p99_ms).fold(1e-9, f64::max) * 1.1;
    let x = |v: f64| pad + v / max_x * (w - 2.0 * pad);
    let y = |v: f64| h - pad - v / max_y * (h - 2.0 * pad);
    let mut s = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='12'>\
         <rect width='100%' height='100%' fill='white'/><text x='{}' y='20' text-anchor='middle' font-size='14'>{title}</text>\
         <line x1='{pad}' y1='{}' x2='{}' y2='{}' stroke='black'/><line x1='{pad}' y1='{pad}' x2='{pad}' y2='{}' stroke='black'/>\
         <text x='{}' y='{}' text-anchor='middle'>throughput (requests/s)</text>\
         <text x='15' y='{}' transform='rotate(-90 15 {})' text-anchor='middle'>latency (ms)</text>",
        w / 2.0, h - pad, w - pad, h - pad, h - pad, w / 2.0, h - 15.0, h / 2.0, h / 2.0
    );
    for i in 0..=4 {
        let (vx, vy) = (max_x * i as f64 / 4.0, max_y * i as f64 / 4.0);
        s += &format!("<text x='{}' y='{}' text-anchor='middle'>{vx:.0}</text>", x(vx), h - pad + 16.0);
        s += &format!("<text x='{}' y='{}' text-anchor='end'>{vy:.1}</text>", pad - 6.0, y(vy) + 4.0);
    }
    for (name, color, get) in [("p50", "#1f77b4", 0), ("p99", "#d62728", 1)] {
        let pts: Vec<(f64, f64, usize)> = rows
            .iter()
            .map(|(c, r)| (x(r.throughput_rps), y(if get == 0 { r.latency.p50_ms } else { r.latency.p99_ms }), *c))
            .collect();
        let path: Vec<String> = pts.iter().map(|(a, b, _)| format!("{a:.1},{b:.1}")).collect();
        s += &format!("<polyline fill='none' stroke='{color}' stroke-width='2' points='{}'/>", path.join(" "));
        for (a, b, c) in &pts {
            s += &format!("<circle cx='{a:.1}' cy='{b:.1}' r='4' fill='{color}'/><text x='{:.1}' y='{:.1}'>c={c}</text>", a + 6.0, b - 6.0);
        }
        let ly = if get == 0 { 40.0 } else { 56.0 };
        s += &format!("<text x='{}' y='{ly}' fill='{color}'>{name}</text>", w - pad - 30.0);
    }
    s + "</svg>"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers after a known latency: 9 of 10 requests take 4 ms, every 10th takes 40 ms;
    /// every 25th fails with UNAVAILABLE.
    struct Stub;

    impl Target for Stub {
        async fn call(&self, _op: Op, i: u64) -> Result<u32, Failure> {
            let ms = if i % 10 == 9 { 40 } else { 4 };
            tokio::time::sleep(Duration::from_millis(ms)).await;
            if i % 25 == 24 { Err(Failure::code("Unavailable")) } else { Ok(if i % 2 == 0 { 1 } else { 2 }) }
        }
    }

    /// Refuses every request at once, asking for 30 ms of patience.
    struct Refuser;

    impl Target for Refuser {
        async fn call(&self, _op: Op, _i: u64) -> Result<u32, Failure> {
            Err(Failure { code: "ResourceExhausted".into(), retry_after: Some(Duration::from_millis(30)) })
        }
    }

    #[tokio::test]
    async fn closed_loop_workers_wait_as_a_refusal_asks() {
        let cfg = |honour_pushback| LoadConfig {
            mode: Mode::Closed { concurrency: 2 },
            duration: Some(Duration::from_millis(300)),
            requests: Some(5_000),
            warmup: Duration::ZERO,
            mix: vec![(Op::Score, 1)],
            seed: 1,
            max_outstanding: 100,
            honour_pushback,
        };
        // Ignoring the pushback, the workers resend at once and reach the request cap.
        let rude = run(Arc::new(Refuser), &cfg(false)).await;
        assert_eq!((rude.errors.get("ResourceExhausted"), rude.pushbacks), (Some(&5_000), 0));
        // Honouring it, each of the 2 workers sends at most one request per 30 ms of the 300.
        let polite = run(Arc::new(Refuser), &cfg(true)).await;
        let sent = polite.errors.get("ResourceExhausted").copied().unwrap_or(0);
        assert!((2..=22).contains(&sent), "{sent} requests in 300 ms from 2 workers told to wait 30 ms");
        assert_eq!(polite.pushbacks, sent, "every refusal was waited out");
        assert!(polite.pushed_back_s > 0.0 && polite.ok == 0);
    }

    #[tokio::test]
    async fn counts_and_percentiles_match_a_stub_with_known_latencies() {
        let cfg = LoadConfig {
            mode: Mode::Closed { concurrency: 1 },
            duration: None,
            requests: Some(200),
            warmup: Duration::ZERO,
            mix: vec![(Op::Score, 1)],
            seed: 1,
            max_outstanding: 100,
            honour_pushback: true,
        };
        let r = run(Arc::new(Stub), &cfg).await;
        assert_eq!(r.ok + r.errors.values().sum::<u64>(), 200);
        assert_eq!(r.errors.get("Unavailable"), Some(&8));
        assert_eq!(r.ok, 192);
        assert_eq!(r.versions.values().sum::<u64>(), 192);
        // p50 is a 4 ms request, p99 a 40 ms one.
        assert!(r.latency.p50_ms >= 4.0 && r.latency.p50_ms < 20.0, "{:?}", r.latency);
        assert!(r.latency.p99_ms >= 40.0, "{:?}", r.latency);
        assert!(r.latency.p90_ms <= r.latency.p99_ms && r.latency.p99_ms <= r.latency.max_ms);
    }

    #[tokio::test]
    async fn open_loop_counts_from_the_schedule() {
        // 100 requests/s for 0.3 s against a stub whose answers take 4 or 40 ms: the schedule,
        // not the answers, decides how many are sent.
        let cfg = LoadConfig {
            mode: Mode::Open { rate: 100.0 },
            duration: Some(Duration::from_millis(300)),
            requests: None,
            warmup: Duration::from_millis(100),
            mix: vec![(Op::Search, 1)],
            seed: 1,
            max_outstanding: 1000,
            honour_pushback: true,
        };
        let r = run(Arc::new(Stub), &cfg).await;
        let total = r.ok + r.errors.values().sum::<u64>();
        assert!((25..=35).contains(&total), "{total} requests in 0.3 s at 100/s");
        assert!(r.by_op.contains_key("search"));
    }

    #[test]
    fn mix_parsing_and_reports() {
        assert_eq!(parse_mix("score=2, search=1").unwrap(), vec![(Op::Score, 2), (Op::Search, 1)]);
        assert_eq!(parse_mix("stream").unwrap(), vec![(Op::Stream, 1)]);
        assert!(parse_mix("scroll=1").is_err());
        assert!(parse_mix("score=0").is_err());
        let rep = Report {
            mode: Mode::Closed { concurrency: 8 },
            measured_s: 1.0,
            ok: 10,
            errors: BTreeMap::new(),
            error_latency: summarise(&histogram()),
            throughput_rps: 10.0,
            latency: Latency { count: 10, mean_ms: 1.0, p50_ms: 1.0, p90_ms: 2.0, p95_ms: 2.5, p99_ms: 3.0, p999_ms: 3.0, max_ms: 3.0 },
            by_op: BTreeMap::new(),
            versions: BTreeMap::new(),
            pushbacks: 0,
            pushed_back_s: 0.0,
        };
        let rows = vec![(8, rep)];
        assert!(sweep_table(&rows).contains("| 8 | 10.0 | 1.00 |"));
        let svg = sweep_svg(&rows, "t");
        assert!(svg.starts_with("<svg") && svg.contains("c=8"));
    }
}
