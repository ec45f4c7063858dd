use std::process::ExitCode;

use clap::Parser;
use tranche::cli::{Cli, Command, FilesCommand, ServeArgs, TokenArgs, TokenCommand};
use tranche::client;
use tranche::config::{CliOverrides, Settings};
use tranche::startup::Application;
use tranche::telemetry;

fn load(args: &ServeArgs) -> Result<Settings, ExitCode> {
    let overrides = CliOverrides {
        bind: args.bind.clone(),
        data_dir: args.data_dir.clone(),
    };
    let mut settings = Settings::load(args.config.as_deref(), &overrides).map_err(|e| {
        eprintln!("tranche: {e}");
        ExitCode::from(2)
    })?;
    if args.insecure {
        settings.auth.allow_anonymous = true;
    }
    Ok(settings)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve(ServeArgs::default()));
    match command {
        Command::CheckConfig(args) => match load(&args) {
            Ok(settings) => match tranche::startup::preflight(&settings) {
                Ok(_) => {
                    // Not println!: a closed pipe (`| head`) is no reason to panic.
                    use std::io::Write;
                    let _ = writeln!(std::io::stdout(), "{}", toml_string(&settings));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("tranche: {e:#}");
                    ExitCode::from(2)
                }
            },
            Err(code) => code,
        },
        Command::Token(TokenCommand::Create(args)) => token_create(&args),
        Command::Token(TokenCommand::Key) => {
            let key = format!(
                "trk_{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            );
            println!("key:    {key}");
            println!(
                "config: api_keys = [\"{}\"]",
                tranche::guards::auth::keys::hash_entry(&key)
            );
            ExitCode::SUCCESS
        }
        Command::Serve(args) => {
            let settings = match load(&args) {
                Ok(s) => s,
                Err(code) => return code,
            };
            // A configuration mistake is said once, plainly, with the same
            // exit code as check-config gives it.
            if let Err(e) = tranche::startup::preflight(&settings) {
                eprintln!("tranche: {e:#}");
                return ExitCode::from(2);
            }
            telemetry::init(&settings.log);
            let app = match Application::build(settings).await {
                Ok(app) => app,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "cannot start");
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
        Command::Openapi(args) => {
            let text = match args.yaml {
                true => tranche::openapi::YAML,
                false => tranche::openapi::json(),
            };
            // Not print!: a closed pipe (`| head`) is no reason to panic.
            use std::io::Write;
            let _ = std::io::stdout().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Command::Upload(args) => client::exit(client::upload::run(args).await),
        Command::Status(args) => client::exit(client::status::run(args).await),
        Command::Download(args) => client::exit(client::download::run(args).await),
        Command::Scrub(args) => client::exit(client::files::scrub(args).await),
        Command::Files(FilesCommand::Delete(args)) => {
            client::exit(client::files::delete(args).await)
        }
    }
}

/// `tranche token create`: mints a token with the configured secret.
fn token_create(args: &TokenArgs) -> ExitCode {
    let serve_args = ServeArgs {
        config: args.config.clone(),
        ..ServeArgs::default()
    };
    let settings = match load(&serve_args) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let auth = match tranche::guards::auth::Authenticator::from_settings(
        &settings.auth,
        settings.upload_ttl,
    ) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tranche: {e:#}");
            return ExitCode::from(2);
        }
    };
    let Some(tokens) = auth.tokens() else {
        eprintln!("tranche: no auth.jwt_secret (or jwt_secret_file, or TRANCHE_AUTH__JWT_SECRET) is configured");
        return ExitCode::from(2);
    };
    for ct in &args.content_type {
        if !tranche::guards::limits::content::is_valid_pattern(ct) {
            eprintln!("tranche: --content-type {ct:?} is not type/subtype or type/*");
            return ExitCode::from(2);
        }
    }
    let now = tranche::guards::auth::token::unix_now();
    let claims = tranche::guards::auth::Claims {
        exp: now + args.ttl.as_secs().max(1),
        iat: Some(now),
        sub: args.sub.clone(),
        jti: None,
        upload_id: args.upload_id,
        max_size: args.max_size.map(|s| s.0),
        content_types: (!args.content_type.is_empty()).then(|| args.content_type.clone()),
        max_uploads: args.max_uploads,
        max_retention: args.max_retention.map(|d| d.as_secs().max(1)),
        max_stored_bytes: args.max_stored_bytes.map(|s| s.0),
        max_pending_bytes: args.max_pending_bytes.map(|s| s.0),
    };
    match tokens.mint(&claims) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tranche: cannot sign the token: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn toml_string(settings: &Settings) -> String {
    toml::to_string(settings).unwrap_or_else(|e| format!("# cannot print the settings: {e}"))
}
