//! `mesh-citadel`: the mesh CA as a process.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mesh_citadel::auth::{
    AnyOf, Authenticator, CertAuthenticator, TokenAuthenticator, TokenReviewAuthenticator,
};
use mesh_citadel::kube::root_cert::{self, PublishOptions};
use mesh_citadel::{Ca, ServeOptions, ValidityPolicy, validity};

#[derive(Debug, Parser)]
#[command(about = "Certificate authority of the mesh: signs workload SPIFFE certificates")]
#[command(subcommand_negates_reqs = true, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Directory of the CA's own root, created on first start and reused after.
    #[arg(long, env = "CITADEL_DIR", required_unless_present = "plugin_certs")]
    dir: Option<PathBuf>,
    /// Operator-provided CA in Istio's layout (ca-cert.pem, ca-key.pem, root-cert.pem,
    /// cert-chain.pem); takes precedence over --dir.
    #[arg(long, env = "CITADEL_PLUGIN_CERTS")]
    plugin_certs: Option<PathBuf>,
    /// Trust domain of the SPIFFE IDs this CA signs.
    #[arg(long, env = "CITADEL_TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// Address of the gRPC-over-TLS endpoint (Istio's CA port is 15012).
    #[arg(long, env = "CITADEL_GRPC_ADDR", default_value = "127.0.0.1:15012")]
    grpc_addr: SocketAddr,
    /// Per-workload tokens: a directory `<ns>/<sa>` of token files, or a file of
    /// `<token> <namespace> <service-account>` lines.
    #[arg(long, env = "CITADEL_TOKENS")]
    tokens: Option<PathBuf>,
    /// DNS names of the CA's serving certificate (repeatable).
    #[arg(long = "server-name")]
    server_names: Vec<String>,
    /// Lifetime of a certificate when the caller asks for none, in seconds.
    #[arg(long, default_value_t = validity::DEFAULT_VALIDITY.as_secs())]
    default_validity_secs: u64,
    /// Longest lifetime issued, in seconds; longer requests are capped.
    #[arg(long, default_value_t = validity::MAX_VALIDITY.as_secs())]
    max_validity_secs: u64,
    /// Run in Kubernetes: authenticate callers' service-account tokens by TokenReview, and
    /// publish the root certificate as a ConfigMap in every namespace the mesh serves.
    #[arg(long)]
    kube: bool,
    /// Kubeconfig to use with --kube; without it, KUBECONFIG, ~/.kube/config or the
    /// in-cluster service account, in that order.
    #[arg(long, value_name = "PATH", requires = "kube")]
    kubeconfig: Option<PathBuf>,
    /// Audience a workload's token must be for (the projected token's `audience`).
    #[arg(long, env = "CITADEL_TOKEN_AUDIENCE", default_value = "mesh-ca")]
    token_audience: String,
    /// Name of the root-certificate ConfigMap (key `root-cert.pem`) published in each
    /// namespace (repeatable; default: mesh-ca-root-cert and Istio's istio-ca-root-cert).
    #[arg(long = "root-cert-configmap", value_name = "NAME")]
    root_cert_configmaps: Vec<String>,
    /// Label selector of the namespaces the root certificate is published in (for example
    /// `istio-injection=enabled`); default every namespace.
    #[arg(long, value_name = "SELECTOR")]
    namespace_selector: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Creates (or replaces) one workload's token in a token directory and prints its path,
    /// the file to hand to that workload's proxy.
    Token {
        #[arg(long, env = "CITADEL_TOKENS")]
        tokens: PathBuf,
        #[arg(long)]
        namespace: String,
        #[arg(long)]
        service_account: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    if let Some(Command::Token {
        tokens,
        namespace,
        service_account,
    }) = &args.command
    {
        let path = mesh_citadel::auth::write_token(tokens, namespace, service_account)?;
        println!("{}", path.display());
        return Ok(());
    }

    let ca = match (&args.plugin_certs, &args.dir) {
        (Some(plugin), _) => Ca::load(plugin, &args.trust_domain)
            .with_context(|| format!("loading plug-in CA from {}", plugin.display()))?,
        (None, Some(dir)) => Ca::load_or_create(dir, &args.trust_domain)
            .with_context(|| format!("loading CA from {}", dir.display()))?,
        (None, None) => anyhow::bail!("--dir or --plugin-certs is required"),
    };
    let ca = Arc::new(ca.with_validity(ValidityPolicy {
        default: Duration::from_secs(args.default_validity_secs),
        max: Duration::from_secs(args.max_validity_secs),
    }));

    let mut authenticators: Vec<Arc<dyn Authenticator>> =
        vec![Arc::new(CertAuthenticator::new(ca.clone()))];
    if let Some(tokens) = &args.tokens {
        authenticators.push(Arc::new(TokenAuthenticator::new(
            tokens.clone(),
            args.trust_domain.clone(),
        )));
    }
    let kube = if args.kube {
        let client = mesh_citadel::kube::client(args.kubeconfig.as_deref()).await?;
        authenticators.push(Arc::new(TokenReviewAuthenticator::new(
            client.clone(),
            args.token_audience.clone(),
            args.trust_domain.clone(),
        )));
        Some(client)
    } else {
        None
    };
    let authenticator = Arc::new(AnyOf::new(authenticators));
    let stop_publishing = tokio_util::sync::CancellationToken::new();
    if let Some(client) = kube {
        let mut options = PublishOptions {
            namespace_selector: args.namespace_selector.clone(),
            ..PublishOptions::default()
        };
        if !args.root_cert_configmaps.is_empty() {
            options.names = args.root_cert_configmaps.clone();
        }
        tokio::spawn(root_cert::publish(
            client,
            root_cert::bundle(ca.trust_bundle_pem()).into(),
            options,
            stop_publishing.clone(),
        ));
    }

    let mut options = ServeOptions::default();
    if !args.server_names.is_empty() {
        options.server_names = args.server_names.clone();
    }
    let listener = tokio::net::TcpListener::bind(args.grpc_addr)
        .await
        .with_context(|| format!("binding {}", args.grpc_addr))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        trust_domain = %args.trust_domain,
        roots = ca.trust_bundle_pem().len(),
        tokens = ?args.tokens,
        kube = args.kube,
        "mesh-citadel serving"
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    };
    mesh_citadel::serve_with_shutdown(listener, ca, authenticator, options, shutdown).await?;
    stop_publishing.cancel();
    Ok(())
}
