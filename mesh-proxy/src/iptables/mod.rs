//! `mesh-proxy iptables`: the init-container step that captures a pod's TCP traffic into the
//! proxy, with the flags and rules of Istio's `istio-iptables` (REDIRECT mode).
//!
//! In the nat table (iptables, and ip6tables when the pod has IPv6):
//! - `PREROUTING -p tcp -j MESH_INBOUND`: inbound TCP to the included ports goes to
//!   `MESH_IN_REDIRECT` (REDIRECT to the inbound capture port, 15006), except the tunnel port,
//!   the ports the proxy serves itself (15090, 15021, 15020) and the capture ports;
//! - `OUTPUT -p tcp -j MESH_OUTPUT`: outbound TCP to the included ranges or ports goes to
//!   `MESH_REDIRECT` (REDIRECT to the outbound capture port, 15001), except the proxy's own
//!   uid/gid, the app talking to itself over loopback, and the excluded ports and ranges.
//!
//! Chains are Istio's with a `MESH_` prefix (see [`chains`]). The rules are a pure function
//! ([`plan`]) of the flags and the pod's [`Env`]; [`Executor`] runs them.

mod args;
pub mod chains;
mod command;
mod config;
mod detect;
mod exec;
mod net;
mod plan;

#[cfg(test)]
mod config_tests;
#[cfg(test)]
mod plan_tests;

pub use args::IptablesArgs;
pub use command::Command;
pub use config::ConfigError;
pub use detect::Env;
pub use exec::{ExecError, Executor};
pub use net::Family;
pub use plan::{cleanup_plan, plan};

/// Installs capture (after removing any previous one), or removes it with `--cleanup`; with
/// `--dry-run`, prints the commands instead of running them.
pub fn run(args: &IptablesArgs) -> anyhow::Result<()> {
    let env = Env::detect(args.ipv6);
    let commands = if args.cleanup {
        cleanup_plan(&env)
    } else {
        plan(args, &env)?
    };
    if args.dry_run {
        print!("{}", dry_run_text(&commands));
        return Ok(());
    }
    tracing::info!(
        ipv6 = env.ipv6,
        cleanup = args.cleanup,
        commands = commands.len(),
        "programming iptables"
    );
    Executor::default().run(&commands)?;
    Ok(())
}

/// What `--dry-run` prints: one command per line, exactly as it would be run.
pub fn dry_run_text(commands: &[Command]) -> String {
    commands.iter().map(|c| format!("{c}\n")).collect()
}

/// Parses flags as `mesh-proxy iptables FLAGS...` would.
#[cfg(test)]
fn parse_args(flags: &[&str]) -> Result<IptablesArgs, clap::Error> {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: IptablesArgs,
    }
    Cli::try_parse_from(std::iter::once("iptables").chain(flags.iter().copied())).map(|c| c.args)
}
