//! The command line: `tranche serve`, `check-config`, `token` and their flags.

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
    after_help = "Examples:\n  tranche serve                        # 127.0.0.1:8080, ./data, embedded store\n  tranche serve --bind 0.0.0.0:9000 --data-dir /var/lib/tranche\n  TRANCHE_DURABILITY=relaxed tranche serve"
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
    /// Mint upload tokens with the configured secret, or generate an API key.
    #[command(subcommand)]
    Token(TokenCommand),
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
    #[arg(long, value_name = "ID", conflicts_with_all = ["max_size", "content_type", "max_uploads"])]
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
