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
        let nat = |rule: String| Command::nat(family, &words(&rule)).missing_ok();
        for (builtin, chain) in JUMPS {
            commands.push(nat(format!("-D {builtin} -p tcp -j {chain}")));
        }
        for op in ["-F", "-X"] {
            for chain in chains::ALL {
                commands.push(nat(format!("{op} {chain}")));
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
    let (to_outbound, to_inbound) = (cfg.outbound_port, cfg.inbound_port);
    rules.append(
        REDIRECT,
        &format!("-p tcp -j REDIRECT --to-ports {to_outbound}"),
    );
    rules.append(
        IN_REDIRECT,
        &format!("-p tcp -j REDIRECT --to-ports {to_inbound}"),
    );
    inbound(&mut rules, cfg);
    outbound(&mut rules, cfg);
    rules.commands
}

fn inbound(rules: &mut Rules, cfg: &Config) {
    if cfg.inbound == Inbound::Disabled {
        return;
    }
    rules.append("PREROUTING", &format!("-p tcp -j {INBOUND}"));
    let bypass = inbound_bypass(cfg);
    for ports in &bypass {
        rules.dport(INBOUND, ports, "RETURN");
    }
    match &cfg.inbound {
        Inbound::All { except } => {
            for ports in except.iter().filter(|p| !bypass.contains(p)) {
                rules.dport(INBOUND, ports, "RETURN");
            }
            rules.append(INBOUND, &format!("-p tcp -j {IN_REDIRECT}"));
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
    let (localhost, tunnel) = (family.localhost(), cfg.tunnel_port);
    rules.append("OUTPUT", &format!("-p tcp -j {OUTPUT}"));
    for ports in &cfg.outbound_ports_exclude {
        rules.dport(OUTPUT, ports, "RETURN");
    }
    // The proxy's inbound passthrough connects to the app from 127.0.0.6: not captured.
    let passthrough = family.passthrough_source();
    rules.append(OUTPUT, &format!("-o lo -s {passthrough} -j RETURN"));
    let uids = cfg.uids.iter().map(|id| ("--uid-owner", id));
    let gids = cfg.gids.iter().map(|id| ("--gid-owner", id));
    for (owner, id) in uids.chain(gids) {
        // The proxy calling the pod's own IP (an app calling its own service through the
        // proxy): send it through the inbound side, as a call from another pod would go.
        rules.append(
            OUTPUT,
            &format!(
                "-o lo ! -d {localhost} -p tcp ! --dport {tunnel} \
                 -m owner {owner} {id} -j {IN_REDIRECT}"
            ),
        );
        // The app calling itself over lo (by pod IP) is not captured, unless loopback
        // ranges were explicitly included.
        if !cfg.captures_loopback() {
            rules.append(OUTPUT, &format!("-o lo -m owner ! {owner} {id} -j RETURN"));
        }
        // The proxy's own upstream connections: never captured, or they would loop.
        rules.append(OUTPUT, &format!("-m owner {owner} {id} -j RETURN"));
    }
    rules.append(OUTPUT, &format!("-d {localhost} -j RETURN"));
    for cidr in cfg.outbound_exclude.iter().filter(|c| c.family() == family) {
        rules.append(OUTPUT, &format!("-d {cidr} -j RETURN"));
    }
    for ports in &cfg.outbound_ports_include {
        rules.dport(OUTPUT, ports, REDIRECT);
    }
    match &cfg.outbound {
        Outbound::All => rules.append(OUTPUT, &format!("-j {REDIRECT}")),
        Outbound::Cidrs(cidrs) => {
            for cidr in cidrs.iter().filter(|c| c.family() == family) {
                rules.append(OUTPUT, &format!("-d {cidr} -j {REDIRECT}"));
            }
        }
        Outbound::Disabled => {}
    }
}

/// Rules are written as text for readability; no argument contains a space.
fn words(rule: &str) -> Vec<&str> {
    rule.split_whitespace().collect()
}

struct Rules {
    family: Family,
    commands: Vec<Command>,
}

impl Rules {
    fn append(&mut self, chain: &str, rule: &str) {
        let mut args = vec!["-A", chain];
        args.extend(words(rule));
        self.commands.push(Command::nat(self.family, &args));
    }

    fn dport(&mut self, chain: &str, ports: &Ports, target: &str) {
        self.append(chain, &format!("-p tcp --dport {ports} -j {target}"));
    }
}
