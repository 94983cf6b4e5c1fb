//! `imagesearch-bench-scale` (`make scale`): search at gallery scale, the embedded flat index
//! against pgvector in PostgreSQL, on synthetic joint embeddings clustered like real ones
//! (unit vectors around cluster centres, queries near centres).
//!
//! Measures, for `--photos` vectors of `--dim` dimensions: the flat index's search latency
//! (one query at a time, the server's matrix product) and memory; PostgreSQL's insert rate
//! (the server's `unnest` insert, as halfvec), exact search latency, the HNSW build time and
//! size, HNSW search latency and recall@k against the exact answer at each `--ef-search`, and
//! what halfvec rounding costs against the f32 flat index, and searches filtered to 10% and 1%
//! of the photos by a jsonb attribute (exact against HNSW with iterative scans). Prints JSON.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use imagesearch_server::pg_index::{HNSW_EF_CONSTRUCTION, HNSW_M};
use pgvector::Vector;
use tch::{Kind, Tensor};

#[derive(Parser)]
struct Args {
    /// PostgreSQL URL of a scratch database (its table `bench_embeddings` is replaced).
    #[arg(long)]
    database_url: String,
    #[arg(long, default_value_t = 100_000)]
    photos: i64,
    #[arg(long, default_value_t = 2560)]
    dim: i64,
    /// Cluster centres the vectors gather around.
    #[arg(long, default_value_t = 1000)]
    clusters: i64,
    #[arg(long, default_value_t = 200)]
    queries: i64,
    #[arg(long, default_value_t = 10)]
    k: i64,
    #[arg(long, value_delimiter = ',', default_value = "40,100")]
    ef_search: Vec<u32>,
    /// maintenance_work_mem of the HNSW build, MiB.
    #[arg(long, default_value_t = 4096)]
    build_memory_mb: u32,
}

/// Unit rows around random centres: `noise` is the per-component spread relative to a centre's.
/// Made in chunks into one tensor, so a million rows need little more than their own memory.
fn clustered(centres: &Tensor, n: i64, noise: f64, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    let d = centres.size()[1];
    let out = Tensor::empty([n, d], (Kind::Float, tch::Device::Cpu));
    let chunk = 50_000i64;
    let mut at = 0;
    while at < n {
        let m = chunk.min(n - at);
        let pick = Tensor::randint(centres.size()[0], [m], (Kind::Int64, tch::Device::Cpu));
        let x = centres.index_select(0, &pick) + Tensor::randn([m, d], (Kind::Float, tch::Device::Cpu)) * noise;
        out.narrow(0, at, m).copy_(&unit(&x));
        at += m;
    }
    out
}

/// Rows scaled to unit length.
fn unit(x: &Tensor) -> Tensor {
    x / (x * x).sum_dim_intlist([1i64].as_slice(), true, Kind::Float).sqrt()
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    let d = t.size()[1] as usize;
    let flat = Vec::<f32>::try_from(t.contiguous().view([-1])).expect("f32 tensor");
    flat.chunks(d).map(<[f32]>::to_vec).collect()
}

fn percentile(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e3
}

