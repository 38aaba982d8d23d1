//! `mesh-proxy iptables` against real iptables, inside throwaway network namespaces: the rules
//! it installs, and where connections actually go once they are in place.
//! Needs root: skipped without it, except where every test must run (see mesh-test-support).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clap::Parser;
use mesh_proxy::iptables::{Env, Executor, Family, IptablesArgs, cleanup_plan, plan};
use mesh_test_support::require_root;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: IptablesArgs,
}

fn args(flags: &[&str]) -> IptablesArgs {
    Cli::parse_from(std::iter::once("iptables").chain(flags.iter().copied())).args
}

/// Why these tests need root.
const NEEDS: &str = "network namespaces and iptables";

/// A network namespace, deleted when dropped (also when the test panics).
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Self {
        let name = format!("mesh-ipt-{}-{tag}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip netns add {name}");
        Netns { name }
    }

    /// `ip -n NS ARGS...`
    fn ip(&self, args: &[&str]) {
        let ok = Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip -n {} {args:?}", self.name);
    }

    fn executor(&self) -> Executor {
        Executor::with_prefix(["ip", "netns", "exec", self.name.as_str()])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The nat table's chain and rule lines, without comments and counters.
fn nat_rules(exec: &Executor, family: Family) -> Vec<String> {
    let save = exec.output(&[family.iptables_save(), "-t", "nat"]).unwrap();
    save.lines()
        .filter(|l| l.starts_with('-') || l.starts_with(':'))
        .map(|l| l.split(" [").next().unwrap_or(l).to_string())
        .collect()
}

fn mesh_lines(rules: &[String]) -> Vec<&String> {
    rules.iter().filter(|l| l.contains("MESH_")).collect()
}

fn assert_has(rules: &[String], line: &str) {
    assert!(
        rules.iter().any(|r| r == line),
        "missing `{line}` in:\n{}",
        rules.join("\n")
    );
}

const FLAGS: &[&str] = &[
    "-p",
    "15001",
    "-z",
    "15006",
    "-u",
    "1337",
    "-m",
    "REDIRECT",
    "-i",
    "*",
    "-x",
    "198.18.4.0/24,2001:db8:4::/48",
    "-b",
    "*",
    "-d",
    "9000",
    "-o",
    "5432",
];

#[test]
fn install_is_idempotent_and_cleanup_removes_everything() {
    if !require_root(NEEDS) {
        return;
    }
    let ns = Netns::new("install");
    let exec = ns.executor();
    let env = Env { ipv6: true };
    let install = plan(&args(FLAGS), &env).unwrap();

    exec.run(&install).unwrap();
    let v4 = nat_rules(&exec, Family::V4);
    for line in [
        ":MESH_INBOUND -",
        ":MESH_IN_REDIRECT -",
        ":MESH_OUTPUT -",
        ":MESH_REDIRECT -",
        "-A PREROUTING -p tcp -j MESH_INBOUND",
        "-A OUTPUT -p tcp -j MESH_OUTPUT",
        "-A MESH_INBOUND -p tcp -m tcp --dport 15021 -j RETURN",
        "-A MESH_INBOUND -p tcp -m tcp --dport 9000 -j RETURN",
        "-A MESH_INBOUND -p tcp -j MESH_IN_REDIRECT",
        "-A MESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
        "-A MESH_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
        "-A MESH_OUTPUT -p tcp -m tcp --dport 5432 -j RETURN",
        "-A MESH_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN",
        "-A MESH_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m tcp ! --dport 15008 \
         -m owner --uid-owner 1337 -j MESH_IN_REDIRECT",
        "-A MESH_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN",
        "-A MESH_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        "-A MESH_OUTPUT -m owner --gid-owner 1337 -j RETURN",
        "-A MESH_OUTPUT -d 127.0.0.1/32 -j RETURN",
        "-A MESH_OUTPUT -d 198.18.4.0/24 -j RETURN",
        "-A MESH_OUTPUT -j MESH_REDIRECT",
    ] {
        assert_has(&v4, line);
    }
    assert!(!v4.iter().any(|l| l.contains("2001:db8")));
    let v6 = nat_rules(&exec, Family::V6);
    for line in [
        "-A OUTPUT -p tcp -j MESH_OUTPUT",
        "-A MESH_OUTPUT -s ::6/128 -o lo -j RETURN",
        "-A MESH_OUTPUT -d ::1/128 -j RETURN",
        "-A MESH_OUTPUT -d 2001:db8:4::/48 -j RETURN",
        "-A MESH_OUTPUT -j MESH_REDIRECT",
    ] {
        assert_has(&v6, line);
    }
    assert!(!v6.iter().any(|l| l.contains("198.18.")));

    // Twice in a row: the same rules, not two copies.
    exec.run(&install).unwrap();
    assert_eq!(nat_rules(&exec, Family::V4), v4);
    assert_eq!(nat_rules(&exec, Family::V6), v6);

    let cleanup = cleanup_plan(&env);
    exec.run(&cleanup).unwrap();
    for family in [Family::V4, Family::V6] {
        let left = nat_rules(&exec, family);
        assert!(
            mesh_lines(&left).is_empty(),
            "{family:?} left behind:\n{}",
            left.join("\n")
        );
    }
    // Cleanup of a clean namespace is fine too.
    exec.run(&cleanup).unwrap();

    // And it can be installed again afterwards.
    exec.run(&install).unwrap();
    assert_eq!(nat_rules(&exec, Family::V4), v4);
}

#[test]
fn cleanup_leaves_rules_it_did_not_install() {
    if !require_root(NEEDS) {
        return;
    }
    let ns = Netns::new("foreign");
    let exec = ns.executor();
    let env = Env { ipv6: false };
    let foreign = "-A OUTPUT -d 198.18.9.0/24 -p tcp -j RETURN";
    let add = [
        "iptables",
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "-d",
        "198.18.9.0/24",
        "-j",
        "RETURN",
    ];
    exec.output(&add).unwrap();
    exec.run(&plan(&args(&["-i", "198.18.0.0/15", "-b", "80"]), &env).unwrap())
        .unwrap();
    let installed = nat_rules(&exec, Family::V4);
    assert_has(
        &installed,
        "-A MESH_OUTPUT -d 198.18.0.0/15 -j MESH_REDIRECT",
    );
    assert_has(
        &installed,
        "-A MESH_INBOUND -p tcp -m tcp --dport 80 -j MESH_IN_REDIRECT",
    );
    assert_has(&installed, foreign);

    exec.run(&cleanup_plan(&env)).unwrap();
    let left = nat_rules(&exec, Family::V4);
    assert!(mesh_lines(&left).is_empty(), "{}", left.join("\n"));
    assert_has(&left, foreign);
}

#[test]
fn a_failing_command_stops_the_install_and_names_itself() {
    if !require_root(NEEDS) {
        return;
    }
    let ns = Netns::new("fail");
    let exec = ns.executor();
    let env = Env { ipv6: false };
    // Without its cleanup prefix, install fails at `-N` on a chain that already exists.
    let mut install = plan(&args(&["-i", "*"]), &env).unwrap();
    install.drain(..cleanup_plan(&env).len());
    exec.run(&install[..1]).unwrap();
    let err = exec.run(&install).unwrap_err().to_string();
    assert!(err.contains("iptables -t nat -N MESH_INBOUND"), "{err}");
    assert!(err.contains("exists"), "{err}");
    // Nothing after the failing command ran.
    let rules = nat_rules(&exec, Family::V4);
    assert!(
        !rules.iter().any(|l| l.contains("MESH_REDIRECT")),
        "{}",
        rules.join("\n")
    );
}

/// Set in the environment of the helper processes started inside a namespace.
const HELPER: &str = "MESH_IPT_HELPER";

/// Not a test of its own: the body of the helper processes that the traffic test starts inside
/// the namespaces (the test process cannot enter one), by running this binary again.
/// `serve ADDR=TAG,...` answers every connection with its listener's tag;
/// `connect ADDR` prints `REPLY <tag>`, or `REPLY refused`.
#[test]
#[ignore = "the body of helper processes inside network namespaces, run by the traffic test"]
fn netns_helper_process() {
    let role = std::env::var(HELPER).expect("run by the traffic test, which sets MESH_IPT_HELPER");
    match role.split_once(' ') {
        Some(("serve", specs)) => {
            for spec in specs.split(',') {
                let (addr, tag) = spec.split_once('=').unwrap();
                let listener = TcpListener::bind(addr).unwrap();
                let tag = tag.to_string();
                std::thread::spawn(move || {
                    for mut conn in listener.incoming().flatten() {
                        let _ = conn.write_all(tag.as_bytes());
                    }
                });
            }
            println!("READY");
            loop {
                std::thread::park();
            }
        }
        Some(("connect", addr)) => {
            let timeout = Duration::from_secs(3);
            let reply = match TcpStream::connect_timeout(&addr.parse().unwrap(), timeout) {
                Ok(mut conn) => {
                    let mut reply = String::new();
                    conn.set_read_timeout(Some(timeout)).unwrap();
                    conn.read_to_string(&mut reply).unwrap();
                    reply
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => "refused".into(),
                Err(e) => format!("error {e}"),
            };
            println!("REPLY {reply}");
        }
        _ => panic!("bad {HELPER}: {role}"),
    }
}

/// A copy of `exe` that another uid can run: the checkout may sit under a directory only root
/// can enter (such as /root).
fn reachable_by_any_user(exe: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("mesh-ipt-bin-{}", std::process::id()));
    let copy = dir.join(exe.file_name().unwrap());
    if !copy.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::copy(exe, &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    copy
}

fn helper(ns: &Netns, uid: Option<&str>, role: String) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name]);
    if let Some(uid) = uid {
        cmd.args(["setpriv", "--reuid", uid, "--regid", uid, "--clear-groups"]);
    }
    cmd.arg(reachable_by_any_user(&std::env::current_exe().unwrap()))
        .args([
            "--exact",
            "netns_helper_process",
            "--ignored",
            "--nocapture",
        ])
        .env(HELPER, role);
    cmd
}

