//! Writes the binary seed inputs that cannot be copied from the repository as files: proto
//! encodings of the proxy configs, ClientHellos as rustls writes them, and workload
//! certificates. `cargo run -p mesh-fuzz --example seeds` (then `cargo fuzz cmin`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;

fn corpus(target: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    dir
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    std::fs::write(corpus(target).join(name), bytes).expect("seed written");
}

/// A ClientHello as rustls writes it, for `name`, offering `alpn`.
fn client_hello(name: &str, alpn: &[&[u8]], tls12_only: bool) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider);
    let builder = if tls12_only {
        builder.with_protocol_versions(&[&rustls::version::TLS12])
    } else {
        builder.with_safe_default_protocol_versions()
    };
    let mut config = builder
        .expect("protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = rustls_pki_types::ServerName::try_from(name.to_string()).expect("server name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut out = Vec::new();
    conn.write_tls(&mut out).expect("hello written");
    out
}

/// The same hello with its handshake message split over two records.
fn split_in_two_records(hello: &[u8], at: usize) -> Vec<u8> {
    let (a, b) = hello[5..].split_at(at);
    let mut out = Vec::new();
    for part in [a, b] {
        out.extend_from_slice(&[0x16, 0x03, 0x01]);
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

fn certificate(uris: &[&str]) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["ignored.example".to_owned()])
        .expect("certificate params");
    for uri in uris {
        params
            .subject_alt_names
            .push(rcgen::SanType::URI((*uri).try_into().expect("ia5 uri")));
    }
    params
        .self_signed(&key)
        .expect("self-signed")
        .der()
        .to_vec()
}

fn main() {
    // Proxy configs: every text seed also as the protobuf the pilot would send.
    for file in std::fs::read_dir(corpus("proxy_config")).expect("text seeds") {
        let path = file.expect("entry").path();
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if let Ok(cfg) = mesh_proxy::config::parse_config("seed", &text) {
            let name = path.file_stem().unwrap().to_string_lossy();
            write("proxy_config", &format!("{name}.pb"), &cfg.encode_to_vec());
        }
    }

    for (name, bytes) in [
        ("hello-db", client_hello("DB.Example.com", &[], false)),
        (
            "hello-h2",
            client_hello(
                "reviews.bookinfo.svc.cluster.local",
                &[b"h2", b"http/1.1"],
                false,
            ),
        ),
        ("hello-tls12", client_hello("mongo.example.org", &[], true)),
        ("hello-ip", client_hello("198.18.0.1", &[], false)),
        (
            "hello-split",
            split_in_two_records(&client_hello("split.example.com", &[], false), 40),
        ),
    ] {
        write("client_hello", name, &bytes);
        write("first_bytes", name, &bytes);
    }

    for (name, uris) in [
        (
            "cert-spiffe",
            &["spiffe://cluster.local/ns/default/sa/reviews"][..],
        ),
        (
            "cert-two-uris",
            &["https://x.example", "spiffe://td/ns/a/sa/b"][..],
        ),
        (
            "cert-two-spiffe",
            &["spiffe://td/ns/a/sa/b", "spiffe://td/ns/a/sa/c"][..],
        ),
        ("cert-no-uri", &[][..]),
        ("cert-bad-spiffe", &["spiffe://Cluster.local/ns/a/sa/b"][..]),
    ] {
        write("xfcc_spiffe", name, &certificate(uris));
    }
}
