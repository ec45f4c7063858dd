//! The command-line client: `tranche upload`, `status` and `download` talking
//! to a tranche server over API v1. Each command is a plain async function
//! that returns its report or a [`ClientError`]; `main` only prints and maps
//! the error to an exit code (the table is [`crate::cli::EXIT_CODES`]).

pub mod api;
pub mod download;
pub mod files;
pub mod progress;
pub mod resume;
pub mod status;
pub mod upload;

use std::time::Duration;

/// Why a client command failed, grouped by what the user can do about it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Something on this machine: a file that cannot be read, a bad URL, an
    /// unusable state directory.
    #[error("{0}")]
    Local(String),
    /// The server answered with an error. Whether it is worth retrying
    /// depends on the status, see [`ClientError::is_retryable`].
    #[error("{message} ({status} {code})")]
    Server {
        status: u16,
        code: String,
        message: String,
        retry_after: Option<Duration>,
    },
    /// No answer: connection refused, reset, timed out.
    #[error("{0}")]
    Network(String),
    /// A SHA-256 did not match what it should be.
    #[error("{0}")]
    Verification(String),
    #[error("interrupted")]
    Interrupted,
}

/// What to do after a failed request: the table "Which failures to retry"
/// in docs/API.md, which a unit test below reads to keep this in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// No answer, or the server or a proxy asks to wait: retried.
    Outage,
    /// Retried a bounded number of times.
    Yes,
    /// Sending the same request again cannot help.
    No,
    /// The upload no longer exists: not retried; resuming starts afresh.
    Gone,
}

/// The table's row for a failure with HTTP `status` (0: no answer) and error
/// `code`.
pub fn classify(status: u16, code: &str) -> Retry {
    match (status, code) {
        (0 | 408 | 429 | 502 | 503 | 504, _) => Retry::Outage,
        (409, "chunk_in_progress" | "create_in_progress") => Retry::Yes,
        (501 | 507, _) => Retry::No,
        (500..=599, _) => Retry::Yes,
        (404 | 410, _) => Retry::Gone,
        _ => Retry::No,
    }
}

impl ClientError {
    /// How docs/API.md's table classifies this failure.
    pub fn retry(&self) -> Retry {
        match self {
            ClientError::Network(_) => classify(0, "network_error"),
            ClientError::Server { status, code, .. } => classify(*status, code),
            _ => Retry::No,
        }
    }

    /// Whether sending the same request again may succeed: lost connections,
    /// overload, a store that is briefly away, or a chunk that another request
    /// (perhaps our own earlier attempt) is still writing.
    pub fn is_retryable(&self) -> bool {
        matches!(self.retry(), Retry::Outage | Retry::Yes)
    }

    /// The process exit code for this error, see [`crate::cli::EXIT_CODES`].
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Local(_) => 1,
            ClientError::Server { .. } if self.is_retryable() => 4,
            // 507 is a 5xx but a retry will not free the server's disk.
            ClientError::Server { .. } => 3,
            ClientError::Network(_) => 4,
            ClientError::Verification(_) => 5,
            ClientError::Interrupted => 130,
        }
    }

    /// The stable code for `--json` reports.
    pub fn code(&self) -> &str {
        match self {
            ClientError::Local(_) => "local_error",
            ClientError::Server { code, .. } => code,
            ClientError::Network(_) => "network_error",
            ClientError::Verification(_) => "verification_failed",
            ClientError::Interrupted => "interrupted",
        }
    }

    pub fn local(context: impl std::fmt::Display, e: impl std::fmt::Display) -> Self {
        ClientError::Local(format!("{context}: {e}"))
    }
}

/// How a human reads an error on stderr: what happened, then the server's
/// status, code and message.
pub fn describe(e: &ClientError) -> String {
    match e {
        ClientError::Server {
            status,
            code,
            message,
            ..
        } => {
            let what = match (e.retry(), code.as_str()) {
                (_, "chunk_in_progress") => {
                    "another request (perhaps an earlier attempt of ours) is still writing this chunk"
                }
                (_, "create_in_progress") => {
                    "the server is still creating this upload for an earlier attempt"
                }
                (Retry::Outage, _) if *status == 429 => "the server asks to slow down",
                (Retry::Outage, _) if *status == 408 => "the server timed the request out",
                (Retry::Outage | Retry::Yes, _) => "the server is not available",
                (Retry::Gone, _) => "the server no longer has it",
                (Retry::No, _) => "the server refused",
            };
            format!("{what} ({status} {code}): {message}")
        }
        ClientError::Network(m) => format!("cannot reach the server: {m}"),
        ClientError::Verification(m) => format!("verification failed: {m}"),
        other => other.to_string(),
    }
}

/// Whether progress bars should be drawn: a person is watching stderr and
/// no machine-readable output was asked for.
pub fn show_progress(args: &crate::cli::ClientArgs) -> bool {
    use std::io::IsTerminal;
    !args.quiet && !args.json && std::io::stderr().is_terminal()
}

