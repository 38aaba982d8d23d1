//! Workload identities: SPIFFE IDs (the one parser and certificate reader of mesh-identity,
//! which the CA and the proxy share)
//! and the `x-forwarded-client-cert` header the inbound proxy writes and the application
//! reads. Input: a DER certificate (starting with a SEQUENCE tag), or text: an XFCC value,
//! read as `<server id>\n<client id>` for the writer.

use mesh_identity::SpiffeId;

/// DER SEQUENCE, the first byte of every certificate.
const DER_SEQUENCE: u8 = 0x30;

pub fn run(data: &[u8]) {
    if data.first() == Some(&DER_SEQUENCE) {
        certificate(data);
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = mesh_echo::xfcc_uri(text);
    let (server, client) = text.split_once('\n').unwrap_or((text, ""));
    spiffe_id(server);
    spiffe_id(client);
    xfcc(server, client);
}

/// An identity read from a certificate is one the parser accepts as it was printed.
fn certificate(der: &[u8]) {
    if let Ok(id) = mesh_identity::spiffe_id_of(der) {
        let again: SpiffeId = id
            .as_str()
            .parse()
            .expect("a certificate's identity parses");
        assert_eq!(again, id);
    }
}

/// What parses prints back as it was written, with the trust domain the proxy reads.
fn spiffe_id(text: &str) {
    let Ok(id) = text.parse::<SpiffeId>() else {
        return;
    };
    assert_eq!(id.to_string(), text);
    assert_eq!(
        format!(
            "spiffe://{}/ns/{}/sa/{}",
            id.trust_domain(),
            id.namespace(),
            id.service_account()
        ),
        text
    );
    assert_eq!(id.principal(), &text["spiffe://".len()..]);
}

/// The application reads back the client identity the proxy wrote, for every identity a
/// certificate can carry: a URI SAN (ASCII, no whitespace) that starts with `spiffe://`.
fn xfcc(server: &str, client: &str) {
    let from_a_certificate =
        |id: &str| id.starts_with("spiffe://") && id.bytes().all(|b| b.is_ascii_graphic());
    if !from_a_certificate(server) || !from_a_certificate(client) {
        return;
    }
    let Ok(value) = mesh_proxy::tls::xfcc(server, client) else {
        return;
    };
    let text = value.to_str().expect("xfcc writes visible ASCII");
    assert_eq!(
        mesh_echo::xfcc_uri(text).as_deref(),
        Some(client),
        "in {text:?}"
    );
}
