//! The command line: `tranche serve` and its flags.

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
    /// Load and check the configuration, print it as TOML, and exit.
    CheckConfig(ServeArgs),
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
}
