//! End-to-end upload benchmark: the release `tranche` server against a "sink",
//! a trivial HTTP server that takes the very same requests and only writes the
//! chunk bodies to disk. Both run as child processes on loopback and are driven
//! by the same client code, so the ratio tranche/sink says how much of what the
//! machine can do (HTTP + disk) tranche delivers. This machine is shared and
//! noisy: compare ratios within one run, not absolute figures across runs.
//!
//! Run: `cargo bench --bench upload` (full, ~2-3 min after the build) or
//! `cargo bench --bench upload -- --quick` (256 MiB payload, one repetition).
//! `-- --only=small,events` (or `UPLOAD_BENCH_ONLY=small,events`) runs only
//! the named groups: `full` (1 at durability full, 3, 5), `relaxed` (1 at
//! durability relaxed), `rss` (2 and 5's RSS), `small` (4), `redis-big` (1R),
//! `redis-small` (4R), `events` (6).
//!
//! Measurements, one function each:
//! 1. one big upload, 8 MiB chunks, 1 and 4 parallel streams, durability full
//!    and relaxed: MB/s (≥ 75 % of the sink) and server CPU per GiB (≤ the
//!    sink's + this process's SHA-256 cost of a GiB + 0.2 core-s);
//! 2. tranche's peak RSS with 100 chunk PUTs of 8 MiB in flight (fresh process;
//!    ≤ the sink's + 8 MiB and ≤ 48 MiB);
//! 3. time from the last chunk's 200 to complete's 200, chunks in order and shuffled;
//! 4. 256 KiB chunk PUTs per second, 8 concurrent clients, durability full and
//!    relaxed (≥ 60 % of the sink), with server CPU per PUT;
//! 5. the same big upload through tus in 8 MiB PATCHes vs API v1 on one stream,
//!    and peak RSS with 100 tus PATCHes of 8 MiB in flight (`upload/tus.rs`).
//!
//! The same binary, started with `--sink`, is the sink server.
//!
//! A second table puts tranche's Redis state backend next to its embedded store
//! (redb), both measured in the same run by the same client code against a
//! redis-server the bench starts itself (no persistence, loopback only; it must
//! be on the PATH, or named by `REDIS_SERVER`):
//! 1R. measurement 1 with 4 streams, durability full: MB/s, Redis vs embedded;
//! 4R. measurement 4, durability full and relaxed.
//! Goal 4 of issue 12: Redis within 10 % of the embedded store on both.
//! 6. (issue 11) measurement 4 at durability full on a tranche with events on
//!    (a webhook, answered by a loopback receiver this binary runs, and a
//!    Redis stream on the same redis-server) against one with events off:
//!    ≥ 95 % of the rate (`upload/events.rs`).
//! Every Redis-backed tranche gets a key prefix of its own, and Redis is emptied
//! (FLUSHALL) before each measured run, so no run inherits another's keys.

#[path = "upload/events.rs"]
mod events;
#[path = "upload/tus.rs"]
mod tus;

