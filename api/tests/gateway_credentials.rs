//! Gateway servers with `credentialName`: served from the gateway's credential directory, so
//! validation no longer warns about a usable one, and says what is ignored beside it.

use mesh_api::load_str;
use mesh_api::networking::ServerTlsSettings;
use mesh_api::validate::warnings;

fn warning_lines(servers: &str) -> Vec<String> {
    let text = format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: ns}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n{servers}"
    );
    let (ok, errs) = load_str("gw.yaml", &text);
    assert!(errs.is_empty(), "{errs:?}");
    warnings(&ok[0]).iter().map(ToString::to_string).collect()
}

#[test]
fn a_usable_credential_name_is_not_warned_about() {
    let w = warning_lines(
        "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [a.example.com]\n    tls: {mode: SIMPLE, credentialName: site-a}\n\
         \x20 - port: {number: 8443, name: https-b, protocol: HTTPS}\n    hosts: [b.example.com]\n    tls: {mode: MUTUAL, credentialName: 'kubernetes://site-b'}\n",
    );
    assert_eq!(w, Vec::<String>::new());
}

#[test]
fn what_a_credential_leaves_unused_is_warned_with_its_line() {
    let w = warning_lines(concat!(
        "  - port: {number: 443, name: https, protocol: HTTPS}\n",
        "    hosts: [a.example.com]\n",
        "    tls:\n",
        "      mode: SIMPLE\n",
        "      credentialName: site-a\n",
        "      serverCertificate: /certs/a.pem\n",
        "      privateKey: /certs/a.key\n",
        "      credentialNames: [site-a-ecdsa]\n",
        "  - port: {number: 8443, name: https-b, protocol: HTTPS}\n",
        "    hosts: [b.example.com]\n",
        "    tls: {mode: SIMPLE, credentialName: 'Not_A_Secret'}\n",
        "  - port: {number: 9443, name: tls, protocol: TLS}\n",
        "    hosts: [c.example.com]\n",
        "    tls: {mode: PASSTHROUGH, credentialName: site-c}\n",
    ));
    assert_eq!(
        w,
        [
            "gw.yaml:12: spec.servers[0].tls.serverCertificate: ignored with credentialName: the certificate comes from site-a/tls.crt and site-a/tls.key in the gateway's --credential-dir",
            "gw.yaml:14: spec.servers[0].tls.credentialNames: one certificate per server: only \"site-a\" is served, 1 more ignored",
            "gw.yaml:17: spec.servers[1].tls.credentialName: \"Not_A_Secret\" does not name a Secret (a DNS-1123 name, optionally kubernetes://NAME); the server is skipped",
            "gw.yaml:20: spec.servers[2].tls.credentialName: ignored: the server does not terminate TLS",
        ]
    );
}

#[test]
fn the_secret_of_a_server() {
    let tls = |name: Option<&str>, names: &[&str]| ServerTlsSettings {
        credential_name: name.map(str::to_string),
        credential_names: names.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    assert_eq!(tls(Some("a"), &["b"]).credential_secret(), Some("a"));
    assert_eq!(tls(None, &["b", "c"]).credential_secret(), Some("b"));
    assert_eq!(
        tls(Some("kubernetes://a"), &[]).credential_secret(),
        Some("a")
    );
    assert_eq!(tls(Some("../a"), &[]).credential_secret(), None);
    assert_eq!(tls(Some("ns/a"), &[]).credential_secret(), None);
    assert_eq!(tls(None, &[]).credential_secret(), None);
}
