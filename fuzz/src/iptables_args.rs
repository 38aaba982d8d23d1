//! `mesh-proxy iptables` flags (Istio's istio-iptables names) validated and turned into the
//! commands the init container runs. Input: one argument per line.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use clap::Parser;
use mesh_proxy::iptables::{Env, IptablesArgs, plan};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: IptablesArgs,
}

pub fn run(data: &[u8]) {
    let argv = std::iter::once(OsString::from("iptables"))
        .chain(crate::lines(data).map(|a| OsString::from_vec(a.to_vec())));
    let Ok(cli) = Cli::try_parse_from(argv) else {
        return;
    };
    for ipv6 in [false, true] {
        let env = Env { ipv6 };
        let Ok(commands) = plan(&cli.args, &env) else {
            return;
        };
        assert_eq!(
            Ok(commands.clone()),
            plan(&cli.args, &env),
            "not a function"
        );
        for c in &commands {
            // Flags are validated into ports, ids and ranges: no raw flag text (spaces,
            // quotes, control bytes, empty words) reaches an iptables argv.
            for arg in &c.argv {
                assert!(
                    !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_graphic()),
                    "{arg:?} in {c}"
                );
            }
        }
    }
}
