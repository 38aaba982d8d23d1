//! Runs a plan's commands, stopping at the first failure.

use std::io;
use std::process::{self, ExitStatus};

use super::command::{Command, shell_line};

/// Runs commands, optionally behind a wrapper such as `ip netns exec NS`, which is how tests
/// reach a network namespace the test process itself is not in.
#[derive(Debug, Clone, Default)]
pub struct Executor {
    pub prefix: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("`{command}` could not be started: {source}")]
    Spawn { command: String, source: io::Error },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
}

impl Executor {
    pub fn with_prefix<I, S>(prefix: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Executor {
            prefix: prefix.into_iter().map(Into::into).collect(),
        }
    }

    /// Runs each command in order; the first failure ends the run and is returned.
    pub fn run(&self, commands: &[Command]) -> Result<(), ExecError> {
        commands.iter().try_for_each(|c| self.run_one(c))
    }

    pub fn run_one(&self, command: &Command) -> Result<(), ExecError> {
        match self.output(&command.argv) {
            Err(ExecError::Failed { stderr, .. }) if command.missing_ok && is_missing(&stderr) => {
                tracing::debug!(command = %command, "nothing to remove");
                Ok(())
            }
            Err(e) => Err(e),
            Ok(_) => {
                tracing::debug!(command = %command, "ran");
                Ok(())
            }
        }
    }

    /// Runs one argv (behind the prefix) and returns its stdout.
    pub fn output<S: AsRef<str>>(&self, argv: &[S]) -> Result<String, ExecError> {
        let full: Vec<&str> = self
            .prefix
            .iter()
            .map(String::as_str)
            .chain(argv.iter().map(AsRef::as_ref))
            .collect();
        let command = shell_line(&full);
        let Some((program, args)) = full.split_first() else {
            return Err(ExecError::Spawn {
                command,
                source: io::Error::new(io::ErrorKind::InvalidInput, "empty command"),
            });
        };
        let out = match process::Command::new(program).args(args).output() {
            Ok(out) => out,
            Err(source) => return Err(ExecError::Spawn { command, source }),
        };
        if !out.status.success() {
            return Err(ExecError::Failed {
                command,
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Whether iptables failed only because the chain or rule is not there. The messages are
/// iptables-nft's and iptables-legacy's for `-D`, `-F` and `-X` on absent objects.
fn is_missing(stderr: &str) -> bool {
    [
        "does not exist",
        "No chain/target/match by that name",
        "does a matching rule exist",
    ]
    .iter()
    .any(|m| stderr.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        Command {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            missing_ok: false,
        }
    }

    #[test]
    fn runs_commands_in_order_and_stops_at_the_first_failure() {
        let dir = std::env::temp_dir().join(format!("mesh-ipt-exec-{}", process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let mark = |n: &str| sh(&format!("touch {}/{n}", dir.display()));
        let commands = [
            mark("one"),
            sh("echo 'iptables: Chain already exists.' >&2; exit 1"),
            mark("two"),
        ];

        let err = Executor::default().run(&commands).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("sh -c 'echo"), "{text}");
        assert!(text.contains("iptables: Chain already exists."), "{text}");
        assert!(matches!(err, ExecError::Failed { status, .. } if status.code() == Some(1)));
        assert!(dir.join("one").exists());
        assert!(!dir.join("two").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn absent_chains_and_rules_are_fine_only_where_allowed() {
        let exec = Executor::default();
        for msg in [
            "iptables v1.8.9 (nf_tables): Chain 'MESH_OUTPUT' does not exist",
            "iptables: No chain/target/match by that name.",
            "iptables: Bad rule (does a matching rule exist in that chain?).",
        ] {
            let missing = sh(&format!("echo \"{msg}\" >&2; exit 1"));
            assert!(exec.run_one(&missing).is_err(), "{msg}");
            assert!(exec.run_one(&missing.missing_ok()).is_ok(), "{msg}");
        }
        // Any other failure still fails a cleanup step.
        let denied = sh("echo 'Permission denied (you must be root)' >&2; exit 4").missing_ok();
        assert!(exec.run_one(&denied).is_err());
    }

    #[test]
    fn the_prefix_wraps_every_command_and_shows_in_errors() {
        let exec = Executor::with_prefix(["env", "MESH_IPT_TEST=1"]);
        let out = exec.output(&["sh", "-c", "echo $MESH_IPT_TEST"]).unwrap();
        assert_eq!(out, "1\n");
        let err = exec.output(&["false"]).unwrap_err().to_string();
        assert!(
            err.starts_with("`env MESH_IPT_TEST=1 false` failed"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_program_is_a_spawn_error_even_for_cleanup_steps() {
        let c = Command {
            argv: vec!["mesh-ipt-no-such-program".into()],
            missing_ok: true,
        };
        let err = Executor::default().run_one(&c).unwrap_err();
        assert!(matches!(err, ExecError::Spawn { .. }), "{err}");
        assert!(err.to_string().contains("mesh-ipt-no-such-program"));
    }
}
