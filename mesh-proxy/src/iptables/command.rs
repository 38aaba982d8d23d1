//! One external command of a plan, as an argv vector.

use std::fmt;

use super::chains::TABLE;
use super::net::Family;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub argv: Vec<String>,
    /// Failing because the chain or rule is absent counts as success: cleanup steps, which
    /// must work on a pod that was never (or only partly) set up.
    pub missing_ok: bool,
}

impl Command {
    /// `iptables -t nat ARGS...` (or ip6tables).
    pub fn nat(family: Family, args: &[&str]) -> Self {
        let mut argv = vec![family.iptables().to_string(), "-t".into(), TABLE.into()];
        argv.extend(args.iter().map(|a| a.to_string()));
        Command {
            argv,
            missing_ok: false,
        }
    }

    pub fn missing_ok(mut self) -> Self {
        self.missing_ok = true;
        self
    }
}

/// The command as a shell line; arguments with shell-special characters are single-quoted.
impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", shell_line(&self.argv))
    }
}

pub fn shell_line<S: AsRef<str>>(argv: &[S]) -> String {
    argv.iter()
        .map(|a| quote(a.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:,=+@%!".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_as_a_shell_line() {
        let c = Command::nat(Family::V6, &["-A", "MESH_OUTPUT", "!", "-d", "::1/128"]);
        assert_eq!(
            c.to_string(),
            "ip6tables -t nat -A MESH_OUTPUT ! -d ::1/128"
        );
        assert!(!c.missing_ok);
        assert!(c.missing_ok().missing_ok);
    }

    #[test]
    fn quotes_what_a_shell_would_expand() {
        assert_eq!(
            shell_line(&["echo", "*", "", "a b", "it's"]),
            r"echo '*' '' 'a b' 'it'\''s'"
        );
    }
}
