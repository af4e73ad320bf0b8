//! `secretguard`: CLI and wiring only.

use clap::{Parser, Subcommand};
use secretguard::{Error, Result, api, telemetry};

#[derive(Parser, Debug)]
#[command(
    name = "secretguard",
    version,
    about = "Guards critical Kubernetes Secrets and ServiceAccount tokens"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controller.
    Run(RunArgs),
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Namespace of the operator: restore points and the leader Lease live here.
    #[arg(
        long,
        env = "SECRETGUARD_NAMESPACE",
        default_value = "secretguard-system"
    )]
    namespace: String,

    /// Log format.
    #[arg(long, env = "SECRETGUARD_LOG_FORMAT", value_enum, default_value_t)]
    log_format: telemetry::LogFormat,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd => print_crds(),
        Command::Run(args) => run(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("secretguard: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn print_crds() -> Result<()> {
    print!("{}", api::crds_yaml().map_err(Error::Yaml)?);
    Ok(())
}

async fn run(args: RunArgs) -> Result<()> {
    telemetry::init(args.log_format)?;
    let client = kube::Client::try_default().await.map_err(|e| match e {
        kube::Error::InferConfig(e) => Error::Config(e),
        e => Error::Kube(e),
    })?;
    let version = client.apiserver_version().await?;
    tracing::info!(apiserver = %version.git_version, namespace = %args.namespace, "connected");
    tokio::signal::ctrl_c().await.ok();
    tracing::info!("shutting down");
    Ok(())
}