/// Runs `work` until it ends or the user presses Ctrl-C.
pub async fn until_interrupted<T>(
    work: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::select! {
        result = work => result,
        _ = tokio::signal::ctrl_c() => Err(ClientError::Interrupted),
    }
}

/// Reports a command's failure (on stdout as JSON with `--json`, else on
/// stderr) and returns its exit code.
pub fn fail(args: &crate::cli::ClientArgs, e: &ClientError) -> u8 {
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "error": { "code": e.code(), "message": describe(e), "exit_code": e.exit_code() }
            })
        );
    } else {
        eprintln!("tranche: {}", describe(e));
    }
    e.exit_code()
}

/// The process's exit for a client command's code. An interrupted command
/// exits at once: a blocking read (hashing a big file) would otherwise hold
/// the runtime's shutdown until it ends, and the resume state is already on
/// disk.
pub fn exit(code: u8) -> std::process::ExitCode {
    if code == ClientError::Interrupted.exit_code() {
        std::process::exit(code.into());
    }
    std::process::ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row of docs/API.md's retry table.
    struct Row {
        statuses: Vec<String>,
        codes: Option<Vec<String>>,
        retry: String,
        retry_after: bool,
    }

    impl Row {
        fn matches(&self, status: u16, code: &str) -> bool {
            let status_ok = self.statuses.iter().any(|s| match s.as_str() {
                "any" | "anything else" => true,
                s if s.starts_with("none") => status == 0,
                s if s.starts_with("other ") => {
                    let class = s.trim_start_matches("other ").as_bytes()[0] - b'0';
                    status / 100 == u16::from(class)
                }
                s => s.parse::<u16>().expect("a status") == status,
            });
            status_ok
                && self
                    .codes
                    .as_ref()
                    .is_none_or(|codes| codes.iter().any(|c| c == code))
        }
    }

    /// The table under "### Which failures to retry", parsed.
    fn table() -> Vec<Row> {
        let doc = include_str!("../../docs/API.md");
        let section = doc
            .split("### Which failures to retry")
            .nth(1)
            .expect("docs/API.md has the retry table");
        let cells = |line: &str| -> Vec<String> {
            line.trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect()
        };
        section
            .lines()
            .skip_while(|l| !l.starts_with("| status"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .map(|line| {
                let c = cells(line);
                Row {
                    statuses: c[0].split(", ").map(str::to_owned).collect(),
                    codes: (c[1] != "any").then(|| {
                        c[1].split(", ")
                            .map(|code| code.trim_matches('`').to_owned())
                            .collect()
                    }),
                    retry: c[2].trim_matches('`').to_owned(),
                    retry_after: c[3] == "yes",
                }
            })
            .collect()
    }

    #[test]
    fn is_retryable_follows_the_table_in_docs_api_md() {
        let rows = table();
        assert!(rows.len() >= 5, "the table was not found in docs/API.md");
        let mut codes: Vec<String> = rows
            .iter()
            .flat_map(|r| r.codes.clone().unwrap_or_default())
            .collect();
        codes.extend(["network_error".into(), "some_other_code".into()]);
        let statuses = [
            0, 200, 302, 400, 401, 403, 404, 405, 408, 409, 410, 413, 415, 422, 429, 500, 501, 502,
            503, 504, 505, 507, 599,
        ];
        for status in statuses {
            for code in &codes {
                let row = rows
                    .iter()
                    .find(|r| r.matches(status, code))
                    .unwrap_or_else(|| panic!("no row of the table covers {status} {code}"));
                let error = if status == 0 {
                    ClientError::Network("refused".into())
                } else {
                    ClientError::Server {
                        status,
                        code: code.clone(),
                        message: String::new(),
                        retry_after: Some(Duration::from_secs(1)),
                    }
                };
                let expected = match row.retry.as_str() {
                    "outage" => Retry::Outage,
                    "yes" => Retry::Yes,
                    "no" => Retry::No,
                    "gone" => Retry::Gone,
                    other => panic!("unknown retry value {other:?} in docs/API.md"),
                };
                assert_eq!(error.retry(), expected, "{status} {code}");
                // api::send waits for Retry-After on every retried answer.
                let honours = error.is_retryable() && matches!(error, ClientError::Server { .. });
                assert_eq!(honours, row.retry_after, "Retry-After for {status} {code}");
            }
        }
    }

    #[test]
    fn a_chunk_in_progress_is_not_called_an_unavailable_server() {
        let e = ClientError::Server {
            status: 409,
            code: "chunk_in_progress".into(),
            message: "chunk 3 is being written by another request".into(),
            retry_after: Some(Duration::from_secs(1)),
        };
        let text = describe(&e);
        assert!(!text.contains("not available"), "{text}");
        assert!(text.contains("still writing this chunk"), "{text}");
    }
}
