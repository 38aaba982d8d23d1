//! The protocol of a Kubernetes Service port, resolved as Istio does: UDP by the port's
//! protocol, else `appProtocol`, else the port name's prefix (`http-web`, `grpc`), else TCP for
//! the well-known ports that must not be sniffed, else unknown (sniffed).

use mesh_api::networking::parse_protocol;

use crate::registry::Protocol;

/// Ports whose applications break under protocol sniffing (SMTP, DNS, MySQL, MongoDB).
const WELL_KNOWN_TCP: &[i32] = &[25, 53, 3306, 27017];

pub fn port_protocol(
    port: i32,
    name: Option<&str>,
    protocol: Option<&str>,
    app_protocol: Option<&str>,
) -> Protocol {
    if protocol == Some("UDP") {
        return Protocol::Udp;
    }
    let name = match app_protocol {
        // Kubernetes' standard application protocols.
        Some("kubernetes.io/h2c") => return Protocol::Http2,
        Some("kubernetes.io/ws") => return Protocol::Http,
        Some("kubernetes.io/wss") => return Protocol::Https,
        Some(app) => app,
        None => name.unwrap_or_default(),
    };
    if name.to_ascii_lowercase().starts_with("grpc-web") {
        return Protocol::GrpcWeb;
    }
    let prefix = name.split('-').next().unwrap_or_default();
    match parse_protocol(prefix) {
        Some(p) => Protocol::from_canonical(Some(p)),
        None if WELL_KNOWN_TCP.contains(&port) => Protocol::Tcp,
        None => Protocol::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_protocol_then_name_prefix() {
        assert_eq!(
            port_protocol(9080, Some("http"), Some("TCP"), None),
            Protocol::Http
        );
        assert_eq!(
            port_protocol(80, Some("http-web"), None, None),
            Protocol::Http
        );
        assert_eq!(
            port_protocol(80, Some("web"), None, Some("grpc")),
            Protocol::Grpc
        );
        assert_eq!(
            port_protocol(80, Some("http"), None, Some("kubernetes.io/h2c")),
            Protocol::Http2
        );
        assert_eq!(
            port_protocol(443, None, None, Some("kubernetes.io/wss")),
            Protocol::Https
        );
        assert_eq!(
            port_protocol(80, Some("grpc-web-ui"), None, None),
            Protocol::GrpcWeb
        );
        assert_eq!(
            port_protocol(53, Some("http"), Some("UDP"), None),
            Protocol::Udp
        );
    }

    #[test]
    fn unnamed_ports_are_sniffed_except_well_known_ones() {
        assert_eq!(
            port_protocol(8080, Some("web"), Some("TCP"), None),
            Protocol::Unknown
        );
        assert_eq!(port_protocol(8080, None, None, None), Protocol::Unknown);
        assert_eq!(port_protocol(3306, Some("db"), None, None), Protocol::Tcp);
        assert_eq!(
            port_protocol(3306, Some("mysql"), None, None),
            Protocol::Mysql
        );
    }
}
