//! `meshctl up examples/tcp-echo` runs Istio's tcp-echo sample as real processes: lines sent
//! to the client's egress port come back from v1 ("one ...") while the VirtualService `tcp`
//! route says 100/0, and new connections reach v2 ("two ...") once the copied example is
//! edited to 0/100, without a failed connection in between. The proxies speak mTLS (STRICT).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesh_e2e::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// One line-oriented TCP connection.
struct LineConn {
    reader: BufReader<TcpStream>,
}

impl LineConn {
    fn open(addr: SocketAddr) -> std::io::Result<Self> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(Self {
            reader: BufReader::new(s),
        })
    }

    /// Sends `line` and reads the answer; a closed connection is an error.
    fn ask(&mut self, line: &str) -> std::io::Result<String> {
        writeln!(self.reader.get_mut(), "{line}")?;
        let mut answer = String::new();
        if self.reader.read_line(&mut answer)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(answer.trim_end().to_string())
    }
}

/// One line over a new connection.
fn ask_once(addr: SocketAddr, line: &str) -> std::io::Result<String> {
    LineConn::open(addr)?.ask(line)
}

#[test]
fn meshctl_up_runs_tcp_echo_and_shifts_tcp_traffic_live() {
    let mut mesh = LocalMesh::up("tcp-echo", Stdio::piped());
    // meshctl's summary, collected (and passed on to the test's output) as it is printed.
    let summary = Arc::new(Mutex::new(String::new()));
    let stdout = mesh.meshctl.child.stdout.take().unwrap();
    let collected = summary.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("meshctl: {line}");
            collected.lock().unwrap().push_str(&format!("{line}\n"));
        }
    });

    let egress: SocketAddr = "127.0.0.1:9000".parse().unwrap();
    assert!(
        eventually(Duration::from_secs(40), || ask_once(egress, "ready")
            .is_ok_and(|a| a == "one ready")),
        "the local mesh came up and tcp-echo v1 answers through sleep's egress port"
    );
    assert!(
        eventually(Duration::from_secs(10), || summary
            .lock()
            .unwrap()
            .contains("egress listeners")),
        "meshctl printed its summary"
    );
    let printed = summary.lock().unwrap().clone();
    let listed = |needle: &str| printed.lines().any(|l| l.contains(needle));
    assert!(
        printed
            .lines()
            .any(|l| l.contains("sleep-v1") && l.contains("127.0.0.1:9000") && l.contains("TCP")),
        "the summary names the client's TCP egress listener:\n{printed}"
    );
    assert!(
        listed("127.0.0.1:29190 (tcp)") && listed("127.0.0.1:29192 (http)"),
        "the summary tells TCP apps from HTTP ones:\n{printed}"
    );

    // 100/0: every connection reaches v1.
    for i in 0..20 {
        assert_eq!(
            ask_once(egress, &format!("hello {i}")).unwrap(),
            format!("one hello {i}")
        );
    }
    // The apps are line echoes under their app-name; STRICT refuses plaintext at a proxy.
    assert_eq!(
        ask_once("127.0.0.1:29191".parse().unwrap(), "direct").unwrap(),
        "two direct"
    );
    // STRICT: a plaintext client at tcp-echo-v1's proxy gets at most a TLS alert, never v1.
    let plaintext = ask_once("127.0.0.1:19190".parse().unwrap(), "plaintext");
    assert!(
        !plaintext.as_ref().is_ok_and(|a| a.contains("plaintext")),
        "STRICT mTLS refuses a plaintext client at tcp-echo-v1's proxy: {plaintext:?}"
    );

    let mut open = LineConn::open(egress).unwrap();
    assert_eq!(open.ask("before").unwrap(), "one before");

    // Edit the VirtualService of the running mesh: everything to v2.
    let vs = mesh.dir.path().join("virtual-service-tcp-echo.yaml");
    let text = std::fs::read_to_string(&vs).unwrap();
    let all_v2 = text
        .replace(
            "subset: v1 }\n          weight: 100",
            "subset: v1 }\n          weight: 0",
        )
        .replace(
            "subset: v2 }\n          weight: 0",
            "subset: v2 }\n          weight: 100",
        );
    assert_ne!(all_v2, text, "the edit applies to the example");
    std::fs::write(&vs, all_v2).unwrap();
    let edited = Instant::now();

    // New connections, one after another: each must be answered, by v1 until the change
    // arrives, then by v2; done after 10 answers in a row from v2.
    let mut answers = Vec::new();
    let mut twos_in_a_row = 0;
    while twos_in_a_row < 10 {
        assert!(
            edited.elapsed() < Duration::from_secs(10),
            "v2 did not take the traffic: {answers:?}"
        );
        let i = answers.len();
        let answer = ask_once(egress, &format!("x {i}"))
            .unwrap_or_else(|e| panic!("connection {i} failed during the change: {e}"));
        if answer == format!("two x {i}") {
            twos_in_a_row += 1;
        } else {
            assert_eq!(answer, format!("one x {i}"), "after {answers:?}");
            assert_eq!(twos_in_a_row, 0, "v1 again after v2: {answers:?} {answer}");
        }
        answers.push(answer);
    }
    eprintln!(
        "the edit took effect after {:?} ({} connections)",
        edited.elapsed(),
        answers.len()
    );
    // A connection opened before the change keeps its upstream.
    assert_eq!(open.ask("after").unwrap(), "one after");
    drop(open);

    // SIGTERM to meshctl alone (as a service manager sends it) stops the whole mesh.
    kill(Pid::from_raw(mesh.meshctl.pid()), Signal::SIGTERM).unwrap();
    assert!(
        mesh.meshctl.wait_exit(Duration::from_secs(10)).is_some(),
        "meshctl up did not exit on SIGTERM"
    );
    let app: SocketAddr = "127.0.0.1:29190".parse().unwrap();
    assert!(
        eventually(Duration::from_secs(5), || {
            TcpStream::connect_timeout(&egress, Duration::from_millis(200)).is_err()
                && TcpStream::connect_timeout(&app, Duration::from_millis(200)).is_err()
        }),
        "the proxies and apps kept running after meshctl up stopped"
    );
}
