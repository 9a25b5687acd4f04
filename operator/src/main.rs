//! `orchard-operator`: reconciles `UpstreamSource` resources of one namespace into the
//! replicas' database and cache (see `docs/operator.md`). Configuration is by
//! environment variables (`ORCHARD_OPERATOR_*` plus the database, Redis and
//! credentials-key variables of `orchard serve`); a bad value exits with status 2.

use std::process::ExitCode;

use orchard_core::config::Env;
use orchard_operator::config::OperatorConfig;

fn main() -> ExitCode {
    if std::env::args()
        .nth(1)
        .is_some_and(|a| a == "--help" || a == "-h")
    {
        println!("{}", orchard_operator::run::HELP);
        return ExitCode::SUCCESS;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube_runtime=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if std::env::var("ORCHARD_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
    let config = match OperatorConfig::from_env(&Env::process()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("orchard-operator: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("orchard-operator: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(orchard_operator::run::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "orchard-operator stopped");
            ExitCode::FAILURE
        }
    }
}
