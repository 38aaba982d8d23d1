//! End-to-end test support: the workspace's built binaries, child processes that are killed
//! when dropped, free loopback ports, network namespaces and plain HTTP/1.1 over TCP.

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A binary of the workspace, built by `cargo build --workspace --bins`.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target profile dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the end-to-end tests",
        path.display()
    );
    path
}

/// A child process, killed and reaped when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Self {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            child,
            name: name.to_string(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits up to `limit` for the process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `meshctl up` on a copy of an example directory's YAML (edits to the copy reach the running
/// mesh), pilot and citadel on free ports, a fresh state directory, in a process group of its
/// own that is killed whole (meshctl and everything it started) when dropped.
pub struct LocalMesh {
    pub meshctl: Proc,
    /// Pilot's debug HTTP address (`/debug/syncz`).
    pub pilot_http: SocketAddr,
    /// The copy of the example.
    pub dir: tempfile::TempDir,
    /// meshctl's `--state-dir`.
    pub state: tempfile::TempDir,
}

impl LocalMesh {
    /// `example`: a directory under the workspace's `examples/`. `stdout`: where meshctl's
    /// summary goes (piped to read it in the test, or inherited).
    pub fn up(example: &str, stdout: Stdio) -> LocalMesh {
        Self::up_with(example, &[], &[], stdout)
    }

    /// [`LocalMesh::up`] with more YAML files beside the example's (`(file name, text)`) and
    /// more `meshctl up` arguments.
    pub fn up_with(
        example: &str,
        extra_files: &[(&str, &str)],
        extra_args: &[&str],
        stdout: Stdio,
    ) -> LocalMesh {
        let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples")
            .join(example);
        let dir = tempfile::tempdir().expect("temp dir");
        for entry in std::fs::read_dir(&example).expect("example directory") {
            let path = entry.expect("directory entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                std::fs::copy(&path, dir.path().join(path.file_name().expect("file name")))
                    .expect("copy of the example");
            }
        }
        for (name, text) in extra_files {
            std::fs::write(dir.path().join(name), text).expect("an extra file");
        }
        let grpc = format!("127.0.0.1:{}", free_port());
        let http = format!("127.0.0.1:{}", free_port());
        let ca = format!("127.0.0.1:{}", free_port());
        let state = tempfile::tempdir().expect("temp dir");
        let meshctl = Proc::spawn(
            "meshctl up",
            Command::new(binary("meshctl"))
                .args([
                    "up",
                    dir.path().to_str().expect("UTF-8 path"),
                    "--grpc-addr",
                    &grpc,
                    "--http-addr",
                    &http,
                    "--ca-addr",
                    &ca,
                    "--state-dir",
                    state.path().to_str().expect("UTF-8 path"),
                ])
                .args(extra_args)
                .stdout(stdout)
                .process_group(0),
        );
        LocalMesh {
            meshctl,
            pilot_http: http.parse().expect("an address"),
            dir,
            state,
        }
    }
}

impl Drop for LocalMesh {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.meshctl.pid()),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// A loopback port free now, below the ephemeral range (see `mesh_echo::ports`).
pub fn free_port() -> u16 {
    mesh_echo::ports::free_loopback_port()
}

/// Polls `check` until it is true or `limit` passes.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// A plain HTTP/1.1 request with `Connection: close`; returns the status and the whole body.
pub fn http_get(addr: SocketAddr, host: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    parse_response(&text)
}

pub fn parse_response(text: &str) -> std::io::Result<(u16, String)> {
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not HTTP: {text:?}"),
        )
    };
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The uid a captured proxy runs as (Istio's 1337): iptables lets its own traffic out.
pub const PROXY_UID: &str = "1337";

/// A network namespace: a "pod" with its own interfaces and iptables, deleted when dropped.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        let name = format!("mesh-e2e-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        run("ip", &["netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NS ...`
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// `curl -s --max-time 5 ARGS` inside the namespace: its standard output.
    pub fn curl(&self, args: &[&str]) -> String {
        let out = self
            .command("curl")
            .args(["-s", "--max-time", "5"])
            .args(args)
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A mesh-proxy inside the namespace running `config` (YAML) as [`PROXY_UID`], its admin
    /// on 127.0.0.1:15000, once it is ready. The proxy's uid may not be able to enter the
    /// checkout (say under /root): binary and config are copied to a directory it can read,
    /// returned with the process so they live as long as it does.
    pub fn static_proxy(&self, config: &str) -> (tempfile::TempDir, Proc) {
        let dir = shared_dir();
        let cfg = dir.path().join("proxy.yaml");
        std::fs::write(&cfg, config).unwrap();
        let proxy_bin = readable_copy(&binary("mesh-proxy"), dir.path().join("mesh-proxy"), 0o755);
        let proxy = Proc::spawn(
            "mesh-proxy",
            self.command("setpriv").args([
                "--reuid",
                PROXY_UID,
                "--regid",
                PROXY_UID,
                "--clear-groups",
                proxy_bin.to_str().unwrap(),
                "--config",
                cfg.to_str().unwrap(),
                "--admin-addr",
                "127.0.0.1:15000",
            ]),
        );
        assert!(
            eventually(Duration::from_secs(10), || self
                .curl(&["http://127.0.0.1:15000/ready"])
                .starts_with("LIVE")),
            "proxy ready"
        );
        (dir, proxy)
    }

    /// Runs a command inside the namespace and asserts it succeeded.
    pub fn exec(&self, program: &str, args: &[&str]) -> String {
        let out = self
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(status.success(), "{program} {args:?} failed");
}

/// A temp directory every user can enter: proxies run as uid 1337 and read their files there.
pub fn shared_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("mesh-e2e")
        .tempdir()
        .expect("a temp dir");
    std::fs::set_permissions(dir.path(), PermissionsExt::from_mode(0o755))
        .expect("temp dir permissions");
    dir
}

/// Copies `from` to `to` with `mode`, e.g. a binary or credential the proxy's uid must read (it
/// may not be able to enter the checkout, say under /root).
pub fn readable_copy(from: &std::path::Path, to: PathBuf, mode: u32) -> PathBuf {
    std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    std::fs::set_permissions(&to, PermissionsExt::from_mode(mode)).expect("copy permissions");
    to
}
