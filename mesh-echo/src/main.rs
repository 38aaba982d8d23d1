//! `mesh-echo`: the sample workload of the mesh.

use anyhow::Context;
use clap::Parser;
use mesh_echo::EchoConfig;
use tracing_subscriber::EnvFilter;

/// Echoes HTTP/1.1, h2c, gRPC and upgraded connections on one port; with `--tcp`, answers
/// every line of plain TCP with `<name> <line>` (like Istio's tcp-echo sample).
#[derive(Debug, Parser)]
// No `--version` flag: `--version` is the replica version.
#[command(about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Replica name reported in every answer.
    #[arg(long, default_value = "echo")]
    name: String,
    /// Replica version reported in every answer.
    #[arg(long, default_value = "v1")]
    version: String,
    /// Answer every request with this HTTP status (a broken replica).
    #[arg(long, value_parser = clap::value_parser!(u16).range(100..=599), conflicts_with = "tcp")]
    fail_status: Option<u16>,
    /// Plain TCP instead of HTTP: answer every line read with "<name> <line>".
    #[arg(long)]
    tcp: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(&args.addr)
        .await
        .with_context(|| format!("binding {}", args.addr))?;
    let mode = if args.tcp { "tcp lines" } else { "http" };
    tracing::info!(addr = %listener.local_addr()?, name = %args.name, version = %args.version, mode, "mesh-echo listening");
    let cfg = EchoConfig {
        name: args.name,
        version: args.version,
        fail_status: args.fail_status,
    };
    let serve = async {
        if args.tcp {
            mesh_echo::lines::serve(listener, cfg).await
        } else {
            mesh_echo::serve(listener, cfg).await
        }
    };
    tokio::select! {
        () = serve => {}
        res = tokio::signal::ctrl_c() => res.context("waiting for ctrl-c")?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Args::command().debug_assert();
        let args = Args::try_parse_from([
            "mesh-echo",
            "--addr",
            "127.0.0.1:0",
            "--name",
            "reviews",
            "--version",
            "v2",
            "--fail-status",
            "503",
        ])
        .unwrap();
        assert_eq!(args.version, "v2");
        assert_eq!(args.fail_status, Some(503));
        assert!(!args.tcp);
        assert!(Args::try_parse_from(["mesh-echo", "--fail-status", "42"]).is_err());
        let tcp = Args::try_parse_from(["mesh-echo", "--tcp", "--name", "one"]).unwrap();
        assert!(tcp.tcp);
        assert_eq!(tcp.name, "one");
        assert!(
            Args::try_parse_from(["mesh-echo", "--tcp", "--fail-status", "503"]).is_err(),
            "an HTTP status means nothing to a line echo"
        );
    }
}
