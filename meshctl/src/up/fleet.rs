//! The local mesh's child processes and the waits for them to listen.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

/// One child process and how to start it again.
pub struct Member {
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    child: Child,
    /// When it was seen to exit, while it waits to be restarted.
    exited_at: Option<Instant>,
}

/// Child processes, stopped together.
#[derive(Default)]
pub struct Fleet(pub Vec<Member>);

/// What to do about children that exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// The first exit stops the whole mesh.
    Never,
    /// Start it again after the delay (Kubernetes' `restartPolicy: Always`, without the
    /// back-off growth: a local mesh wants its parts back quickly).
    After(Duration),
}

/// What the supervisor does next about one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Running,
    StopTheMesh,
    Wait,
    Restart,
}

/// The pure decision: a member that is running, or that exited at `exited_at`.
pub fn next(policy: RestartPolicy, exited_at: Option<Instant>, now: Instant) -> Next {
    match (exited_at, policy) {
        (None, _) => Next::Running,
        (Some(_), RestartPolicy::Never) => Next::StopTheMesh,
        (Some(at), RestartPolicy::After(delay)) if now.duration_since(at) >= delay => Next::Restart,
        (Some(_), RestartPolicy::After(_)) => Next::Wait,
    }
}

fn start(program: &Path, args: &[String]) -> Result<Child, String> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))
}

impl Fleet {
    pub fn spawn(&mut self, name: String, program: &Path, args: &[String]) -> Result<(), String> {
        let child = start(program, args)?;
        self.0.push(Member {
            name,
            program: program.to_path_buf(),
            args: args.to_vec(),
            child,
            exited_at: None,
        });
        Ok(())
    }

    /// Looks at every child once: restarts those due under `policy`; `Err` names the first
    /// that exited when the policy is to stop.
    pub fn supervise(&mut self, policy: RestartPolicy) -> Result<(), String> {
        let now = Instant::now();
        for m in &mut self.0 {
            if m.exited_at.is_none() && matches!(m.child.try_wait(), Ok(Some(_))) {
                m.exited_at = Some(now);
                if policy != RestartPolicy::Never {
                    eprintln!("meshctl up: {} exited; restarting it", m.name);
                }
            }
            match next(policy, m.exited_at, now) {
                Next::Running | Next::Wait => {}
                Next::StopTheMesh => return Err(format!("{} exited; stopping the mesh", m.name)),
                Next::Restart => match start(&m.program, &m.args) {
                    Ok(child) => {
                        m.child = child;
                        m.exited_at = None;
                        eprintln!("meshctl up: {} restarted (pid {})", m.name, m.child.id());
                    }
                    // Tried again at the next look.
                    Err(e) => {
                        eprintln!("meshctl up: {e}");
                        m.exited_at = Some(now);
                    }
                },
            }
        }
        Ok(())
    }
}

/// How long stopping the mesh waits for its children to exit after SIGTERM before it kills
/// them: longer than a proxy's default drain (5 s), as Kubernetes' grace period is.
const STOP_GRACE: Duration = Duration::from_secs(8);

impl Fleet {
    /// SIGTERM to each child still running, the last started first, waiting for each to
    /// exit (a proxy drains, flushes its access log and spans) before the next: the proxies
    /// and apps go before pilot and citadel, so no proxy sees its control plane vanish while
    /// it stops. Those still running when `grace` is over are killed.
    fn stop(&mut self, grace: Duration) {
        let deadline = Instant::now() + grace;
        for m in self.0.iter_mut().rev() {
            if !m.is_running() {
                continue;
            }
            let pid = Pid::from_raw(m.child.id() as i32);
            let _ = signal::kill(pid, Signal::SIGTERM);
            while m.is_running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        for m in &mut self.0 {
            let _ = m.child.kill();
            let _ = m.child.wait();
        }
    }
}

impl Member {
    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop(STOP_GRACE);
    }
}

/// The mesh's binaries sit next to meshctl (one `cargo build --bins`).
pub fn sibling(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = exe.with_file_name(name);
    path.exists().then_some(path.clone()).ok_or_else(|| {
        format!(
            "{} not found: build it with `cargo build --bins`",
            path.display()
        )
    })
}

pub fn wait_listening(addr: SocketAddr, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_decisions() {
        let t0 = Instant::now();
        let delay = Duration::from_secs(1);
        let always = RestartPolicy::After(delay);
        assert_eq!(next(always, None, t0), Next::Running);
        assert_eq!(next(RestartPolicy::Never, None, t0), Next::Running);
        assert_eq!(next(RestartPolicy::Never, Some(t0), t0), Next::StopTheMesh);
        assert_eq!(next(always, Some(t0), t0), Next::Wait);
        assert_eq!(next(always, Some(t0), t0 + delay), Next::Restart);
    }

    #[test]
    fn stopping_the_mesh_lets_children_exit_on_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("terminated");
        let script = format!(
            "trap 'echo term > {}; exit 0' TERM; while :; do sleep 0.05; done",
            marker.display()
        );
        let mut fleet = Fleet::default();
        fleet
            .spawn(
                "graceful".into(),
                Path::new("/bin/sh"),
                &["-c".into(), script],
            )
            .unwrap();
        // The shell has installed its trap once it runs its loop's first sleep.
        std::thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        fleet.stop(Duration::from_secs(10));
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "term\n");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "waited for the grace period"
        );
    }

    #[test]
    fn children_stop_last_started_first() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("order");
        // The first started writes at once on SIGTERM, the second only after a while: the
        // log reads "second, first" only if the second was stopped, and gone, first.
        let child = |name: &str, delay: &str| {
            format!(
                "trap 'sleep {delay}; echo {name} >> {}; exit 0' TERM; while :; do sleep 0.05; done",
                log.display()
            )
        };
        let mut fleet = Fleet::default();
        for (name, delay) in [("first", "0"), ("second", "0.3")] {
            fleet
                .spawn(
                    name.into(),
                    Path::new("/bin/sh"),
                    &["-c".into(), child(name, delay)],
                )
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(300));
        fleet.stop(Duration::from_secs(10));
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "second\nfirst\n");
    }

    #[test]
    fn a_child_that_ignores_sigterm_is_killed_after_the_grace_period() {
        let mut fleet = Fleet::default();
        fleet
            .spawn(
                "stubborn".into(),
                Path::new("/bin/sh"),
                &[
                    "-c".into(),
                    "trap '' TERM; while :; do sleep 0.05; done".into(),
                ],
            )
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        fleet.stop(Duration::from_millis(200));
        assert!(matches!(fleet.0[0].child.try_wait(), Ok(Some(_))));
    }

    #[test]
    fn an_exited_child_is_started_again() {
        let mut fleet = Fleet::default();
        fleet
            .spawn(
                "short".into(),
                Path::new("/bin/sh"),
                &["-c".into(), "exit 0".into()],
            )
            .unwrap();
        let first = fleet.0[0].child.id();
        let policy = RestartPolicy::After(Duration::ZERO);
        let deadline = Instant::now() + Duration::from_secs(10);
        while fleet.0[0].child.id() == first {
            assert!(Instant::now() < deadline, "never restarted");
            fleet.supervise(policy).unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut never = Fleet::default();
        never
            .spawn(
                "short".into(),
                Path::new("/bin/sh"),
                &["-c".into(), "exit 0".into()],
            )
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < deadline, "exit never seen");
            if let Err(e) = never.supervise(RestartPolicy::Never) {
                assert!(e.contains("short exited"), "{e}");
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
