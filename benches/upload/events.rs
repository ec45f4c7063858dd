//! (6) Events (issue 11): measurement 4 (256 KiB chunk PUTs, 8 clients,
//! durability full) on a tranche with events on, a webhook and a Redis
//! stream, against a tranche with events off, in the same run; the rate with
//! events on must stay within 5 % of the rate with them off. The webhook is
//! answered by this binary started again with `--webhook` (a loopback
//! receiver answering 204, counting what it gets by event type); the stream
//! goes to the bench's redis-server. After the runs, every event must have
//! reached both sinks, and progress events must be coalesced (far fewer
//! than chunks).

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use super::{
    free_port, healthz_ok, measure_cpu, median, pass, short_idle_client, small_chunk_run,
    ChildGuard, Durability, Payload, Plan, RedisServer, Row, Server, STARTUP_TIMEOUT,
};

/// The stream the events-on tranche `XADD`s to.
const STREAM: &str = "bench:events";
/// How long the sinks may take to receive the last events after the runs.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn events_vs_off(
    plan: &Plan,
    tmp: &Path,
    redis: &RedisServer,
    payload: &Payload,
) -> Result<Vec<Row>> {
    let receiver = Receiver::start(tmp)?;
    let config = format!(
        "[events]\n\
         [[events.webhooks]]\n\
         url = \"{}/hook\"\n\
         secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n\
         [[events.streams]]\n\
         redis_url = \"{}\"\n\
         stream = \"{STREAM}\"\n",
        receiver.base,
        redis.url()
    );
    let on = Server::tranche_configured(tmp, "tranche-events-on", Durability::Full, None, &config)?;
    let off = Server::tranche(tmp, "tranche-events-off", Durability::Full)?;
    let client = short_idle_client()?;
    let warm = Plan {
        small_chunks: 4 * plan.small_clients,
        ..Plan::new(plan.quick)
    };
    for server in [&on, &off] {
        small_chunk_run(&warm, &client, server, payload).await?;
    }
    let puts = (plan.small_chunks / plan.small_clients * plan.small_clients) as f64;
    let (mut on_rates, mut off_rates) = (Vec::new(), Vec::new());
    let (mut on_cpu, mut off_cpu) = (Vec::new(), Vec::new());
    for rep in 0..plan.reps {
        // Which goes first alternates, so that neither always runs right
        // after the other's burst of disk writes.
        let mut runs = Vec::new();
        for server in if rep % 2 == 0 {
            [&on, &off]
        } else {
            [&off, &on]
        } {
            runs.push(measure_cpu(server, small_chunk_run(plan, &client, server, payload)).await?);
        }
        if rep % 2 == 1 {
            runs.reverse();
        }
        let [(r_on, on_core_s), (r_off, off_core_s)] = runs[..] else {
            unreachable!("two runs");
        };
        eprintln!(
            "  (6) run {}: events on {r_on:.0} PUT/s ({:.0} µs CPU/PUT), events off {r_off:.0} PUT/s ({:.0} µs CPU/PUT)",
            rep + 1,
            on_core_s / puts * 1e6,
            off_core_s / puts * 1e6,
        );
        on_rates.push(r_on);
        off_rates.push(r_off);
        on_cpu.push(on_core_s / puts * 1e6);
        off_cpu.push(off_core_s / puts * 1e6);
    }

    // Every upload of the runs (and of the warm-up) was created and
    // completed: both sinks must get those events, and few progress events.
    let uploads = (plan.reps as u64 + 1) * plan.small_clients;
    let all_puts = puts as u64 * plan.reps as u64 + warm.small_chunks;
    let counts = receiver
        .wait_for(&client, "upload.completed", uploads)
        .await?;
    let hook_total: u64 = counts.values().sum();
    let progress = counts.get("upload.progress").copied().unwrap_or(0);
    ensure!(
        counts.get("upload.created").copied().unwrap_or(0) >= uploads,
        "the webhook got {counts:?}, fewer than {uploads} upload.created"
    );
    ensure!(
        progress * 4 < all_puts,
        "{progress} upload.progress for {all_puts} chunk PUTs: progress is not coalesced"
    );
    let streamed: u64 = redis.command(&["XLEN", STREAM])?.parse()?;
    ensure!(
        streamed >= hook_total,
        "the stream {STREAM} holds {streamed} events, the webhook got {hook_total}"
    );
    eprintln!(
        "  (6) delivered: {hook_total} events to the webhook ({progress} upload.progress for {all_puts} chunk PUTs), {streamed} to the stream"
    );

    let (r_on, r_off) = (median(&on_rates), median(&off_rates));
    let (c_on, c_off) = (median(&on_cpu), median(&off_cpu));
    Ok(vec![
        Row {
            what: format!(
                "(6) 256 KiB PUT/s, {} clients, durability full, webhook + stream",
                plan.small_clients
            ),
            tranche: format!("{r_on:.0}"),
            sink: format!("{r_off:.0}"),
            ratio: format!("{:.0} %", 100.0 * r_on / r_off),
            target: "≥ 95 % of events off".into(),
            verdict: pass(r_on >= 0.95 * r_off),
        },
        Row {
            what: "    server CPU, events on vs off: µs per PUT".into(),
            tranche: format!("{c_on:.0}"),
            sink: format!("{c_off:.0}"),
            ratio: format!("{:.2} ×", c_on / c_off),
            target: "(info)".into(),
            verdict: "",
        },
    ])
}

