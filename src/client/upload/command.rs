//! `tranche upload` as a command: the preflight, every file in turn, and
//! what is reported (text, or one `--json` document, also on Ctrl-C with the
//! command that resumes).

use std::time::Duration;

use super::{upload_file, Live, UploadOptions};
use crate::cli::UploadArgs;
use crate::client::api::Api;
use crate::client::progress::Progress;
use crate::client::resume::{FileKey, StateDir};
use crate::client::{describe, ClientError};

/// Reaches the server once before any file is hashed (which takes a while
/// for a big one): an unreachable server or a credential it refuses is
/// reported at once. It reads the service document, `GET /api/v1`, which
/// checks a credential sent along (401 when it is not valid) and says
/// whether one is needed.
async fn preflight(api: &Api, progress: &Progress) -> Result<(), ClientError> {
    let on_retry = |e: &ClientError, delay: Duration| {
        progress.note(&format!(
            "{}; retrying in {:.1}s",
            describe(e),
            delay.as_secs_f64()
        ))
    };
    match api.service(&on_retry).await {
        Ok(doc) if doc.auth.required && doc.auth.credential == "none" => Err(ClientError::Server {
            status: 401,
            code: "unauthorized".into(),
            message: "this server needs a credential: --token or TRANCHE_TOKEN (an API key \
                          or a create token)"
                .into(),
            retry_after: None,
        }),
        Ok(_) => Ok(()),
        Err(e @ ClientError::Server { status: 401, .. }) => Err(e),
        Err(e @ ClientError::Server { status: 500.., .. }) => Err(e),
        Err(e @ ClientError::Network(_)) => Err(e),
        // A server from before the service document: the uploads will tell.
        Err(_) => Ok(()),
    }
}

/// The command line that resumes this run, for a script to keep: this
/// process's arguments, quoted for a POSIX shell, with a `--token` given on
/// the command line replaced by `"$TRANCHE_TOKEN"` (a secret does not belong
/// in a report).
pub fn resume_command() -> String {
    let mut out = Vec::new();
    let mut args = std::env::args();
    let mut hide_next = false;
    if let Some(program) = args.next() {
        out.push(shell_quote(&program));
    }
    for arg in args {
        if hide_next {
            out.push("\"$TRANCHE_TOKEN\"".to_owned());
            hide_next = false;
        } else if arg == "--token" {
            out.push(arg);
            hide_next = true;
        } else if arg.starts_with("--token=") {
            out.push("--token=\"$TRANCHE_TOKEN\"".to_owned());
        } else {
            out.push(shell_quote(&arg));
        }
    }
    out.join(" ")
}

/// `arg` as one word for a POSIX shell.
fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./:=@%+,".contains(&b));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// `tranche upload`: every file in turn; a file that fails does not stop the
/// others (Ctrl-C does). Returns the exit code.
pub async fn run(args: UploadArgs) -> u8 {
    let setup = || -> Result<(Api, StateDir), ClientError> {
        let api = Api::for_client(&args.client)?;
        let states = StateDir::new(args.state_dir.clone())?;
        states.check_writable()?;
        Ok((api, states))
    };
    let (api, states) = match setup() {
        Ok(x) => x,
        Err(e) => return crate::client::fail(&args.client, &e),
    };
    let progress = Progress::new(
        crate::client::show_progress(&args.client),
        !args.client.quiet,
    );
    // Files that cannot be read are reported in the loop below without
    // waiting on the server first.
    let any_readable = args.files.iter().any(|p| FileKey::of(p).is_ok());
    if any_readable {
        if let Err(e) = crate::client::until_interrupted(preflight(&api, &progress)).await {
            return crate::client::fail(&args.client, &e);
        }
    }
    let opts = UploadOptions {
        parallel: usize::from(args.parallel),
        chunk_size: args.chunk_size.map(|s| s.as_u64()),
    };
    let mut exit = 0;
    let mut report = Vec::new();
    for (n, path) in args.files.iter().enumerate() {
        let live = Live::default();
        let outcome = crate::client::until_interrupted(upload_file(
            &api, &states, &progress, path, &opts, &live,
        ))
        .await;
        match outcome {
            Ok(done) => {
                if !args.client.json {
                    let stored = if done.already_stored {
                        "\n  already stored: nothing was sent"
                    } else {
                        ""
                    };
                    progress.suspend(|| {
                        println!(
                            "{}  {}\n  sha256  {}{stored}",
                            done.path.display(),
                            done.url,
                            done.sha256
                        )
                    });
                }
                report.push(serde_json::to_value(&done).unwrap_or_default());
            }
            Err(e) => {
                if exit == 0 {
                    exit = e.exit_code();
                }
                if matches!(e, ClientError::Interrupted) {
                    progress.suspend(|| {
                        eprintln!(
                            "tranche: interrupted; the upload state is kept in {}: run the same command again to resume",
                            states.path().display()
                        )
                    });
                    if args.client.json {
                        // Still one document: what finished, where the file
                        // in progress stands, what was not started, and the
                        // command that goes on.
                        let resume = resume_command();
                        let current = live.into_inner().unwrap_or_default();
                        let unfinished: Vec<_> = std::iter::once(serde_json::json!({
                            "path": path,
                            "upload_id": current.upload_id,
                            "size": current.size,
                            "bytes_acknowledged": current.bytes_acknowledged,
                            "resume_command": resume,
                        }))
                        .chain(args.files[n + 1..].iter().map(|p| {
                            serde_json::json!({
                                "path": p,
                                "upload_id": null,
                                "size": FileKey::of(p).map(|k| k.size).ok(),
                                "bytes_acknowledged": 0,
                                "resume_command": resume,
                            })
                        }))
                        .collect();
                        println!(
                            "{}",
                            serde_json::json!({
                                "files": report,
                                "unfinished": unfinished,
                                "interrupted": true,
                                "resume_command": resume,
                            })
                        );
                    }
                    return exit;
                }
                if args.client.json {
                    report.push(serde_json::json!({
                        "path": path,
                        "error": { "code": e.code(), "message": describe(&e), "exit_code": e.exit_code() },
                    }));
                } else {
                    progress.suspend(|| eprintln!("tranche: {}: {}", path.display(), describe(&e)));
                }
            }
        }
    }
    if args.client.json {
        println!("{}", serde_json::json!({ "files": report }));
    }
    exit
}
