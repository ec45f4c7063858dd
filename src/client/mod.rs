//! The command-line client: `tranche upload`, `status` and `download` talking
//! to a tranche server over API v1. Each command is a plain async function
//! that returns its report or a [`ClientError`]; `main` only prints and maps
//! the error to an exit code (the table is [`crate::cli::EXIT_CODES`]).

pub mod api;
pub mod download;
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

impl ClientError {
    /// Whether sending the same request again may succeed: lost connections,
    /// overload, a store that is briefly away, or a chunk that another request
    /// (perhaps our own earlier attempt) is still writing.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Network(_) => true,
            ClientError::Server { status, code, .. } => {
                matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
                    || (*status == 409
                        && (code == "chunk_in_progress" || code == "create_in_progress"))
            }
            _ => false,
        }
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

/// How a human reads an error on stderr.
pub fn describe(e: &ClientError) -> String {
    match e {
        ClientError::Server {
            status,
            code,
            message,
            ..
        } if e.is_retryable() => {
            format!("the server is not available ({status} {code}): {message}")
        }
        ClientError::Server {
            status,
            code,
            message,
            ..
        } => format!("the server refused ({status} {code}): {message}"),
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
