use std::process::ExitCode;

use clap::Parser;
use tranche::cli::{Cli, Command, ServeArgs};
use tranche::client;
use tranche::config::{CliOverrides, Settings};
use tranche::startup::Application;
use tranche::telemetry;

fn load(args: &ServeArgs) -> Result<Settings, ExitCode> {
    let overrides = CliOverrides {
        bind: args.bind.clone(),
        data_dir: args.data_dir.clone(),
    };
    Settings::load(args.config.as_deref(), &overrides).map_err(|e| {
        eprintln!("tranche: {e}");
        ExitCode::from(2)
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve(ServeArgs::default()));
    match command {
        Command::CheckConfig(args) => match load(&args) {
            Ok(settings) => {
                println!("{}", toml_string(&settings));
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Serve(args) => {
            let settings = match load(&args) {
                Ok(s) => s,
                Err(code) => return code,
            };
            telemetry::init(&settings.log);
            let app = match Application::build(settings).await {
                Ok(app) => app,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "cannot start");
                    eprintln!("tranche: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            match app.run_until_stopped().await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tranche: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Upload(args) => client::exit(client::upload::run(args).await),
        Command::Status(args) => client::exit(client::status::run(args).await),
        Command::Download(args) => client::exit(client::download::run(args).await),
    }
}

fn toml_string(settings: &Settings) -> String {
    toml::to_string(settings).unwrap_or_else(|e| format!("# cannot print the settings: {e}"))
}