fn recall(got: &[Vec<i64>], truth: &[Vec<i64>]) -> f64 {
    let hits: usize = got.iter().zip(truth).map(|(g, t)| g.iter().filter(|id| t.contains(id)).count()).sum();
    hits as f64 / truth.iter().map(Vec::len).sum::<usize>().max(1) as f64
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let (n, d, k) = (a.photos, a.dim, a.k);
    tch::manual_seed(7);
    let centres = Tensor::randn([a.clusters, d], (Kind::Float, tch::Device::Cpu));
    let centres = unit(&centres);
    // Per-component noise so a photo's cosine to its centre is about 0.6 (as joint embeddings
    // of photos of one theme), queries a little closer.
    let noise = (1.0 / 0.6f64.powi(2) - 1.0).sqrt() / (d as f64).sqrt();
    eprintln!("generating {n} vectors of {d} dimensions in {} clusters", a.clusters);
    let gallery = clustered(&centres, n, noise, 11);
    let queries = clustered(&centres, a.queries, noise * 0.8, 13);
    let q_rows = rows(&queries);

    // The embedded flat index: one query at a time against [N, D] f32.
    let mut flat_lat = Vec::new();
    let mut flat_top = Vec::new();
    for q in 0..a.queries {
        let t = Instant::now();
        let (_, idx) = tch::no_grad(|| gallery.matmul(&queries.get(q).view([d, 1])).view([-1]).topk(k, 0, true, true));
        flat_lat.push(t.elapsed());
        flat_top.push(Vec::<i64>::try_from(idx).expect("i64"));
    }
    let flat_mb = (n * d * 4) as f64 / (1 << 20) as f64;
    eprintln!("flat f32: p50 {:.1} ms, {flat_mb:.0} MiB", percentile(&mut flat_lat.clone(), 0.5));

    let mut db = postgres::Client::connect(&a.database_url, postgres::NoTls).context("scratch database")?;
    db.batch_execute(&format!(
        "CREATE EXTENSION IF NOT EXISTS vector; DROP TABLE IF EXISTS bench_embeddings;
         CREATE TABLE bench_embeddings (id bigint PRIMARY KEY, embedding halfvec({d}) NOT NULL)"
    ))?;
    let insert = format!(
        "INSERT INTO bench_embeddings SELECT u.id, u.emb::halfvec({d}) FROM unnest($1::bigint[], $2::vector[]) AS u(id, emb)"
    );
    eprintln!("inserting into PostgreSQL");
    let started = Instant::now();
    let chunk = 1000i64;
    let mut at = 0;
    while at < n {
        let m = chunk.min(n - at);
        let part = rows(&gallery.narrow(0, at, m));
        let ids: Vec<i64> = (at..at + m).collect();
        let vs: Vec<Vector> = part.into_iter().map(Vector::from).collect();
        db.execute(&insert, &[&ids, &vs])?;
        at += m;
    }
    let insert_s = started.elapsed().as_secs_f64();
    // The flat index's memory goes back before PostgreSQL builds its index.
    drop(gallery);
    db.batch_execute("VACUUM ANALYZE bench_embeddings")?;
    let table_mb: i64 = db.query_one("SELECT pg_total_relation_size('bench_embeddings') >> 20", &[])?.get(0);
    eprintln!("inserted {n} at {:.0}/s; table {table_mb} MB", n as f64 / insert_s);

    let search = format!("SELECT id FROM bench_embeddings ORDER BY embedding <#> ($1::vector)::halfvec({d}) LIMIT $2");
    let run = |db: &mut postgres::Client| -> anyhow::Result<(Vec<Vec<i64>>, Vec<Duration>)> {
        let stmt = db.prepare(&search)?;
        let (mut top, mut lat) = (Vec::new(), Vec::new());
        for q in &q_rows {
            let v = Vector::from(q.clone());
            let t = Instant::now();
            let r = db.query(&stmt, &[&v, &k])?;
            lat.push(t.elapsed());
            top.push(r.iter().map(|r| r.get(0)).collect());
        }
        Ok((top, lat))
    };
    eprintln!("exact searches in PostgreSQL");
    db.batch_execute("SET enable_indexscan = off; SET max_parallel_workers_per_gather = 2")?;
    let (exact_top, mut exact_lat) = run(&mut db)?;
    eprintln!("exact: p50 {:.1} ms", percentile(&mut exact_lat.clone(), 0.5));
    db.batch_execute("RESET enable_indexscan")?;

    eprintln!("building the HNSW index (m {HNSW_M}, ef_construction {HNSW_EF_CONSTRUCTION})");
    db.batch_execute(&format!("SET maintenance_work_mem = '{}MB'", a.build_memory_mb))?;
    let started = Instant::now();
    db.batch_execute(&format!(
        "CREATE INDEX bench_hnsw ON bench_embeddings USING hnsw (embedding halfvec_ip_ops) WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})"
    ))?;
    let build_s = started.elapsed().as_secs_f64();
    let index_mb: i64 = db.query_one("SELECT pg_relation_size('bench_hnsw') >> 20", &[])?.get(0);
    eprintln!("HNSW built in {build_s:.0} s, {index_mb} MB");
    let mut hnsw = Vec::new();
    for ef in &a.ef_search {
        db.batch_execute(&format!("SET hnsw.ef_search = {ef}"))?;
        let (top, mut lat) = run(&mut db)?;
        eprintln!("HNSW ef {ef}: p50 {:.1} ms, recall {:.3}", percentile(&mut lat.clone(), 0.5), recall(&top, &exact_top));
        hnsw.push(serde_json::json!({
            "ef_search": ef,
            "p50_ms": percentile(&mut lat, 0.5),
            "p99_ms": percentile(&mut lat, 0.99),
            "recall_at_k_vs_exact": recall(&top, &exact_top),
        }));
    }
    // Filtered searches as the server runs them: photos' attributes in a jsonb column with a
    // GIN index, joined; exact (index scans off) against HNSW with iterative scans.
    eprintln!("filtered searches");
    db.batch_execute(
        "DROP TABLE IF EXISTS bench_photos;
         CREATE TABLE bench_photos (id bigint PRIMARY KEY, attributes jsonb NOT NULL);
         INSERT INTO bench_photos SELECT id, jsonb_build_object('owner', 'o' || (id % 10), 'album', 'a' || (id % 100)) FROM bench_embeddings;
         CREATE INDEX bench_photos_attributes ON bench_photos USING gin (attributes jsonb_path_ops)",
    )?;
    db.batch_execute("VACUUM ANALYZE bench_photos")?;
    let filtered_sql = format!(
        "SELECT e.id FROM bench_embeddings e JOIN bench_photos p ON p.id = e.id WHERE p.attributes @> ANY($3::text[]::jsonb[])
         ORDER BY e.embedding <#> ($1::vector)::halfvec({d}) LIMIT $2"
    );
    let run_filtered = |db: &mut postgres::Client, doc: &str| -> anyhow::Result<(Vec<Vec<i64>>, Vec<Duration>)> {
        let stmt = db.prepare(&filtered_sql)?;
        let docs = vec![doc.to_string()];
        let (mut top, mut lat) = (Vec::new(), Vec::new());
        for q in &q_rows {
            let v = Vector::from(q.clone());
            let t = Instant::now();
            let r = db.query(&stmt, &[&v, &k, &docs])?;
            lat.push(t.elapsed());
            top.push(r.iter().map(|r| r.get(0)).collect());
        }
        Ok((top, lat))
    };
    let mut filtered = Vec::new();
    for (share, doc) in [("10%", r#"{"owner": "o3"}"#), ("1%", r#"{"album": "a42"}"#)] {
        db.batch_execute("SET enable_indexscan = off")?;
        let (truth, mut exact_lat) = run_filtered(&mut db, doc)?;
        db.batch_execute("RESET enable_indexscan; SET hnsw.ef_search = 100; SET hnsw.iterative_scan = relaxed_order")?;
        let (top, mut lat) = run_filtered(&mut db, doc)?;
        db.batch_execute("RESET hnsw.iterative_scan")?;
        eprintln!("filtered {share}: exact p50 {:.1} ms, HNSW p50 {:.1} ms, recall {:.3}", percentile(&mut exact_lat.clone(), 0.5), percentile(&mut lat.clone(), 0.5), recall(&top, &truth));
        filtered.push(serde_json::json!({
            "passing": share,
            "exact": { "p50_ms": percentile(&mut exact_lat, 0.5), "p99_ms": percentile(&mut exact_lat, 0.99) },
            "hnsw_ef100_iterative": { "p50_ms": percentile(&mut lat, 0.5), "p99_ms": percentile(&mut lat, 0.99),
                                      "recall_at_k_vs_exact": recall(&top, &truth) },
        }));
    }

    // Inserts with the HNSW index present (what a gallery write costs at this size).
    let more = 2000i64.min(n);
    let extra = rows(&clustered(&centres, more, noise, 17));
    let started = Instant::now();
    for (i, part) in extra.chunks(100).enumerate() {
        let ids: Vec<i64> = (0..part.len() as i64).map(|j| n + i as i64 * 100 + j).collect();
        let vs: Vec<Vector> = part.iter().cloned().map(Vector::from).collect();
        db.execute(&insert, &[&ids, &vs])?;
    }
    let indexed_insert_per_s = more as f64 / started.elapsed().as_secs_f64();

    let out = serde_json::json!({
        "photos": n, "dim": d, "clusters": a.clusters, "queries": a.queries, "k": k,
        "flat_f32": { "p50_ms": percentile(&mut flat_lat, 0.5), "p99_ms": percentile(&mut flat_lat, 0.99), "memory_mb": flat_mb },
        "postgres": {
            "insert_per_s": n as f64 / insert_s,
            "table_mb": table_mb,
            "exact": { "p50_ms": percentile(&mut exact_lat, 0.5), "p99_ms": percentile(&mut exact_lat, 0.99),
                       "recall_at_k_vs_flat_f32": recall(&exact_top, &flat_top) },
            "hnsw_build_s": build_s,
            "hnsw_index_mb": index_mb,
            "hnsw": hnsw,
            "filtered": filtered,
            "insert_per_s_with_hnsw": indexed_insert_per_s,
        },
        "threads": tch::get_num_threads(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
