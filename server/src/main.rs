//! The `orchard` binary.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use orchard_server::config::{Config, LogFormat};

/// Orchard: a caching proxy for package registries (PyPI, npm, Maven).
///
/// Configuration comes from ORCHARD_* environment variables only; with none set, Orchard
/// runs embedded: SQLite and artifact files under ./orchard-data, an in-process cache.
#[derive(Parser)]
#[command(name = "orchard", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve package traffic on ORCHARD_LISTEN_ADDR (default 0.0.0.0:8080) and
    /// /healthz, /readyz, /metrics on ORCHARD_ADMIN_ADDR (default 0.0.0.0:9090).
    /// Applies pending migrations at start; SIGTERM drains in-flight requests.
    Serve,
    /// Apply pending database migrations to ORCHARD_DATABASE_URL and exit.
    /// Safe to run from several replicas at once (Postgres advisory lock).
    Migrate,
    /// Validate the configuration, print it as JSON with secrets redacted, and exit:
    /// status 0 when valid, 2 with a message naming the variable when not.
    CheckConfig,
    /// Warm a running Orchard for a build: send an ensure file (Orchard YAML,
    /// requirements.txt with pins/--hash, package-lock.json v2/v3, or Maven coordinates)
    /// to SERVER; every artifact is fetched and verified. Exit 1 if anything failed.
    Ensure {
        /// The ensure file or lockfile.
        file: std::path::PathBuf,
        /// Orchard's base URL, e.g. http://localhost:8080
        #[arg(long)]
        server: String,
        /// Admin token (the server's ORCHARD_ADMIN_TOKEN).
        #[arg(long, env = "ORCHARD_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Target Python version for unpinned requirements (e.g. 3.12).
        #[arg(long)]
        python_version: Option<String>,
        /// Target platform: linux, darwin or win32.
        #[arg(long)]
        platform: Option<String>,
    },
}

fn load_config() -> Result<Config, ExitCode> {
    Config::from_process_env().map_err(|e| {
        eprintln!("orchard: invalid configuration: {e}");
        ExitCode::from(2)
    })
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

fn main() -> ExitCode {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    if let Command::Ensure {
        file,
        server,
        token,
        python_version,
        platform,
    } = cli.command
    {
        return ExitCode::from(orchard_server::deps::cli::run(
            orchard_server::deps::cli::EnsureArgs {
                file,
                server,
                token,
                python_version,
                platform,
            },
        ));
    }
    let config = match load_config() {
        Ok(c) => c,
        Err(code) => return code,
    };
    match cli.command {
        Command::CheckConfig => {
            println!(
                "{}",
                serde_json::to_string_pretty(&config.redacted_summary()).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Command::Migrate => {
            init_logging(config.server.log_format);
            let result = runtime().map_err(anyhow::Error::from).and_then(|rt| {
                rt.block_on(orchard_server::db::run_migrations(&config.database.url))
                    .map_err(anyhow::Error::from)
            });
            match result {
                Ok(applied) => {
                    tracing::info!(database = %config.database.url.redacted(), applied = ?applied, "migrations up to date");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    tracing::error!(error = %e, "migrations failed");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve => {
            init_logging(config.server.log_format);
            let result = runtime()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(orchard_server::lifecycle::serve(config)));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "orchard stopped with an error");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Ensure { .. } => unreachable!("handled before the configuration is loaded"),
    }
}
