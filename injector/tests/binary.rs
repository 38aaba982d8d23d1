//! The built `mesh-injector` binary: flags, settings file, and one review over HTTPS.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use k8s_openapi::ByteString;
use serde_json::Value;

struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn binary_serves_inject_with_its_settings() {
    let dir = tempfile::tempdir().unwrap();
    let pair = common::write_pair(dir.path(), "tls");
    let values = dir.path().join("values.yaml");
    std::fs::write(&values, "proxyImage: example.org/proxy:5\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mesh-injector"))
        .args([
            "--addr",
            "127.0.0.1:0",
            "--log-json",
            "--cluster-version",
            "1.29",
        ])
        .arg("--tls-cert")
        .arg(&pair.cert)
        .arg("--tls-key")
        .arg(&pair.key)
        .arg("--values")
        .arg(&values)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _guard = Kill(child);
    let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
    let addr: std::net::SocketAddr = lines
        .find_map(|line| {
            let v: Value = serde_json::from_str(&line).ok()?;
            (v["fields"]["message"] == "webhook listening")
                .then(|| v["fields"]["addr"].as_str().unwrap().parse().unwrap())
        })
        .expect("listening line");
    // The log's reader goes away: a failed log write must not take a request down with it.
    drop(lines);

    let review = std::fs::read(format!(
        "{}/tests/reviews/pod-create.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let original: Value = serde_json::from_slice(&review).unwrap();
    let r = common::request(
        addr,
        std::slice::from_ref(&pair.der),
        false,
        "POST",
        "/inject",
        review,
    )
    .await;
    assert_eq!(r.status, 200);
    let resp: Value = serde_json::from_slice(&r.body).unwrap();
    let bytes: ByteString = serde_json::from_value(resp["response"]["patch"].clone()).unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes.0).unwrap();
    let mut pod = original["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).unwrap();
    let proxy = &pod["spec"]["initContainers"][1];
    assert_eq!(proxy["name"], "mesh-proxy");
    assert_eq!(proxy["image"], "example.org/proxy:5");
    assert_eq!(proxy["restartPolicy"], "Always");
}
