//! `tranche files delete ID` (deletes a completed file on the server) and
//! `tranche scrub` (has the server re-hash every completed file).

use super::api::Api;
use super::{describe, ClientError};
use crate::cli::{ClientArgs, FileDeleteArgs, ScrubArgs};

/// Retries said on stderr, unless `--quiet`.
fn retry_note(args: &ClientArgs) -> impl Fn(&ClientError, std::time::Duration) + Sync + '_ {
    move |e, d| {
        if !args.quiet {
            eprintln!(
                "tranche: {}; retrying in {:.1}s",
                describe(e),
                d.as_secs_f64()
            );
        }
    }
}

/// Exit 0 when every file matched (orphans are reported, not failed on),
/// 5 when one did not or a file's bytes are missing.
pub async fn scrub(args: ScrubArgs) -> u8 {
    let work = async {
        let api = Api::for_client(&args.client)?;
        api.scrub(args.bandwidth.map(|b| b.0), &retry_note(&args.client))
            .await
    };
    let report = match super::until_interrupted(work).await {
        Ok(report) => report,
        Err(e) => return super::fail(&args.client, &e),
    };
    if args.client.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        println!(
            "scrubbed  {} files ({})",
            report.files,
            indicatif::HumanBytes(report.bytes)
        );
        for m in &report.mismatches {
            println!(
                "MISMATCH  {}: recorded sha256 {}, bytes hash to {}",
                m.id, m.expected, m.actual
            );
        }
        for id in &report.missing {
            println!("MISSING   {id}: completed, but its bytes are not on disk");
        }
        for id in &report.orphans {
            println!("orphan    {id}: no record names this file");
        }
        println!(
            "{} mismatch(es), {} missing, {} orphan(s)",
            report.mismatches.len(),
            report.missing.len(),
            report.orphans.len()
        );
    }
    if report.mismatches.is_empty() && report.missing.is_empty() {
        0
    } else {
        ClientError::Verification(String::new()).exit_code()
    }
}

pub async fn delete(args: FileDeleteArgs) -> u8 {
    let work = async {
        let api = Api::for_client(&args.client)?;
        // DELETE is idempotent: a retry after a lost answer is harmless.
        api.delete_file(&args.id, &retry_note(&args.client)).await
    };
    match super::until_interrupted(work).await {
        Ok(()) => {
            if args.client.json {
                println!("{}", serde_json::json!({"id": args.id, "deleted": true}));
            } else {
                println!("deleted {}", args.id);
            }
            0
        }
        Err(e) => super::fail(&args.client, &e),
    }
}
