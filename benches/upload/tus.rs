//! (5) tus against API v1 on the same server: one big upload in 8 MiB
//! PATCHes (the tus client's way: one request after the other, in order)
//! next to the same upload in 8 MiB chunks over one stream, alternating so
//! that the machine's drift affects both alike; and the peak RSS of a fresh
//! tranche with 100 PATCHes of 8 MiB in flight, next to measurement (2).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use super::{
    http_client, json_answer, measure_cpu, median, mib, pass, upload, Durability, Order, Payload,
    Row, Server, BIG_CHUNK, COMPLETE_TIMEOUT, GIB, MIB,
};

pub async fn tus_vs_v1(
    reps: usize,
    client: &reqwest::Client,
    tranche: &Server,
    payload: &Payload,
) -> Result<Vec<Row>> {
    let (mut tus_rates, mut v1_rates) = (Vec::new(), Vec::new());
    let (mut tus_cpu, mut v1_cpu) = (Vec::new(), Vec::new());
    let gib = payload.len() as f64 / GIB as f64;
    for rep in 0..reps {
        // Each goes first in every other run: the one that follows another
        // upload shares the disk with that upload's write-back.
        let tus_first = rep % 2 == 0;
        let mut v1_run = None;
        if !tus_first {
            v1_run = Some(
                measure_cpu(
                    tranche,
                    upload(client, tranche, payload, BIG_CHUNK, 1, Order::InOrder),
                )
                .await?,
            );
        }
        let (tus, tus_core_s) =
            measure_cpu(tranche, tus_upload(client, tranche, payload, BIG_CHUNK)).await?;
        let (v1, v1_core_s) = match v1_run {
            Some(run) => run,
            None => {
                measure_cpu(
                    tranche,
                    upload(client, tranche, payload, BIG_CHUNK, 1, Order::InOrder),
                )
                .await?
            }
        };
        let (tus, v1) = (
            payload.len() as f64 / tus.as_secs_f64() / 1e6,
            v1.mb_per_s(payload.len()),
        );
        eprintln!(
            "  (5) run {}: tus {tus:.0} MB/s ({:.2} core-s/GiB), API v1 {v1:.0} MB/s ({:.2} core-s/GiB)",
            rep + 1,
            tus_core_s / gib,
            v1_core_s / gib
        );
        tus_rates.push(tus);
        v1_rates.push(v1);
        tus_cpu.push(tus_core_s / gib);
        v1_cpu.push(v1_core_s / gib);
    }
    let (t, v) = (median(&tus_rates), median(&v1_rates));
    let (tc, vc) = (median(&tus_cpu), median(&v1_cpu));
    Ok(vec![
        Row {
            what: format!(
                "(5) {} MiB upload, 8 MiB tus PATCHes vs API v1 chunks, 1 stream: MB/s",
                payload.len() / MIB
            ),
            tranche: format!("{t:.0}"),
            sink: format!("{v:.0} (v1)"),
            ratio: format!("{:.0} %", 100.0 * t / v),
            target: "≥ 90 % of v1".into(),
            verdict: pass(t >= 0.9 * v),
        },
        Row {
            what: "    server CPU, tus vs API v1: core-seconds per GiB".into(),
            tranche: format!("{tc:.2}"),
            sink: format!("{vc:.2} (v1)"),
            ratio: format!("{:.2} ×", tc / vc),
            target: "(info)".into(),
            verdict: "",
        },
    ])
}

