//! The command line: `tranche serve`, `check-config` and `token` for the
//! server, and the client commands (`upload`, `status`, `download`, `files`)
//! that talk to a tranche server.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tranche",
    version,
    about = "Self-hosted server for chunked, resumable uploads of big files",
    long_about = "Self-hosted server for chunked, resumable uploads of big files.\n\n\
        Clients split a file into chunks, send them in any order and in parallel, \
        resend only what failed, and complete the upload; tranche streams each chunk \
        to disk, checks the file's SHA-256 and serves it back.\n\n\
        Settings come from built-in defaults, then config.toml (or --config), then \
        TRANCHE_* environment variables (TRANCHE_STORE__URL for store.url), then flags.",
    after_help = "Examples:\n  tranche serve                        # 127.0.0.1:8080, ./data, embedded store\n  tranche serve --bind 0.0.0.0:9000 --data-dir /var/lib/tranche   # with [auth] enabled (or --insecure)\n  tranche token key                    # an API key for your backend\n  TRANCHE_DURABILITY=relaxed tranche serve"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the upload server (the default when no command is given).
    Serve(ServeArgs),
    /// Load and check the configuration, print it as TOML (secrets hidden), and exit.
    CheckConfig(ServeArgs),
    /// Upload files to a tranche server, resuming where a previous run stopped.
    #[command(after_help = UPLOAD_HELP)]
    Upload(UploadArgs),
    /// Show where an upload stands.
    #[command(after_help = EXIT_CODES)]
    Status(StatusArgs),
    /// Download a completed file, resuming a partial download with Range.
    #[command(after_help = EXIT_CODES)]
    Download(DownloadArgs),
    /// Re-hash every completed file on a tranche server and compare it with
    /// its recorded SHA-256 (needs an API key). Exits 5 on a mismatch or a missing file.
    #[command(after_help = SCRUB_HELP)]
    Scrub(ScrubArgs),
    /// Completed files on a tranche server: delete one.
    #[command(subcommand)]
    Files(FilesCommand),
    /// Mint upload tokens with the configured secret, or generate an API key.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print the OpenAPI 3.1 document of API v1 (JSON; the server also
    /// serves it at /api/v1/openapi.json), e.g. to generate a client.
    Openapi(OpenapiArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct OpenapiArgs {
    /// Print the document as YAML, as written in docs/openapi.yaml
    #[arg(long)]
    pub yaml: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ScrubArgs {
    /// Read at most this much per second (e.g. 50MiB; 0 for no limit)
    /// [default: the server's scrub_bandwidth]
    #[arg(long, value_name = "SIZE")]
    pub bandwidth: Option<bytesize::ByteSize>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum FilesCommand {
    /// Delete a completed file: its bytes and its record go at once. A file
    /// deleted already is fine (exit 0). Needs an API key, or the upload's
    /// token where the server has auth.owner_may_delete.
    #[command(after_help = EXIT_CODES)]
    Delete(FileDeleteArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct FileDeleteArgs {
    /// File id (the id of its upload)
    pub id: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a JWT signed with auth.jwt_secret: a create token (limits) or,
    /// with --upload-id, a token for one upload.
    #[command(
        after_help = "Examples:\n  tranche token create --max-size 1GiB --content-type 'video/*' --ttl 15m\n  tranche token create --upload-id 0b9d5c0e-6c1e-4b8e-9a4f-3d2f1c0b7a61 --ttl 1h"
    )]
    Create(TokenArgs),
    /// Generate a random API key and the `sha256:` form to put in auth.api_keys.
    Key,
}

#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    /// Configuration file holding auth.jwt_secret [default: ./config.toml if present]
    #[arg(long, short, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// How long the token is valid (e.g. 15m, 2h, 1day)
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub ttl: std::time::Duration,
    /// Token for this upload only (its chunks, status, complete, abort, download)
    #[arg(long, value_name = "ID", conflicts_with_all = ["max_size", "content_type", "max_uploads", "max_retention", "max_stored_bytes", "max_pending_bytes"])]
    pub upload_id: Option<uuid::Uuid>,
    /// Largest file the token may start an upload for (e.g. 1GiB)
    #[arg(long, value_name = "SIZE")]
    pub max_size: Option<bytesize::ByteSize>,
    /// Content type the token may declare (`video/*`, `image/png`); repeatable
    #[arg(long = "content-type", value_name = "TYPE")]
    pub content_type: Vec<String>,
    /// How many uploads the token may start
    #[arg(long, value_name = "N")]
    pub max_uploads: Option<u64>,
    /// Longest retention the token's uploads get (e.g. 7d): the server keeps
    /// their files at most this long
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub max_retention: Option<std::time::Duration>,
    /// Quota of stored bytes for the token's owner (e.g. 10GiB), at most the
    /// server's quota.max_stored_bytes
    #[arg(long, value_name = "SIZE")]
    pub max_stored_bytes: Option<bytesize::ByteSize>,
    /// Quota of pending bytes (unfinished uploads) for the token's owner
    #[arg(long, value_name = "SIZE")]
    pub max_pending_bytes: Option<bytesize::ByteSize>,
    /// Subject: who the token is for (names its rate-limit bucket)
    #[arg(long, value_name = "NAME")]
    pub sub: Option<String>,
}

#[derive(Debug, Default, Clone, clap::Args)]
pub struct ServeArgs {
    /// Configuration file [default: ./config.toml if present]
    #[arg(long, short, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8080 (overrides `bind`)
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<String>,
    /// Directory for chunks, files and state (overrides `data_dir`)
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Allow a non-loopback address with authentication off (sets auth.allow_anonymous)
    #[arg(long)]
    pub insecure: bool,
}

// One text for every client command's help, so that the codes cannot drift.
macro_rules! exit_codes {
    () => {
        "Exit codes:\n  \
        0    done\n  \
        1    local problem: unreadable file, unusable state directory or --server URL\n  \
        2    wrong usage (unknown flag, missing argument)\n  \
        3    the server refused (a 4xx answer that a retry cannot fix; its code and message are shown)\n  \
        4    server unreachable or failing (network error, 5xx, 429) after all retries\n  \
        5    verification failed: a SHA-256 did not match\n  \
        130  interrupted (Ctrl-C); the state is kept, so the same command resumes"
    };
}

/// Exit codes of the client commands; scripts switch on them.
pub const EXIT_CODES: &str = exit_codes!();

const UPLOAD_HELP: &str = concat!(
    "Examples:\n  \
    tranche upload lecture.mp4 --server https://uploads.example.com\n  \
    TRANCHE_TOKEN=... tranche upload *.iso --parallel 8 --json\n\n\
    Running the same command again after Ctrl-C or a lost connection sends only \
    the chunks the server is missing. The state of unfinished uploads is kept in \
    --state-dir, keyed by the file's path, size, modification time and the server.\n\n",
    exit_codes!()
);

const SCRUB_HELP: &str = concat!(
    "The server reads every completed file back (at --bandwidth, else its \
    scrub_bandwidth) and answers when done: files checked, mismatches (bytes \
    that changed on disk) and orphans (files no record names). It runs in the \
    server, so it works with either state store while the server runs.\n\n",
    exit_codes!()
);

/// What every client command needs to reach the server.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// Base URL of the tranche server
    #[arg(
        long,
        env = "TRANCHE_SERVER",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub server: String,
    /// API key or JWT, sent as `Authorization: Bearer`
    #[arg(
        long,
        env = "TRANCHE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Print one JSON document on stdout instead of text (no progress bars),
    /// also when interrupted (`"interrupted": true`)
    #[arg(long)]
    pub json: bool,
    /// No progress bars (they are also off when stderr is not a terminal)
    #[arg(long, short)]
    pub quiet: bool,
    /// Retries of a failed request (network error, 5xx, 429) before giving up
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub retries: usize,
}

#[derive(Debug, Clone, clap::Args)]
pub struct UploadArgs {
    /// Files to upload
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub client: ClientArgs,
    /// Chunks sent at the same time (memory used: about N x chunk size)
    #[arg(long, short, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64), value_name = "N")]
    pub parallel: u16,
    /// Chunk size to ask for, e.g. 8MiB (the server clamps it to its bounds)
    #[arg(long, value_name = "SIZE")]
    pub chunk_size: Option<bytesize::ByteSize>,
    /// Where the state of unfinished uploads is kept [default: ~/.cache/tranche/uploads, in the user's cache dir]
    #[arg(long, env = "TRANCHE_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// Upload id
    pub id: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DownloadArgs {
    /// File id (the id of its upload)
    pub id: String,
    /// Where to write the file. The bytes gather in PATH.part, which a later
    /// run resumes; an existing PATH is kept unless it is this very file
    #[arg(long, short, value_name = "PATH")]
    pub output: PathBuf,
    #[command(flatten)]
    pub client: ClientArgs,
}
