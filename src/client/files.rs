//! `tranche files delete ID`: deletes a completed file on the server.

use super::api::Api;
use super::{describe, ClientError};
use crate::cli::FileDeleteArgs;

pub async fn delete(args: FileDeleteArgs) -> u8 {
    let work = async {
        let api = Api::new(
            &args.client.server,
            args.client.token.clone(),
            args.client.retries,
        )?;
        let on_retry = |e: &ClientError, d: std::time::Duration| {
            if !args.client.quiet {
                eprintln!(
                    "tranche: {}; retrying in {:.1}s",
                    describe(e),
                    d.as_secs_f64()
                );
            }
        };
        // DELETE is idempotent: a retry after a lost answer is harmless.
        api.delete_file(&args.id, &on_retry).await
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