use std::collections::HashMap;
use std::fs::File;
use std::net::TcpListener;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::{Bytes, BytesMut};
use rand::seq::SliceRandom;
use rand::{RngCore, SeedableRng};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;
const BIG_CHUNK: u64 = 8 * MIB;
const SMALL_CHUNK: u64 = 256 * KIB;
/// How long a server may take to answer /healthz after it is started.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);
/// Upper bound for polling a 202 `complete` until the upload is completed.
const COMPLETE_TIMEOUT: Duration = Duration::from_secs(120);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--sink") {
        if let Err(e) = sink::main(&args[1..]) {
            eprintln!("sink: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    if args.first().map(String::as_str) == Some("--webhook") {
        if let Err(e) = events::receiver_main(&args[1..]) {
            eprintln!("webhook receiver: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    // `cargo bench` appends `--bench`; anything else besides these is a mistake.
    let mut quick = false;
    let mut only = std::env::var("UPLOAD_BENCH_ONLY").ok();
    for arg in &args {
        match arg.as_str() {
            "--quick" => quick = true,
            "--bench" => {}
            other if other.starts_with("--only=") => only = Some(other[7..].to_string()),
            other => eprintln!("upload bench: ignoring unknown argument {other:?}"),
        }
    }
    let mut plan = Plan::new(quick);
    if let Some(only) = only.filter(|o| !o.trim().is_empty()) {
        let groups: Vec<String> = only.split(',').map(|g| g.trim().to_string()).collect();
        for g in &groups {
            if !GROUPS.contains(&g.as_str()) {
                eprintln!("upload bench: unknown group {g:?}; the groups are {GROUPS:?}");
                std::process::exit(2);
            }
        }
        plan.only = Some(groups);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // `run` owns every child process and temp dir through Drop guards, so they
    // are gone by the time it returns, whether by success, error or panic.
    if let Err(e) = runtime.block_on(run(plan)) {
        eprintln!("\nupload bench FAILED: {e:#}");
        std::process::exit(1);
    }
}

/// Sizes and repetition counts of one run.
struct Plan {
    quick: bool,
    /// Size of the big upload of measurements 1 and 3.
    payload_size: u64,
    /// Each throughput figure is the median of this many runs.
    reps: usize,
    /// Total 256 KiB chunk PUTs in measurement 4 (split over the clients).
    small_chunks: u64,
    small_clients: u64,
    /// The groups of measurements to run (`--only`); `None`: all.
    only: Option<Vec<String>>,
}

/// The groups `--only` names, in the order they run.
const GROUPS: [&str; 7] = [
    "full",
    "relaxed",
    "rss",
    "small",
    "redis-big",
    "redis-small",
    "events",
];

impl Plan {
    fn new(quick: bool) -> Plan {
        Plan {
            quick,
            payload_size: if quick { 256 * MIB } else { 1024 * MIB },
            reps: if quick { 1 } else { 3 },
            small_chunks: if quick { 800 } else { 2000 },
            small_clients: 8,
            only: None,
        }
    }

    /// Whether group `name` (one of [`GROUPS`]) is to run.
    fn runs(&self, name: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|g| g == name))
    }
}

/// One line of the final table.
struct Row {
    what: String,
    tranche: String,
    sink: String,
    ratio: String,
    target: String,
    verdict: &'static str,
}

async fn run(plan: Plan) -> Result<()> {
    let started = Instant::now();
    let command = if plan.quick {
        "cargo bench --bench upload -- --quick"
    } else {
        "cargo bench --bench upload"
    };
    match &plan.only {
        Some(only) => println!("command: {command} -- --only={}", only.join(",")),
        None => println!("command: {command}"),
    }
    println!(
        "commit: {}   payload: {} MiB   repetitions: {}   cores: {}",
        git_describe(),
        plan.payload_size / MIB,
        plan.reps,
        cores()
    );

    // Same disk as the repository (not a tmpfs), removed when `tmp` drops.
    let tmp_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-tmp");
    std::fs::create_dir_all(&tmp_root)?;
    let tmp = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(&tmp_root)?;
    // Started first so that a missing redis-server fails the run at once, not
    // after the other measurements; declared after `tmp`, so it drops first.
    let redis = RedisServer::start(tmp.path(), "redis")?;
    println!(
        "redis: redis-server {} on 127.0.0.1:{} (no persistence)",
        redis.version(),
        redis.port
    );

    let t = Instant::now();
    let payload = Payload::generate(plan.payload_size);
    println!(
        "payload generated and hashed in {:.1} s (sha256 {}…)\n",
        t.elapsed().as_secs_f64(),
        &payload.sha256[..16]
    );

    let big = plan.runs("full") || plan.runs("relaxed");
    let sha = if big || plan.runs("small") {
        sha256_cost(&payload)
    } else {
        0.0
    };
    if big || plan.runs("small") {
        println!("SHA-256 in this process, one core: {sha:.2} core-s per GiB (best of 3)\n");
    }

    let mut rows = Vec::new();
    if plan.runs("full") {
        // Measurements 1 and 3 share one tranche and one sink, durability full.
        let tranche = Server::tranche(tmp.path(), "tranche-full", Durability::Full)?;
        let sink = Server::sink(tmp.path(), "sink-full", Durability::Full)?;
        let client = http_client()?;
        warm_up(&client, &tranche, &sink, &payload).await?;
        rows.extend(
            big_upload_throughput(
                &plan,
                &client,
                &tranche,
                &sink,
                &payload,
                Durability::Full,
                sha,
            )
            .await?,
        );
        rows.extend(completion_latency(&plan, &client, &tranche, &sink, &payload).await?);
        rows.extend(tus::tus_vs_v1(plan.reps, &client, &tranche, &payload).await?);
    }
    if plan.runs("relaxed") {
        let tranche = Server::tranche(tmp.path(), "tranche-relaxed", Durability::Relaxed)?;
        let sink = Server::sink(tmp.path(), "sink-relaxed", Durability::Relaxed)?;
        let client = http_client()?;
        warm_up(&client, &tranche, &sink, &payload).await?;
        rows.extend(
            big_upload_throughput(
                &plan,
                &client,
                &tranche,
                &sink,
                &payload,
                Durability::Relaxed,
                sha,
            )
            .await?,
        );
    }
    if plan.runs("rss") {
        rows.extend(peak_rss(tmp.path(), &payload).await?);
        rows.extend(tus::tus_peak_rss(tmp.path(), &payload).await?);
    }
    if plan.runs("small") {
        rows.extend(small_chunk_rate(&plan, tmp.path(), &payload, sha).await?);
    }

    let mut redis_rows = Vec::new();
    if plan.runs("redis-big") {
        redis_rows.extend(redis_big_upload(&plan, tmp.path(), &redis, &payload).await?);
    }
    if plan.runs("redis-small") {
        redis_rows.extend(redis_small_chunk_rate(&plan, tmp.path(), &redis, &payload).await?);
    }
    let mut event_rows = Vec::new();
    if plan.runs("events") {
        event_rows.extend(events::events_vs_off(&plan, tmp.path(), &redis, &payload).await?);
    }
    drop(redis);

    if !rows.is_empty() {
        print_table(&rows);
    }
    if !redis_rows.is_empty() {
        println!("\ntranche's state in Redis vs in the embedded store (same run, same client):");
        print_table_headed(
            &redis_rows,
            Row {
                what: "measurement".into(),
                tranche: "tranche+Redis".into(),
                sink: "tranche+embedded".into(),
                ratio: "redis/embedded".into(),
                target: "target".into(),
                verdict: "",
            },
        );
    }
    if !event_rows.is_empty() {
        println!(
            "\ntranche with events on (webhook + Redis stream) vs off (same run, same client):"
        );
        print_table_headed(
            &event_rows,
            Row {
                what: "measurement".into(),
                tranche: "events on".into(),
                sink: "events off".into(),
                ratio: "on/off".into(),
                target: "target".into(),
                verdict: "",
            },
        );
    }
    println!(
        "\nMB/s = 10^6 B/s; figures are medians of {} run(s); total time {:.0} s",
        plan.reps,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// The measurements
// ---------------------------------------------------------------------------

/// A small upload on each server first, so that neither pays for first-touch
/// costs (connection set-up, page-cache warm-up, lazy allocations) in a
/// measured run.
async fn warm_up(
    client: &reqwest::Client,
    tranche: &Server,
    sink: &Server,
    payload: &Payload,
) -> Result<()> {
    let small = payload.prefix(64 * MIB);
    for server in [tranche, sink] {
        upload(client, server, &small, BIG_CHUNK, 4, Order::InOrder).await?;
    }
    Ok(())
}

/// The CPU time one core of this process takes to SHA-256 a GiB (best of
/// three passes over the payload's first 256 MiB, thread CPU time, so that
/// other processes on the machine do not count): the one cost tranche has on
/// top of the sink by design, and the allowance of goal 1's CPU bound.
fn sha256_cost(payload: &Payload) -> f64 {
    let sample = payload.prefix(payload.len().min(256 * MIB));
    let mut best = f64::MAX;
    for _ in 0..3 {
        let before = thread_cpu();
        let digest = Sha256::digest(&sample.bytes);
        std::hint::black_box(digest);
        let spent = (thread_cpu() - before).as_secs_f64();
        best = best.min(spent * GIB as f64 / sample.len() as f64);
    }
    best
}

/// Runs `work` and returns its result with the CPU seconds this process (the
/// client) used meanwhile.
async fn client_cpu<T>(work: impl std::future::Future<Output = Result<T>>) -> Result<(T, f64)> {
    let me = std::process::id();
    let before = process_cpu(me)?;
    let out = work.await?;
    Ok((out, (process_cpu(me)? - before).as_secs_f64()))
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The most any server could move on this machine, in units per second,
/// when each unit costs `core_s` core-seconds in all: the client's share,
/// the sink's (the least any server must spend), and SHA-256's (which
/// tranche spends by design). The client shares the cores with the server,
/// so a target above this cannot be met here by a server that hashes.
fn cpu_ceiling(core_s: f64) -> f64 {
    cores() as f64 / core_s
}

/// The row of a CPU ceiling (`how` says how it was reached) next to the
/// sink's own rate.
fn ceiling_row(how: String, ceiling: f64, sink: f64) -> Row {
    Row {
        what: format!("    CPU ceiling: {how}"),
        tranche: format!("{ceiling:.0}"),
        sink: format!("{sink:.0}"),
        ratio: format!("{:.0} %", 100.0 * ceiling / sink),
        target: "(info)".into(),
        verdict: "",
    }
}

/// CPU time of the calling thread (the first field of its schedstat, in ns).
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns = stat
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

/// (1) One big upload with 8 MiB chunks over 1 and 4 streams, timed from
/// create to complete's 200. Runs alternate between tranche and the sink so
/// that the machine's drift affects both alike. Goal: ≥ 75 % of the sink's
/// throughput, and server CPU no more than the sink's plus what hashing the
/// bytes costs (`sha`, core-s/GiB) plus 0.2 core-s/GiB.
async fn big_upload_throughput(
    plan: &Plan,
    client: &reqwest::Client,
    tranche: &Server,
    sink: &Server,
    payload: &Payload,
    durability: Durability,
    sha: f64,
) -> Result<Vec<Row>> {
    let tag = durability.name();
    let mut rows = Vec::new();
    for streams in [1, 4] {
        let (mut t_rates, mut s_rates) = (Vec::new(), Vec::new());
        let (mut t_cpu, mut s_cpu, mut c_cpu) = (Vec::new(), Vec::new(), Vec::new());
        for rep in 0..plan.reps {
            // Server CPU per GiB tells where a gap comes from: on 2 cores the
            // client and the server share the CPU, so every core-second the
            // server spends (e.g. on SHA-256) is one the transfer cannot use.
            let ((t, t_core_s), c_t) = client_cpu(measure_cpu(
                tranche,
                upload(client, tranche, payload, BIG_CHUNK, streams, Order::InOrder),
            ))
            .await?;
            let ((s, s_core_s), c_s) = client_cpu(measure_cpu(
                sink,
                upload(client, sink, payload, BIG_CHUNK, streams, Order::InOrder),
            ))
            .await?;
            let gib = payload.len() as f64 / GIB as f64;
            // The client's lesser cost of the two: the ceiling is then the
            // highest this run allows.
            c_cpu.push(c_t.min(c_s) / gib);
            eprintln!(
                "  (1) {tag}, {streams} stream(s), run {}: tranche {:.0} MB/s ({:.2} core-s/GiB), sink {:.0} MB/s ({:.2} core-s/GiB)",
                rep + 1,
                t.mb_per_s(payload.len()),
                t_core_s / gib,
                s.mb_per_s(payload.len()),
                s_core_s / gib,
            );
            t_rates.push(t.mb_per_s(payload.len()));
            s_rates.push(s.mb_per_s(payload.len()));
            t_cpu.push(t_core_s / gib);
            s_cpu.push(s_core_s / gib);
        }
        let (t, s) = (median(&t_rates), median(&s_rates));
        rows.push(Row {
            what: format!(
                "(1) {} MiB upload, 8 MiB chunks, {streams} stream(s), durability {tag}: MB/s",
                payload.len() / MIB
            ),
            tranche: format!("{t:.0}"),
            sink: format!("{s:.0}"),
            ratio: format!("{:.0} %", 100.0 * t / s),
            target: "≥ 75 % of sink".into(),
            verdict: pass(t >= 0.75 * s),
        });
        let sink_rate = s;
        let (t, s) = (median(&t_cpu), median(&s_cpu));
        let bound = s + sha + 0.2;
        rows.push(Row {
            what: format!("    server CPU, {streams} stream(s), {tag}: core-seconds per GiB"),
            tranche: format!("{t:.2}"),
            sink: format!("{s:.2}"),
            ratio: format!("{:.1} ×", t / s),
            target: format!("≤ sink+sha+0.2 = {bound:.2}"),
            verdict: pass(t <= bound),
        });
        let (c, cores) = (median(&c_cpu), cores());
        rows.push(ceiling_row(
            format!(
                "{cores} cores / (client {c:.2} + sink {s:.2} + SHA-256 {sha:.2} core-s/GiB): MB/s"
            ),
            cpu_ceiling(c + s + sha) * GIB as f64 / 1e6,
            sink_rate,
        ));
    }
    Ok(rows)
}

/// Runs `work` and returns its result with the CPU seconds `server` used meanwhile.
async fn measure_cpu<T>(
    server: &Server,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<(T, f64)> {
    let before = server.cpu()?;
    let out = work.await?;
    Ok((out, (server.cpu()? - before).as_secs_f64()))
}

/// (3) Time from the last chunk's 200 to complete's 200. In order (one stream)
/// the running hash keeps up with the chunks, so complete has only the tail
/// to do; shuffled with 4 streams, the server's catch-up hasher has to read
/// back what arrived early, and whatever it has not done yet delays complete.
/// The sink's figure is the bare cost of one request, for reference.
async fn completion_latency(
    plan: &Plan,
    client: &reqwest::Client,
    tranche: &Server,
    sink: &Server,
    payload: &Payload,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (streams, order, label, target_ms) in [
        (1, Order::InOrder, "in order, 1 stream", Some(50.0)),
        (4, Order::InOrder, "in order, 4 streams", None),
        (4, Order::Shuffled, "shuffled, 4 streams", None),
    ] {
        let (mut t_ms, mut s_ms) = (Vec::new(), Vec::new());
        for _ in 0..plan.reps {
            let t = upload(client, tranche, payload, BIG_CHUNK, streams, order).await?;
            let s = upload(client, sink, payload, BIG_CHUNK, streams, order).await?;
            t_ms.push(t.complete_after_last_chunk.as_secs_f64() * 1e3);
            s_ms.push(s.complete_after_last_chunk.as_secs_f64() * 1e3);
        }
        let (t, s) = (median(&t_ms), median(&s_ms));
        rows.push(Row {
            what: format!(
                "(3) last chunk's 200 → complete's 200, {} MiB, {label}: ms",
                payload.len() / MIB
            ),
            tranche: format!("{t:.1}"),
            sink: format!("{s:.1}"),
            ratio: String::new(),
            target: target_ms.map_or("(info)".into(), |ms| format!("< {ms:.0} ms")),
            verdict: target_ms.map_or("", |ms| pass(t < ms)),
        });
    }
    Ok(rows)
}

/// (2) Peak RSS of a fresh tranche (VmHWM cannot be reset) while 100 PUTs of
/// 8 MiB are in flight at once: 100 uploads of one chunk each, all created
/// first so that only the chunk bodies are in flight together. A fresh sink
/// under the same load shows what actix-web's own per-connection buffers
/// take, i.e. the floor for any server built on it.
async fn peak_rss(tmp: &Path, payload: &Payload) -> Result<Vec<Row>> {
    let tranche = Server::tranche(tmp, "tranche-rss", Durability::Full)?;
    let (t_idle, t_after) = memory_under_load(&tranche, payload).await?;
    drop(tranche);
    let sink = Server::sink(tmp, "sink-rss", Durability::Full)?;
    let (s_idle, s_after) = memory_under_load(&sink, payload).await?;
    Ok(vec![
        Row {
            what: "(2) RSS at idle: MiB".into(),
            tranche: format!("{:.1}", mib(t_idle.rss)),
            sink: format!("{:.1}", mib(s_idle.rss)),
            ratio: String::new(),
            target: "(info)".into(),
            verdict: "",
        },
        Row {
            what: "(2) peak RSS (VmHWM), 100 × 8 MiB PUTs in flight: MiB".into(),
            tranche: format!("{:.1}", mib(t_after.hwm)),
            sink: format!("{:.1}", mib(s_after.hwm)),
            ratio: String::new(),
            target: "≤ sink + 8, ≤ 48 MiB".into(),
            verdict: pass(t_after.hwm <= (s_after.hwm + 8 * MIB).min(48 * MIB)),
        },
    ])
}

/// A fresh server's memory at idle, then after 100 concurrent 8 MiB PUTs.
async fn memory_under_load(server: &Server, payload: &Payload) -> Result<(Memory, Memory)> {
    const IN_FLIGHT: usize = 100;
    // Let it settle (allocator arenas, worker threads) before reading the idle figure.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = server.memory()?;
    let client = http_client()?;
    let body = payload.prefix(BIG_CHUNK);
    let mut uploads = Vec::new();
    for _ in 0..IN_FLIGHT {
        uploads.push(create(&client, server, &body, BIG_CHUNK).await?);
    }
    let puts = uploads
        .iter()
        .map(|u| put_chunk(&client, server, u, 0, body.bytes.clone()));
    futures::future::try_join_all(puts).await?;
    let after = server.memory()?;
    for u in &uploads {
        complete(&client, server, u).await?;
    }
    eprintln!(
        "  (2) {}: idle RSS {:.1} MiB, after 100 PUTs RSS {:.1} MiB, peak {:.1} MiB",
        server.name,
        mib(idle.rss),
        mib(after.rss),
        mib(after.hwm)
    );
    Ok((idle, after))
}

/// (4) 256 KiB chunk PUTs per second with 8 concurrent clients, each sending its
/// own upload's chunks one after the other: this is the per-request overhead
/// (state store write, fsync, bookkeeping) rather than bandwidth. Timed from
/// the first PUT to the last PUT's 200; create and complete are outside.
async fn small_chunk_rate(
    plan: &Plan,
    tmp: &Path,
    payload: &Payload,
    sha: f64,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for durability in [Durability::Full, Durability::Relaxed] {
        let tag = durability.name();
        let tranche = Server::tranche(tmp, &format!("tranche-small-{tag}"), durability)?;
        let sink = Server::sink(tmp, &format!("sink-small-{tag}"), durability)?;
        let client = http_client()?;
        let (mut t_rates, mut s_rates) = (Vec::new(), Vec::new());
        let (mut t_cpu, mut s_cpu, mut c_cpu) = (Vec::new(), Vec::new(), Vec::new());
        for rep in 0..plan.reps {
            let ((t, t_core_s), c_t) = client_cpu(measure_cpu(
                &tranche,
                small_chunk_run(plan, &client, &tranche, payload),
            ))
            .await?;
            let ((s, s_core_s), c_s) = client_cpu(measure_cpu(
                &sink,
                small_chunk_run(plan, &client, &sink, payload),
            ))
            .await?;
            // Per PUT, including the (untimed) create and complete of each run.
            let puts = (plan.small_chunks / plan.small_clients * plan.small_clients) as f64;
            // The client's lesser cost of the two: the ceiling is then the
            // highest this run allows.
            c_cpu.push(c_t.min(c_s) / puts * 1e6);
            eprintln!(
                "  (4) durability {tag}, run {}: tranche {t:.0} PUT/s ({:.0} µs CPU/PUT), sink {s:.0} PUT/s ({:.0} µs CPU/PUT)",
                rep + 1,
                t_core_s / puts * 1e6,
                s_core_s / puts * 1e6,
            );
            t_rates.push(t);
            s_rates.push(s);
            t_cpu.push(t_core_s / puts * 1e6);
            s_cpu.push(s_core_s / puts * 1e6);
        }
        let (t, s) = (median(&t_rates), median(&s_rates));
        let sink_mode = match durability {
            Durability::Full => "sink fsync",
            Durability::Relaxed => "sink no fsync",
        };
        rows.push(Row {
            what: format!(
                "(4) 256 KiB PUT/s, {} clients, durability {tag} ({sink_mode})",
                plan.small_clients
            ),
            tranche: format!("{t:.0}"),
            sink: format!("{s:.0}"),
            ratio: format!("{:.0} %", 100.0 * t / s),
            target: "≥ 60 % of sink".into(),
            verdict: pass(t >= 0.6 * s),
        });
        let (t_us, s_us) = (median(&t_cpu), median(&s_cpu));
        rows.push(Row {
            what: format!("    server CPU, durability {tag}: µs per PUT"),
            tranche: format!("{t_us:.0}"),
            sink: format!("{s_us:.0}"),
            ratio: format!("{:.1} ×", t_us / s_us),
            target: "(info)".into(),
            verdict: "",
        });
        let sha_us = sha * SMALL_CHUNK as f64 / GIB as f64 * 1e6;
        let (c_us, cores) = (median(&c_cpu), cores());
        rows.push(ceiling_row(
            format!("{cores} cores / (client {c_us:.0} + sink {s_us:.0} + SHA-256 {sha_us:.0} µs): PUT/s"),
            cpu_ceiling(c_us + s_us + sha_us) * 1e6,
            s,
        ));
    }
    Ok(rows)
}

/// One run of measurement 4; returns chunk PUTs per second.
async fn small_chunk_run(
    plan: &Plan,
    client: &reqwest::Client,
    server: &Server,
    payload: &Payload,
) -> Result<f64> {
    let per_client = plan.small_chunks / plan.small_clients;
    let upload_size = per_client * SMALL_CHUNK;
    ensure!(
        upload_size * plan.small_clients <= payload.len(),
        "payload too small for measurement 4"
    );
    // Each client its own upload over its own part of the payload.
    let mut uploads = Vec::new();
    for c in 0..plan.small_clients {
        let part = payload.slice(c * upload_size, upload_size);
        let created = create(client, server, &part, SMALL_CHUNK).await?;
        ensure!(
            created.chunk_size == SMALL_CHUNK,
            "{} chose a chunk size of {} instead of 256 KiB",
            server.name,
            created.chunk_size
        );
        uploads.push((created, part));
    }
    let started = Instant::now();
    let tasks: Vec<_> = uploads
        .iter()
        .map(|(created, part)| {
            let (client, server, created, part) = (
                client.clone(),
                server.clone(),
                created.clone(),
                part.clone(),
            );
            tokio::spawn(async move {
                for i in 0..created.chunk_count {
                    let body = part.bytes.slice(created.chunk_range(i, part.len()));
                    put_chunk(&client, &server, &created, i, body).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    for (created, _) in &uploads {
        complete(client, server, created).await?;
        server.remove_completed(&created.id);
    }
    Ok((per_client * plan.small_clients) as f64 / elapsed.as_secs_f64())
}

// ---------------------------------------------------------------------------
// The Redis state backend next to the embedded store
// ---------------------------------------------------------------------------

/// Runs `work` and returns its result with the CPU seconds that `server` and,
/// when given, the redis-server behind it used meanwhile.
async fn measure_cpu_with_redis<T>(
    server: &Server,
    redis: Option<&RedisServer>,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<(T, f64)> {
    let redis_cpu = || redis.map_or(Ok(Duration::ZERO), RedisServer::cpu);
    let before = server.cpu()? + redis_cpu()?;
    let out = work.await?;
    let after = server.cpu()? + redis_cpu()?;
    Ok((out, (after - before).as_secs_f64()))
}

/// [`http_client`], except that a connection idle for more than a second is
/// not used again. actix-web closes a connection after 5 s of keep-alive, and
/// a request sent on it at that moment fails ("connection closed before
/// message completed"); here a server's connections idle while the other
/// server runs, and a run with its complete can take longer than that.
/// Within a run, requests follow each other at once, so this costs only a
/// few loopback connects at the start of each run.
fn short_idle_client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(256)
        .pool_idle_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .build()?)
}

/// (1R) Measurement 1 with 4 streams, durability full, on a fresh tranche
/// with its state in Redis and a fresh one with the embedded store, each
/// warmed up first; runs alternate between the two. Redis is emptied before
/// each of its runs.
async fn redis_big_upload(
    plan: &Plan,
    tmp: &Path,
    redis: &RedisServer,
    payload: &Payload,
) -> Result<Vec<Row>> {
    const STREAMS: usize = 4;
    redis.flushall()?;
    let on_redis =
        Server::tranche_with_store(tmp, "tranche-big-redis", Durability::Full, Some(redis))?;
    let embedded = Server::tranche(tmp, "tranche-big-embedded", Durability::Full)?;
    let client = short_idle_client()?;
    warm_up(&client, &on_redis, &embedded, payload).await?;
    redis.ensure_used_by(&on_redis)?;
    let (mut r_rates, mut e_rates) = (Vec::new(), Vec::new());
    let (mut r_cpu, mut e_cpu) = (Vec::new(), Vec::new());
    let gib = payload.len() as f64 / GIB as f64;
    for rep in 0..plan.reps {
        redis.flushall()?;
        let (r, r_core_s) = measure_cpu_with_redis(
            &on_redis,
            Some(redis),
            upload(
                &client,
                &on_redis,
                payload,
                BIG_CHUNK,
                STREAMS,
                Order::InOrder,
            ),
        )
        .await?;
        let (e, e_core_s) = measure_cpu_with_redis(
            &embedded,
            None,
            upload(
                &client,
                &embedded,
                payload,
                BIG_CHUNK,
                STREAMS,
                Order::InOrder,
            ),
        )
        .await?;
        eprintln!(
            "  (1R) {STREAMS} streams, run {}: tranche+Redis {:.0} MB/s ({:.2} core-s/GiB with redis-server), tranche+embedded {:.0} MB/s ({:.2} core-s/GiB)",
            rep + 1,
            r.mb_per_s(payload.len()),
            r_core_s / gib,
            e.mb_per_s(payload.len()),
            e_core_s / gib,
        );
        r_rates.push(r.mb_per_s(payload.len()));
        e_rates.push(e.mb_per_s(payload.len()));
        r_cpu.push(r_core_s / gib);
        e_cpu.push(e_core_s / gib);
    }
    let (r, e) = (median(&r_rates), median(&e_rates));
    let (r_c, e_c) = (median(&r_cpu), median(&e_cpu));
    Ok(vec![
        Row {
            what: format!(
                "(1R) {} MiB upload, 8 MiB chunks, {STREAMS} streams, durability full: MB/s",
                payload.len() / MIB
            ),
            tranche: format!("{r:.0}"),
            sink: format!("{e:.0}"),
            ratio: format!("{:.0} %", 100.0 * r / e),
            target: "≥ 90 % of embedded".into(),
            verdict: pass(r >= 0.9 * e),
        },
        Row {
            what: "    server CPU (Redis: tranche + redis-server): core-seconds per GiB".into(),
            tranche: format!("{r_c:.2}"),
            sink: format!("{e_c:.2}"),
            ratio: format!("{:.1} ×", r_c / e_c),
            target: "(info)".into(),
            verdict: "",
        },
    ])
}

/// (4R) Measurement 4 (256 KiB chunk PUTs, 8 concurrent clients) on a fresh
/// tranche with its state in Redis and a fresh one with the embedded store, at
/// the same durability, full then relaxed; runs alternate between the two,
/// after a short unmeasured run on each. Redis is emptied before each of its
/// runs. With durability full, Redis must keep up with the embedded store
/// (≥ 90 %) at both.
async fn redis_small_chunk_rate(
    plan: &Plan,
    tmp: &Path,
    redis: &RedisServer,
    payload: &Payload,
) -> Result<Vec<Row>> {
    let warm = Plan {
        small_chunks: 4 * plan.small_clients,
        ..Plan::new(plan.quick)
    };
    let mut rows = Vec::new();
    for durability in [Durability::Full, Durability::Relaxed] {
        let tag = durability.name();
        redis.flushall()?;
        let on_redis = Server::tranche_with_store(
            tmp,
            &format!("tranche-small-redis-{tag}"),
            durability,
            Some(redis),
        )?;
        let embedded = Server::tranche(tmp, &format!("tranche-small-embedded-{tag}"), durability)?;
        let client = short_idle_client()?;
        for server in [&on_redis, &embedded] {
            small_chunk_run(&warm, &client, server, payload).await?;
        }
        redis.ensure_used_by(&on_redis)?;
        let (mut r_rates, mut e_rates) = (Vec::new(), Vec::new());
        let (mut r_cpu, mut e_cpu) = (Vec::new(), Vec::new());
        let puts = (plan.small_chunks / plan.small_clients * plan.small_clients) as f64;
        for rep in 0..plan.reps {
            redis.flushall()?;
            let (r, r_core_s) = measure_cpu_with_redis(
                &on_redis,
                Some(redis),
                small_chunk_run(plan, &client, &on_redis, payload),
            )
            .await?;
            let (e, e_core_s) = measure_cpu_with_redis(
                &embedded,
                None,
                small_chunk_run(plan, &client, &embedded, payload),
            )
            .await?;
            eprintln!(
                "  (4R) durability {tag}, run {}: tranche+Redis {r:.0} PUT/s ({:.0} µs CPU/PUT with redis-server), tranche+embedded {e:.0} PUT/s ({:.0} µs CPU/PUT)",
                rep + 1,
                r_core_s / puts * 1e6,
                e_core_s / puts * 1e6,
            );
            r_rates.push(r);
            e_rates.push(e);
            r_cpu.push(r_core_s / puts * 1e6);
            e_cpu.push(e_core_s / puts * 1e6);
        }
        let (r, e) = (median(&r_rates), median(&e_rates));
        let (target, verdict) = ("≥ 90 % of embedded".to_string(), pass(r >= 0.9 * e));
        rows.push(Row {
            what: format!(
                "(4R) 256 KiB PUT/s, {} clients, durability {tag}",
                plan.small_clients
            ),
            tranche: format!("{r:.0}"),
            sink: format!("{e:.0}"),
            ratio: format!("{:.0} %", 100.0 * r / e),
            target,
            verdict,
        });
        let (r, e) = (median(&r_cpu), median(&e_cpu));
        rows.push(Row {
            what: format!(
                "    server CPU (Redis: tranche + redis-server), durability {tag}: µs per PUT"
            ),
            tranche: format!("{r:.0}"),
            sink: format!("{e:.0}"),
            ratio: format!("{:.1} ×", r / e),
            target: "(info)".into(),
            verdict: "",
        });
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------
// The client: one upload, and its requests
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    InOrder,
    /// A fixed pseudo-random permutation (seeded, so every run sends the same).
    Shuffled,
}

struct UploadTiming {
    /// From before create to complete's 200.
    total: Duration,
    /// From the last chunk PUT's 200 to complete's 200.
    complete_after_last_chunk: Duration,
}

impl UploadTiming {
    fn mb_per_s(&self, bytes: u64) -> f64 {
        bytes as f64 / self.total.as_secs_f64() / 1e6
    }
}

/// Uploads `payload` whole: create, chunk PUTs over `streams` connections
/// pulling from one queue of chunk indexes, complete. The file's SHA-256 is
/// announced at create, so tranche verifies the whole file; complete's answer
/// must carry that digest. The completed file is removed afterwards so that
/// the disk does not fill up over the run.
async fn upload(
    client: &reqwest::Client,
    server: &Server,
    payload: &Payload,
    chunk_size: u64,
    streams: usize,
    order: Order,
) -> Result<UploadTiming> {
    let started = Instant::now();
    let created = create(client, server, payload, chunk_size).await?;
    let mut indexes: Vec<u64> = (0..created.chunk_count).collect();
    if order == Order::Shuffled {
        indexes.shuffle(&mut rand::rngs::StdRng::seed_from_u64(7));
    }
    let indexes = Arc::new(indexes);
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..streams)
        .map(|_| {
            let (client, server, created) = (client.clone(), server.clone(), created.clone());
            let (indexes, next, payload) = (indexes.clone(), next.clone(), payload.clone());
            tokio::spawn(async move {
                let mut last_done = None;
                // Bounded: each turn takes a distinct index until the queue is empty.
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&i) = indexes.get(k) else { break };
                    let body = payload.bytes.slice(created.chunk_range(i, payload.len()));
                    put_chunk(&client, &server, &created, i, body).await?;
                    last_done = Some(Instant::now());
                }
                anyhow::Ok(last_done)
            })
        })
        .collect();
    let mut last_chunk_done = started;
    for task in tasks {
        if let Some(at) = task.await?? {
            last_chunk_done = last_chunk_done.max(at);
        }
    }
    let answer = complete(client, server, &created).await?;
    let done = Instant::now();
    if server.kind == Kind::Tranche {
        let got = answer["file"]["sha256"].as_str().unwrap_or("<missing>");
        ensure!(
            got == payload.sha256,
            "tranche completed upload {} with file.sha256 {got}, but the payload's SHA-256 is {}",
            created.id,
            payload.sha256
        );
    }
    server.remove_completed(&created.id);
    Ok(UploadTiming {
        total: done - started,
        complete_after_last_chunk: done - last_chunk_done,
    })
}

/// What create answered.
#[derive(Debug, Clone)]
struct Created {
    id: String,
    chunk_size: u64,
    chunk_count: u64,
}

impl Created {
    /// Byte range of chunk `i` in a file of `size` bytes.
    fn chunk_range(&self, i: u64, size: u64) -> std::ops::Range<usize> {
        let start = i * self.chunk_size;
        start as usize..(start + self.chunk_size).min(size) as usize
    }
}

async fn create(
    client: &reqwest::Client,
    server: &Server,
    payload: &Payload,
    chunk_size: u64,
) -> Result<Created> {
    let resp = client
        .post(format!("{}/api/v1/uploads", server.base))
        .json(&json!({
            "filename": "bench.bin",
            "size": payload.len(),
            "content_type": "application/octet-stream",
            "sha256": payload.sha256,
            "chunk_size": chunk_size,
        }))
        .send()
        .await?;
    let v = json_answer(resp, "create", server).await?;
    let field = |name: &str| {
        v[name]
            .as_u64()
            .with_context(|| format!("create answer lacks {name}: {v}"))
    };
    let created = Created {
        id: v["id"]
            .as_str()
            .context("create answer lacks id")?
            .to_string(),
        chunk_size: field("chunk_size")?,
        chunk_count: field("chunk_count")?,
    };
    ensure!(
        created.chunk_count == payload.len().div_ceil(created.chunk_size).max(1),
        "{}: chunk_count {} does not match size {} / chunk_size {}",
        server.name,
        created.chunk_count,
        payload.len(),
        created.chunk_size
    );
    Ok(created)
}

async fn put_chunk(
    client: &reqwest::Client,
    server: &Server,
    created: &Created,
    i: u64,
    body: Bytes,
) -> Result<()> {
    let resp = client
        .put(format!(
            "{}/api/v1/uploads/{}/chunks/{i}",
            server.base, created.id
        ))
        .body(body)
        .send()
        .await?;
    json_answer(resp, &format!("PUT chunk {i}"), server).await?;
    Ok(())
}

/// Completes an upload and returns the final upload object. A 202 (assembly
/// slower than the server's wait) is followed by polling the status.
async fn complete(client: &reqwest::Client, server: &Server, created: &Created) -> Result<Value> {
    let url = format!("{}/api/v1/uploads/{}", server.base, created.id);
    let resp = client.post(format!("{url}/complete")).send().await?;
    if resp.status() != reqwest::StatusCode::ACCEPTED {
        return json_answer(resp, "complete", server).await;
    }
    let deadline = Instant::now() + COMPLETE_TIMEOUT;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let v = json_answer(client.get(&url).send().await?, "status", server).await?;
        match v["status"].as_str() {
            Some("assembling") => continue,
            Some("completed") => return Ok(v),
            other => bail!(
                "{}: upload {} ended as {other:?}: {v}",
                server.name,
                created.id
            ),
        }
    }
    bail!(
        "{}: upload {} still assembling after {COMPLETE_TIMEOUT:?}",
        server.name,
        created.id
    )
}

/// The JSON body of a 2xx answer; anything else is an error naming the request.
async fn json_answer(resp: reqwest::Response, what: &str, server: &Server) -> Result<Value> {
    let status = resp.status();
    let text = resp.text().await?;
    ensure!(
        status.is_success(),
        "{}: {what} answered {status}: {text}",
        server.name
    );
    serde_json::from_str(&text)
        .with_context(|| format!("{}: {what} answered non-JSON: {text}", server.name))
}

fn http_client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        // Loopback only: never go through an HTTP proxy from the environment.
        .no_proxy()
        .pool_max_idle_per_host(256)
        // actix-web closes a connection after 5 s idle; a pooled connection
        // reused at that moment fails. Runs alternate between servers, so
        // one server's connections can sit idle that long.
        .pool_idle_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .build()?)
}

// ---------------------------------------------------------------------------
// The test payload
// ---------------------------------------------------------------------------

/// The bytes to upload and their SHA-256. Chunks are slices of one `Bytes`, so
/// handing a chunk body to reqwest costs a reference count, not a copy.
#[derive(Clone)]
struct Payload {
    bytes: Bytes,
    sha256: String,
}

impl Payload {
    /// A fixed 8 MiB pseudo-random block repeated, with each 256 KiB piece's
    /// offset written into its first 8 bytes, so that no two chunks are equal
    /// for any chunk size from 256 KiB up.
    fn generate(size: u64) -> Payload {
        let mut block = vec![0u8; BIG_CHUNK as usize];
        rand::rngs::StdRng::seed_from_u64(0x0074_7261_6e63_6865).fill_bytes(&mut block);
        let mut bytes = BytesMut::with_capacity(size as usize);
        while (bytes.len() as u64) < size {
            let take = (size as usize - bytes.len()).min(block.len());
            bytes.extend_from_slice(&block[..take]);
        }
        for offset in (0..size).step_by(SMALL_CHUNK as usize) {
            let at = offset as usize;
            let end = (at + 8).min(size as usize);
            bytes[at..end].copy_from_slice(&offset.to_le_bytes()[..end - at]);
        }
        Payload::new(bytes.freeze())
    }

    fn new(bytes: Bytes) -> Payload {
        let sha256 = hex::encode(Sha256::digest(&bytes));
        Payload { bytes, sha256 }
    }

    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn slice(&self, start: u64, len: u64) -> Payload {
        Payload::new(self.bytes.slice(start as usize..(start + len) as usize))
    }

    fn prefix(&self, len: u64) -> Payload {
        self.slice(0, len.min(self.len()))
    }
}

// ---------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// tranche: durability = full; sink: fdatasync after every chunk.
    Full,
    /// tranche: durability = relaxed; sink: no fsync.
    Relaxed,
}

impl Durability {
    fn name(self) -> &'static str {
        match self {
            Durability::Full => "full",
            Durability::Relaxed => "relaxed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tranche,
    Sink,
}

/// A server child process. Cloning shares the process; the last clone to drop
/// kills it (also when unwinding from a panic) and removes its data directory.
#[derive(Clone)]
struct Server {
    name: String,
    kind: Kind,
    base: String,
    data_dir: PathBuf,
    process: Arc<ChildGuard>,
}

struct ChildGuard {
    child: Mutex<Child>,
    pid: u32,
    data_dir: PathBuf,
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Resident memory of a process, from /proc/<pid>/status.
struct Memory {
    rss: u64,
    /// High-water mark of the RSS since the process started.
    hwm: u64,
}

impl Server {
    /// Starts the release `tranche` binary with an empty config file (so that a
    /// `./config.toml` is not picked up) and settings from the environment only.
    fn tranche(tmp: &Path, name: &str, durability: Durability) -> Result<Server> {
        Server::tranche_with_store(tmp, name, durability, None)
    }

    /// As [`Server::tranche`]; with `redis`, the state lives there under the key
    /// prefix `bench:<name>:` instead of in the embedded store (chunks and
    /// files stay in the data directory either way).
    fn tranche_with_store(
        tmp: &Path,
        name: &str,
        durability: Durability,
        redis: Option<&RedisServer>,
    ) -> Result<Server> {
        Server::tranche_configured(tmp, name, durability, redis, "")
    }

    /// As [`Server::tranche_with_store`], with `config` as its config file
    /// (for what only the file can set, such as event sinks).
    fn tranche_configured(
        tmp: &Path,
        name: &str,
        durability: Durability,
        redis: Option<&RedisServer>,
        config: &str,
    ) -> Result<Server> {
        let data_dir = tmp.join(name);
        std::fs::create_dir_all(&data_dir)?;
        let config_text = config;
        let config = tmp.join(format!("{name}.toml"));
        std::fs::write(&config, config_text)?;
        let port = free_port()?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tranche"));
        cmd.arg("serve")
            .arg("--bind")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--config")
            .arg(&config);
        // Only the settings chosen here, none inherited from the caller's shell.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TRANCHE_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("TRANCHE_DURABILITY", durability.name())
            .env("TRANCHE_MAX_FILE_SIZE", "2GiB")
            .env("TRANCHE_CHUNK_SIZE", "8MiB")
            .env("TRANCHE_MIN_CHUNK_SIZE", "256KiB")
            .env("TRANCHE_SERVE_STATIC", "false")
            .env("TRANCHE_LOG__LEVEL", "warn")
            // Every run sends the same payload with its sha256: with dedup,
            // runs after the first would complete at create, sending nothing.
            .env("TRANCHE_DEDUP", "off")
            .env_remove("RUST_LOG");
        if let Some(redis) = redis {
            cmd.env("TRANCHE_STORE__TYPE", "redis")
                .env("TRANCHE_STORE__URL", redis.url())
                .env("TRANCHE_STORE__KEY_PREFIX", format!("bench:{name}:"));
        }
        Server::spawn(name, Kind::Tranche, cmd, port, data_dir)
    }

    /// Starts this bench binary again as the sink server.
    fn sink(tmp: &Path, name: &str, durability: Durability) -> Result<Server> {
        let data_dir = tmp.join(name);
        std::fs::create_dir_all(&data_dir)?;
        let port = free_port()?;
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("--sink")
            .arg(format!("127.0.0.1:{port}"))
            .arg(&data_dir)
            .arg(durability.name());
        Server::spawn(name, Kind::Sink, cmd, port, data_dir)
    }

    fn spawn(
        name: &str,
        kind: Kind,
        mut cmd: Command,
        port: u16,
        data_dir: PathBuf,
    ) -> Result<Server> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Warnings and errors of the servers show up in the bench's output.
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {name}: {cmd:?}"))?;
        let pid = child.id();
        let server = Server {
            name: name.to_string(),
            kind,
            base: format!("http://127.0.0.1:{port}"),
            data_dir: data_dir.clone(),
            process: Arc::new(ChildGuard {
                child: Mutex::new(child),
                pid,
                data_dir,
            }),
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// Polls /healthz until it answers, the process dies, or time is up.
    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let url = format!("{}/healthz", self.base);
        loop {
            if let Some(status) = self.process.child.lock().unwrap().try_wait()? {
                bail!("{} exited during start-up with {status}", self.name);
            }
            if healthz_ok(&url) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not answer {url} within {STARTUP_TIMEOUT:?}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn memory(&self) -> Result<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.pid))?;
        let field = |name: &str| -> Result<u64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .with_context(|| format!("no {name} in /proc/{}/status", self.process.pid))?;
            let kib: u64 = line[name.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()?;
            Ok(kib * KIB)
        };
        Ok(Memory {
            rss: field("VmRSS:")?,
            hwm: field("VmHWM:")?,
        })
    }

    /// CPU time the process has used so far, all threads, user + system
    /// (/proc/<pid>/stat counts in USER_HZ ticks, 100 per second on Linux).
    fn cpu(&self) -> Result<Duration> {
        process_cpu(self.process.pid)
    }

    /// Deletes a completed upload's file, outside any timed section, so that a
    /// run's many GiB do not pile up on disk. tranche keeps completed files at
    /// `files/<ab>/<cd>/<id without dashes>`, the sink at `<id>.bin`.
    fn remove_completed(&self, id: &str) {
        let path = match self.kind {
            Kind::Tranche => {
                let hex: String = id.chars().filter(|c| *c != '-').collect();
                if hex.len() < 4 {
                    return;
                }
                self.data_dir
                    .join("files")
                    .join(&hex[0..2])
                    .join(&hex[2..4])
                    .join(&hex)
            }
            Kind::Sink => self.data_dir.join(format!("{id}.bin")),
        };
        let _ = std::fs::remove_file(path);
    }
}

/// The bench's own redis-server: no persistence, loopback only, on a free
/// port. Its [`ChildGuard`] kills it and removes its directory on drop (also
/// when unwinding from a panic).
struct RedisServer {
    port: u16,
    process: ChildGuard,
}

impl RedisServer {
    /// Starts `redis-server` (or `$REDIS_SERVER`) with its log in its own
    /// directory, and waits until it answers PING.
    fn start(tmp: &Path, name: &str) -> Result<RedisServer> {
        let program = std::env::var_os("REDIS_SERVER").unwrap_or_else(|| "redis-server".into());
        let data_dir = tmp.join(name);
        std::fs::create_dir_all(&data_dir)?;
        let log = data_dir.join("redis.log");
        let port = free_port()?;
        let mut cmd = Command::new(&program);
        cmd.args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .arg("--port")
            .arg(port.to_string())
            .arg("--dir")
            .arg(&data_dir)
            .arg("--logfile")
            .arg(&log)
            .args(["--loglevel", "warning"]);
        let child = match cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "cannot start {program:?}: not found. The Redis rows of this bench need \
                 redis-server (Redis 7; e.g. `apt-get install redis-server`) on the PATH, \
                 or its path in REDIS_SERVER"
            ),
            Err(e) => return Err(e).with_context(|| format!("cannot start {cmd:?}")),
        };
        let redis = RedisServer {
            port,
            process: ChildGuard {
                pid: child.id(),
                child: Mutex::new(child),
                data_dir,
            },
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = redis.process.child.lock().unwrap().try_wait()? {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                let log = match log.trim_end() {
                    "" => " (empty)".to_string(),
                    text => format!("\n{text}"),
                };
                bail!("redis-server exited during start-up with {status}; its log:{log}");
            }
            if matches!(redis.command(&["PING"]), Ok(answer) if answer == "PONG") {
                return Ok(redis);
            }
            if Instant::now() >= deadline {
                bail!("redis-server did not answer PING on port {port} within {STARTUP_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Empties every database; tranche's loaded Lua scripts stay.
    fn flushall(&self) -> Result<()> {
        let answer = self.command(&["FLUSHALL"])?;
        ensure!(answer == "OK", "redis FLUSHALL answered {answer:?}");
        Ok(())
    }

    /// Fails unless Redis holds keys under `server`'s prefix, i.e. unless that
    /// tranche really keeps its state here (and did not, say, fall back to
    /// the embedded store because a setting's name changed).
    fn ensure_used_by(&self, server: &Server) -> Result<()> {
        let pattern = format!("bench:{}:*", server.name);
        let answer =
            self.command(&["EVAL", "return #redis.call('KEYS', ARGV[1])", "0", &pattern])?;
        ensure!(
            answer != "0",
            "{} stored no keys in Redis (none match {pattern}): is its state store really Redis?",
            server.name
        );
        Ok(())
    }

    fn version(&self) -> String {
        self.command(&["INFO", "server"])
            .ok()
            .and_then(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("redis_version:"))
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_else(|| "?".into())
    }

    fn cpu(&self) -> Result<Duration> {
        process_cpu(self.process.pid)
    }

    /// One command on a fresh blocking connection (only ever outside timed
    /// sections). Returns a simple string, integer or bulk string answer;
    /// an error answer is an error.
    fn command(&self, args: &[&str]) -> Result<String> {
        use std::io::{BufRead, BufReader, Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut request = format!("*{}\r\n", args.len());
        for a in args {
            request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        stream.write_all(request.as_bytes())?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end_matches("\r\n");
        let (kind, rest) = line.split_at(line.len().min(1));
        match kind {
            "+" | ":" => Ok(rest.to_string()),
            "-" => bail!("redis {args:?} answered an error: {rest}"),
            "$" => {
                let len: i64 = rest.parse()?;
                ensure!(len >= 0, "redis {args:?} answered nil");
                let mut body = vec![0u8; len as usize + 2];
                reader.read_exact(&mut body)?;
                body.truncate(len as usize);
                Ok(String::from_utf8_lossy(&body).into_owned())
            }
            _ => bail!("redis {args:?} answered something unexpected: {line:?}"),
        }
    }
}

/// A plain blocking GET (the client runtime is not needed for start-up).
fn healthz_ok(url: &str) -> bool {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let (host, path) = addr.split_once('/').unwrap_or((addr, ""));
    let Ok(mut stream) = std::net::TcpStream::connect(host) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

/// CPU time process `pid` has used so far, all threads, user + system
/// (/proc/<pid>/stat counts in USER_HZ ticks, 100 per second on Linux).
fn process_cpu(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat
        .rsplit_once(')')
        .context("malformed /proc/<pid>/stat")?
        .1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(Duration::from_millis(ticks * 10))
}

/// A port that was free a moment ago (the child binds it right after).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

// ---------------------------------------------------------------------------
// Reporting helpers
// ---------------------------------------------------------------------------

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

fn pass(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISSED"
    }
}

fn git_describe() -> String {
    Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into())
}

fn print_table(rows: &[Row]) {
    let header = Row {
        what: "measurement".into(),
        tranche: "tranche".into(),
        sink: "sink".into(),
        ratio: "tranche/sink".into(),
        target: "target".into(),
        verdict: "",
    };
    print_table_headed(rows, header);
}

/// A table whose columns `header` names (the `Row` fields keep their names).
fn print_table_headed(rows: &[Row], header: Row) {
    let width = |f: fn(&Row) -> &str| -> usize {
        rows.iter()
            .chain([&header])
            .map(|r| f(r).chars().count())
            .max()
            .unwrap_or(0)
    };
    let w = [
        width(|r| r.what.as_str()),
        width(|r| r.tranche.as_str()),
        width(|r| r.sink.as_str()),
        width(|r| r.ratio.as_str()),
        width(|r| r.target.as_str()),
    ];
    let line = |r: &Row| {
        format!(
            "| {:<w0$} | {:>w1$} | {:>w2$} | {:>w3$} | {:<w4$} | {:<6} |",
            r.what,
            r.tranche,
            r.sink,
            r.ratio,
            r.target,
            r.verdict,
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3],
            w4 = w[4],
        )
    };
    println!();
    println!("{}", line(&header));
    println!(
        "|{}|{}|{}|{}|{}|--------|",
        "-".repeat(w[0] + 2),
        "-".repeat(w[1] + 2),
        "-".repeat(w[2] + 2),
        "-".repeat(w[3] + 2),
        "-".repeat(w[4] + 2)
    );
    for r in rows {
        println!("{}", line(r));
    }
}

// ---------------------------------------------------------------------------
// The sink server
// ---------------------------------------------------------------------------

/// The baseline: accepts tranche's requests and does only what any upload
/// server must, writing each chunk at its offset in one file per upload (and
/// fdatasync'ing it when durable) — no state store, no hashing, no checks.
mod sink {
    use super::*;
    use actix_web::{web, App, HttpResponse, HttpServer};
    use futures::StreamExt;

    struct Upload {
        file: File,
        chunk_size: u64,
    }

    struct State {
        dir: PathBuf,
        fsync: bool,
        next_id: AtomicU64,
        uploads: Mutex<HashMap<String, Arc<Upload>>>,
    }

    /// `--sink ADDR DIR full|relaxed`
    pub fn main(args: &[String]) -> Result<()> {
        let [addr, dir, durability] = args else {
            bail!("usage: --sink ADDR DIR full|relaxed");
        };
        let state = web::Data::new(State {
            dir: PathBuf::from(dir),
            fsync: durability == "full",
            next_id: AtomicU64::new(1),
            uploads: Mutex::default(),
        });
        actix_web::rt::System::new().block_on(async move {
            HttpServer::new(move || {
                App::new()
                    .app_data(state.clone())
                    .route(
                        "/healthz",
                        web::get().to(|| async { HttpResponse::Ok().finish() }),
                    )
                    .route("/api/v1/uploads", web::post().to(create))
                    .route(
                        "/api/v1/uploads/{id}/chunks/{index}",
                        web::put().to(put_chunk),
                    )
                    .route("/api/v1/uploads/{id}/complete", web::post().to(complete))
            })
            // One worker per core, like tranche's default.
            .workers(std::thread::available_parallelism().map_or(2, |n| n.get()))
            .bind(addr.as_str())?
            .run()
            .await
        })?;
        Ok(())
    }

    async fn create(
        state: web::Data<State>,
        req: web::Json<Value>,
    ) -> actix_web::Result<HttpResponse> {
        let size = req["size"].as_u64().unwrap_or(0);
        let chunk_size = req["chunk_size"].as_u64().unwrap_or(BIG_CHUNK).max(1);
        let id = format!("sink-{}", state.next_id.fetch_add(1, Ordering::Relaxed));
        let file = File::create(state.dir.join(format!("{id}.bin")))?;
        let upload = Arc::new(Upload { file, chunk_size });
        state.uploads.lock().unwrap().insert(id.clone(), upload);
        Ok(HttpResponse::Created().json(json!({
            "id": id, "size": size, "chunk_size": chunk_size,
            "chunk_count": size.div_ceil(chunk_size).max(1), "status": "uploading",
        })))
    }

    async fn put_chunk(
        state: web::Data<State>,
        path: web::Path<(String, u64)>,
        mut body: web::Payload,
    ) -> actix_web::Result<HttpResponse> {
        let (id, index) = path.into_inner();
        let upload = state.uploads.lock().unwrap().get(&id).cloned();
        let Some(upload) = upload else {
            return Ok(HttpResponse::NotFound().json(json!({"error": "upload_not_found"})));
        };
        // Each frame is written where it belongs as soon as it arrives: no
        // buffer of the sink's own, so its memory is actix-web's alone (the
        // floor for measurement 2), and a page-cache write of one frame (at
        // most actix's 128 KiB read buffer) is short enough to do inline.
        let mut offset = index * upload.chunk_size;
        let mut size = 0u64;
        while let Some(item) = body.next().await {
            let bytes = item?;
            upload.file.write_all_at(&bytes, offset)?;
            offset += bytes.len() as u64;
            size += bytes.len() as u64;
        }
        if state.fsync {
            // fdatasync waits for the disk: off the worker thread, so that the
            // worker's other connections keep going meanwhile.
            let upload = upload.clone();
            web::block(move || upload.file.sync_data()).await??;
        }
        Ok(HttpResponse::Ok().json(json!({"index": index, "size": size})))
    }

    async fn complete(state: web::Data<State>, path: web::Path<String>) -> HttpResponse {
        let id = path.into_inner();
        match state.uploads.lock().unwrap().remove(&id) {
            Some(_) => HttpResponse::Ok().json(json!({"id": id, "status": "completed"})),
            None => HttpResponse::NotFound().json(json!({"error": "upload_not_found"})),
        }
    }
}