/// Uploads `payload` through tus in PATCHes of `patch` bytes, one after the
/// other, and checks the SHA-256 the server computed. Returns the time from
/// the creation to the upload's completion.
async fn tus_upload(
    client: &reqwest::Client,
    server: &Server,
    payload: &Payload,
    patch: u64,
) -> Result<Duration> {
    let started = Instant::now();
    let url = tus_create(client, server, payload.len()).await?;
    let mut offset = 0;
    while offset < payload.len() {
        let end = (offset + patch).min(payload.len());
        let resp = client
            .patch(&url)
            .header("tus-resumable", "1.0.0")
            .header("upload-offset", offset)
            .header("content-type", "application/offset+octet-stream")
            .body(payload.bytes.slice(offset as usize..end as usize))
            .send()
            .await?;
        ensure!(
            resp.status() == reqwest::StatusCode::NO_CONTENT,
            "{}: PATCH at {offset} answered {}: {}",
            server.name,
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
        offset = end;
    }
    let id = url.rsplit('/').next().context("Location without an id")?;
    let done = completed(client, server, id).await?;
    let elapsed = started.elapsed();
    let got = done["file"]["sha256"].as_str().unwrap_or("<missing>");
    ensure!(
        got == payload.sha256,
        "tus upload {id} completed with file.sha256 {got}, not {}",
        payload.sha256
    );
    server.remove_completed(id);
    Ok(elapsed)
}

async fn tus_create(client: &reqwest::Client, server: &Server, len: u64) -> Result<String> {
    let resp = client
        .post(format!("{}/files/", server.base))
        .header("tus-resumable", "1.0.0")
        .header("upload-length", len)
        .header("upload-metadata", "filename YmVuY2guYmlu")
        .send()
        .await?;
    ensure!(
        resp.status() == reqwest::StatusCode::CREATED,
        "{}: tus creation answered {}",
        server.name,
        resp.status()
    );
    let location = resp.headers()["location"].to_str()?.to_owned();
    Ok(if location.starts_with('/') {
        format!("{}{location}", server.base)
    } else {
        location
    })
}

/// The upload object once completed (the last PATCH waits for the assembly,
/// up to the server's `complete_wait`; past it, poll).
async fn completed(client: &reqwest::Client, server: &Server, id: &str) -> Result<Value> {
    let url = format!("{}/api/v1/uploads/{id}", server.base);
    let deadline = Instant::now() + COMPLETE_TIMEOUT;
    while Instant::now() < deadline {
        let v = json_answer(client.get(&url).send().await?, "status", server).await?;
        match v["status"].as_str() {
            Some("completed") => return Ok(v),
            Some("assembling") => tokio::time::sleep(Duration::from_millis(5)).await,
            other => bail!("{}: tus upload {id} ended as {other:?}: {v}", server.name),
        }
    }
    bail!("{}: tus upload {id} still assembling", server.name)
}

/// (5) Peak RSS of a fresh tranche while 100 tus PATCHes of 8 MiB are in
/// flight at once (100 uploads of one PATCH each, all created first).
pub async fn tus_peak_rss(tmp: &Path, payload: &Payload) -> Result<Vec<Row>> {
    const IN_FLIGHT: usize = 100;
    let server = Server::tranche(tmp, "tranche-tus-rss", Durability::Full)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = http_client()?;
    let body = payload.prefix(BIG_CHUNK);
    let mut urls = Vec::new();
    for _ in 0..IN_FLIGHT {
        urls.push(tus_create(&client, &server, body.len()).await?);
    }
    let patches = urls.iter().map(|url| {
        client
            .patch(url)
            .header("tus-resumable", "1.0.0")
            .header("upload-offset", 0)
            .header("content-type", "application/offset+octet-stream")
            .body(body.bytes.clone())
            .send()
    });
    for resp in futures::future::try_join_all(patches).await? {
        ensure!(
            resp.status() == reqwest::StatusCode::NO_CONTENT,
            "PATCH answered {}",
            resp.status()
        );
    }
    let after = server.memory()?;
    eprintln!(
        "  (5) tus: after 100 PATCHes peak RSS {:.1} MiB",
        mib(after.hwm)
    );
    Ok(vec![Row {
        what: "(5) peak RSS (VmHWM), 100 × 8 MiB tus PATCHes in flight: MiB".into(),
        tranche: format!("{:.1}", mib(after.hwm)),
        sink: String::new(),
        ratio: String::new(),
        target: "as (2)".into(),
        verdict: "",
    }])
}
