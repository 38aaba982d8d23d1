//! The `mesh-citadel` binary as a process: flags, first start, a signed certificate, restart.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use mesh_citadel::client::{CitadelClient, ClientConfig};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Kills the child when the test ends, pass or fail.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(dir: &std::path::Path, tokens: &std::path::Path, port: u16) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_mesh-citadel"))
            .args(["--dir".as_ref(), dir.as_os_str()])
            .args(["--trust-domain", TD])
            .args(["--grpc-addr", &format!("127.0.0.1:{port}")])
            .args(["--tokens".as_ref(), tokens.as_os_str()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Waits for the CA's root to be on disk and its port to answer TLS.
async fn connect(dir: &std::path::Path, port: u16, token: &str) -> CitadelClient {
    for _ in 0..100 {
        if let Ok(pem) = std::fs::read(dir.join("root-cert.pem")) {
            let roots: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .unwrap();
            let config = ClientConfig {
                addr: format!("127.0.0.1:{port}"),
                server_name: "mesh-citadel".into(),
                roots,
                client_identity: None,
                token: Some(token.to_owned()),
            };
            if let Ok(client) = CitadelClient::connect(config).await {
                return client;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("mesh-citadel did not come up on port {port}");
}

#[tokio::test]
async fn binary_signs_and_keeps_its_root_across_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let tokens = tmp.path().join("tokens");
    // The token subcommand makes the workload's token file and prints its path.
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-citadel"))
        .args([
            "token",
            "--namespace",
            "bookinfo",
            "--service-account",
            "ratings",
        ])
        .args(["--tokens".as_ref(), tokens.as_os_str()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token_file = std::path::PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert_eq!(token_file, tokens.join("bookinfo/ratings"));
    let token = std::fs::read_to_string(token_file)
        .unwrap()
        .trim()
        .to_owned();

    let port = free_port();
    let proc = spawn(&dir, &tokens, port);
    let mut client = connect(&dir, port, &token).await;
    let (_k, csr_pem) = csr(&[], &[]);
    let chain = client.create_certificate(&csr_pem, None).await.unwrap();
    assert_eq!(
        sans(&chain[0]),
        vec!["URI:spiffe://cluster.local/ns/bookinfo/sa/ratings".to_owned()]
    );
    let roots = client.trust_bundle().await.unwrap();
    verify_chain(&chain, &roots).unwrap();
    drop(client);
    drop(proc);

    let port = free_port();
    let _proc = spawn(&dir, &tokens, port);
    let mut client = connect(&dir, port, &token).await;
    assert_eq!(
        client.trust_bundle().await.unwrap(),
        roots,
        "same root after restart"
    );
}
