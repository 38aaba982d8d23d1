//! The rules, as a pure function of the flags and the pod's environment.
//!
//! Install always starts with the cleanup steps (as Istio does) so running it twice leaves
//! one copy of every rule. The order inside `MESH_OUTPUT` matters and is Istio's: exclusions
//! first, the proxy's own traffic next, inclusions last.

use super::args::IptablesArgs;
use super::chains::{self, IN_REDIRECT, INBOUND, JUMPS, OUTPUT, REDIRECT};
use super::command::Command;
use super::config::{Config, ConfigError, Inbound, Outbound, Ports};
use super::detect::Env;
use super::net::Family;

/// Every command `mesh-proxy iptables` runs to install capture: cleanup, then the rules for
/// each family the pod has.
pub fn plan(args: &IptablesArgs, env: &Env) -> Result<Vec<Command>, ConfigError> {
    let cfg = Config::from_args(args)?;
    let mut commands = cleanup_plan(env);
    for family in env.families() {
        commands.extend(install(&cfg, family));
    }
    Ok(commands)
}

/// The commands of `--cleanup`: jumps removed, then chains flushed (so none is still
/// referenced), then deleted. Each tolerates the rule or chain being absent.
pub fn cleanup_plan(env: &Env) -> Vec<Command> {
    let mut commands = Vec::new();
    for family in env.families() {
        for (builtin, chain) in JUMPS {
            commands.push(Command::nat(family, &["-D", builtin, "-p", "tcp", "-j", chain]).missing_ok());
        }
        for op in ["-F", "-X"] {
            for chain in chains::ALL {
                commands.push(Command::nat(family, &[op, chain]).missing_ok());
            }
        }
    }
    commands
}

fn install(cfg: &Config, family: Family) -> Vec<Command> {
    let mut rules = Rules {
        family,
        commands: Vec::new(),
    };
    for chain in chains::ALL {
        rules.commands.push(Command::nat(family, &["-N", chain]));
    }
    let to_outbound = cfg.outbound_port.to_string();
    let to_inbound = cfg.inbound_port.to_string();
    rules.append(REDIRECT, &["-p", "tcp", "-j", "REDIRECT", "--to-ports", &to_outbound]);
    rules.append(IN_REDIRECT, &["-p", "tcp", "-j", "REDIRECT", "--to-ports", &to_inbound]);
    inbound(&mut rules, cfg);
    outbound(&mut rules, cfg);
    rules.commands
}

fn inbound(rules: &mut Rules, cfg: &Config) {
    if cfg.inbound == Inbound::Disabled {
        return;
    }
    rules.append("PREROUTING", &["-p", "tcp", "-j", INBOUND]);
    let bypass = inbound_bypass(cfg);
    for ports in &bypass {
        rules.dport(INBOUND, ports, "RETURN");
    }
    match &cfg.inbound {
        Inbound::All { except } => {
            for ports in except.iter().filter(|p| !bypass.contains(p)) {
                rules.dport(INBOUND, ports, "RETURN");
            }
            rules.append(INBOUND, &["-p", "tcp", "-j", IN_REDIRECT]);
        }
        Inbound::Ports(include) => {
            for ports in include {
                rules.dport(INBOUND, ports, IN_REDIRECT);
            }
        }
        Inbound::Disabled => {}
    }
}

/// Inbound ports never captured: the tunnel port and the ports the proxy serves itself, as
/// Istio; and the capture ports, so a connection addressed to one cannot be redirected into
/// the proxy and from there back to itself.
fn inbound_bypass(cfg: &Config) -> Vec<Ports> {
    let mut ports: Vec<Ports> = Vec::new();
    let own = [cfg.tunnel_port]
        .into_iter()
        .chain(chains::PROXY_SERVED_PORTS)
        .chain([cfg.outbound_port, cfg.inbound_port]);
    for port in own.map(Ports::one) {
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    ports
}

fn outbound(rules: &mut Rules, cfg: &Config) {
    let family = rules.family;
    rules.append("OUTPUT", &["-p", "tcp", "-j", OUTPUT]);
    for ports in &cfg.outbound_ports_exclude {
        rules.dport(OUTPUT, ports, "RETURN");
    }
    // The proxy's inbound passthrough connects to the app from 127.0.0.6: not captured.
    rules.append(OUTPUT, &["-o", "lo", "-s", family.passthrough_source(), "-j", "RETURN"]);
    let tunnel = cfg.tunnel_port.to_string();
    let owners = cfg
        .uids
        .iter()
        .map(|id| ("--uid-owner", id))
        .chain(cfg.gids.iter().map(|id| ("--gid-owner", id)));
    for (owner, id) in owners {
        let id = id.to_string();
        // The proxy calling the pod's own IP (an app calling its own service through the
        // proxy): send it through the inbound side, as a call from another pod would go.
        rules.append(
            OUTPUT,
            &[
                "-o", "lo", "!", "-d", family.localhost(), "-p", "tcp", "!", "--dport", &tunnel,
                "-m", "owner", owner, &id, "-j", IN_REDIRECT,
            ],
        );
        // The app calling itself over lo (by pod IP) is not captured, unless loopback
        // ranges were explicitly included.
        if !cfg.captures_loopback() {
            rules.append(OUTPUT, &["-o", "lo", "-m", "owner", "!", owner, &id, "-j", "RETURN"]);
        }
        // The proxy's own upstream connections: never captured, or they would loop.
        rules.append(OUTPUT, &["-m", "owner", owner, &id, "-j", "RETURN"]);
    }
    rules.append(OUTPUT, &["-d", family.localhost(), "-j", "RETURN"]);
    for cidr in cfg.outbound_exclude.iter().filter(|c| c.family() == family) {
        rules.append(OUTPUT, &["-d", &cidr.to_string(), "-j", "RETURN"]);
    }
    for ports in &cfg.outbound_ports_include {
        rules.dport(OUTPUT, ports, REDIRECT);
    }
    match &cfg.outbound {
        Outbound::All => rules.append(OUTPUT, &["-j", REDIRECT]),
        Outbound::Cidrs(cidrs) => {
            for cidr in cidrs.iter().filter(|c| c.family() == family) {
                rules.append(OUTPUT, &["-d", &cidr.to_string(), "-j", REDIRECT]);
            }
        }
        Outbound::Disabled => {}
    }
}

struct Rules {
    family: Family,
    commands: Vec<Command>,
}

impl Rules {
    fn append(&mut self, chain: &str, rule: &[&str]) {
        let mut args = vec!["-A", chain];
        args.extend_from_slice(rule);
        self.commands.push(Command::nat(self.family, &args));
    }

    fn dport(&mut self, chain: &str, ports: &Ports, target: &str) {
        let ports = ports.to_string();
        self.append(chain, &["-p", "tcp", "--dport", &ports, "-j", target]);
    }
}