/// The webhook receiver, a child process (this binary with `--webhook`).
struct Receiver {
    base: String,
    _process: ChildGuard,
}

impl Receiver {
    fn start(tmp: &Path) -> Result<Receiver> {
        let port = free_port()?;
        let data_dir = tmp.join("webhook");
        std::fs::create_dir_all(&data_dir)?;
        let child = Command::new(std::env::current_exe()?)
            .arg("--webhook")
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the webhook receiver")?;
        let receiver = Receiver {
            base: format!("http://127.0.0.1:{port}"),
            _process: ChildGuard {
                pid: child.id(),
                child: Mutex::new(child),
                data_dir,
            },
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while !healthz_ok(&format!("{}/healthz", receiver.base)) {
            if Instant::now() >= deadline {
                bail!("the webhook receiver did not start within {STARTUP_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(receiver)
    }

    /// What it received so far, by event type.
    async fn counts(&self, client: &reqwest::Client) -> Result<HashMap<String, u64>> {
        let answer: Value = client
            .get(format!("{}/counts", self.base))
            .send()
            .await?
            .json()
            .await?;
        Ok(serde_json::from_value(answer)?)
    }

    /// Polls until `kind` was received at least `n` times (bounded).
    async fn wait_for(
        &self,
        client: &reqwest::Client,
        kind: &str,
        n: u64,
    ) -> Result<HashMap<String, u64>> {
        let deadline = Instant::now() + DELIVERY_TIMEOUT;
        loop {
            let counts = self.counts(client).await?;
            if counts.get(kind).copied().unwrap_or(0) >= n {
                return Ok(counts);
            }
            if Instant::now() >= deadline {
                bail!(
                    "the webhook got {counts:?} within {DELIVERY_TIMEOUT:?}, expected {n} {kind}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `--webhook ADDR`: answers every POST 204 and counts its event by type;
/// `GET /counts` gives the counts.
pub fn receiver_main(args: &[String]) -> Result<()> {
    use actix_web::{web, App, HttpResponse, HttpServer};
    let [addr] = args else {
        bail!("usage: --webhook ADDR");
    };
    type Counts = Arc<Mutex<HashMap<String, u64>>>;
    let counts: Counts = Arc::default();
    let counts = web::Data::new(counts);
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            App::new()
                .app_data(counts.clone())
                .route(
                    "/healthz",
                    web::get().to(|| async { HttpResponse::Ok().finish() }),
                )
                .route(
                    "/hook",
                    web::post().to(|counts: web::Data<Counts>, body: web::Bytes| async move {
                        let kind = serde_json::from_slice::<Value>(&body)
                            .ok()
                            .and_then(|v| v["type"].as_str().map(str::to_owned))
                            .unwrap_or_else(|| "?".into());
                        *counts.lock().unwrap().entry(kind).or_default() += 1;
                        HttpResponse::NoContent().finish()
                    }),
                )
                .route(
                    "/counts",
                    web::get().to(|counts: web::Data<Counts>| async move {
                        let counts = counts.lock().unwrap().clone();
                        HttpResponse::Ok().json(counts)
                    }),
                )
        })
        .workers(1)
        .bind(addr.as_str())?
        .run()
        .await
    })?;
    Ok(())
}