/// Listeners inside a namespace, killed when dropped.
struct Servers(Child);

impl Servers {
    fn start(ns: &Netns, specs: &[(&str, &str)]) -> Self {
        let specs: Vec<String> = specs
            .iter()
            .map(|(addr, tag)| format!("{addr}={tag}"))
            .collect();
        let mut child = helper(ns, None, format!("serve {}", specs.join(",")))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("READY") {
            line.clear();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "servers in {} exited",
                ns.name
            );
        }
        Servers(child)
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Connects from inside `ns` (as `uid`, or root) and returns what answered.
fn call(ns: &Netns, uid: Option<&str>, addr: &str) -> String {
    let out = helper(ns, uid, format!("connect {addr}")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(at) = stdout.find("REPLY ") else {
        panic!(
            "no reply from {addr}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    stdout[at + 6..]
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn captured_connections_reach_the_capture_ports_and_exempted_ones_do_not() {
    if !require_root(NEEDS) {
        return;
    }
    // A pod (198.18.0.1) and a peer (198.18.0.2 and .3) joined by a veth pair.
    let pod = Netns::new("pod");
    let peer = Netns::new("peer");
    pod.ip(&["link", "set", "lo", "up"]);
    peer.ip(&["link", "set", "lo", "up"]);
    let veth = [
        "link",
        "add",
        "veth-pod",
        "type",
        "veth",
        "peer",
        "name",
        "veth-peer",
    ];
    pod.ip(&[&veth[..], &["netns", &peer.name]].concat());
    pod.ip(&["addr", "add", "198.18.0.1/24", "dev", "veth-pod"]);
    pod.ip(&["link", "set", "veth-pod", "up"]);
    peer.ip(&["addr", "add", "198.18.0.2/24", "dev", "veth-peer"]);
    peer.ip(&["addr", "add", "198.18.0.3/24", "dev", "veth-peer"]);
    peer.ip(&["link", "set", "veth-peer", "up"]);

    // Stand-ins for the proxy's listeners and the app, each answering with its name.
    let _pod_servers = Servers::start(
        &pod,
        &[
            ("0.0.0.0:15001", "outbound"),
            ("0.0.0.0:15006", "inbound"),
            ("0.0.0.0:15021", "health"),
            ("0.0.0.0:8080", "app"),
            ("0.0.0.0:9000", "app-9000"),
        ],
    );
    let _peer_servers = Servers::start(&peer, &[("0.0.0.0:80", "peer"), ("0.0.0.0:5432", "peer")]);
    assert_eq!(call(&pod, None, "198.18.0.2:80"), "peer");
    assert_eq!(call(&peer, None, "198.18.0.1:8080"), "app");

    let flags = [
        "-u",
        "1337",
        "-i",
        "*",
        "-x",
        "198.18.0.3/32",
        "-b",
        "*",
        "-d",
        "9000",
        "-o",
        "5432",
    ];
    let env = Env { ipv6: false };
    pod.executor()
        .run(&plan(&args(&flags), &env).unwrap())
        .unwrap();

    let proxy = Some("1337");
    for (from, uid, to, expected) in [
        // The app's outbound calls go to the outbound port...
        (&pod, None, "198.18.0.2:80", "outbound"),
        // ...except to excluded ports and ranges.
        (&pod, None, "198.18.0.2:5432", "peer"),
        (&pod, None, "198.18.0.3:80", "peer"),
        // The proxy's own upstream connections are not captured again.
        (&pod, proxy, "198.18.0.2:80", "peer"),
        // The app calling itself is left alone; the proxy calling the pod IP goes inbound.
        (&pod, None, "198.18.0.1:8080", "app"),
        (&pod, None, "127.0.0.1:8080", "app"),
        (&pod, proxy, "198.18.0.1:8080", "inbound"),
        (&pod, proxy, "127.0.0.1:8080", "app"),
        // Inbound calls go to the inbound port, except excluded ports and the proxy's own.
        (&peer, None, "198.18.0.1:8080", "inbound"),
        (&peer, None, "198.18.0.1:9000", "app-9000"),
        (&peer, None, "198.18.0.1:15021", "health"),
    ] {
        assert_eq!(
            call(from, uid, to),
            expected,
            "{} as {uid:?} to {to}",
            from.name
        );
    }

    pod.executor().run(&cleanup_plan(&env)).unwrap();
    assert_eq!(call(&pod, None, "198.18.0.2:80"), "peer");
    assert_eq!(call(&peer, None, "198.18.0.1:8080"), "app");
}
