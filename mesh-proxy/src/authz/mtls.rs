//! PeerAuthentication's mode for one inbound port.

use mesh_proto::config::v1::{MtlsMode, PortMtls};

/// The mode in force on `port`: a port-level setting beats the workload-level one, UNSET
/// inherits from the level above, and PERMISSIVE applies when nothing is set (Istio's
/// default, so plaintext clients keep working until STRICT is asked for).
pub fn effective_mtls(listener_mode: MtlsMode, port_modes: &[PortMtls], port: u16) -> MtlsMode {
    let port_mode = port_modes
        .iter()
        .find(|p| p.port == u32::from(port) && p.mode() != MtlsMode::Unset)
        .map(PortMtls::mode);
    match port_mode.unwrap_or(listener_mode) {
        MtlsMode::Unset => MtlsMode::Permissive,
        m => m,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pm(port: u32, mode: MtlsMode) -> PortMtls {
        PortMtls {
            port,
            mode: mode as i32,
        }
    }

    #[test]
    fn default_is_permissive() {
        assert_eq!(
            effective_mtls(MtlsMode::Unset, &[], 8080),
            MtlsMode::Permissive
        );
    }

    #[test]
    fn listener_mode_applies_without_port_override() {
        for m in [MtlsMode::Strict, MtlsMode::Disable, MtlsMode::Permissive] {
            assert_eq!(effective_mtls(m, &[pm(9000, MtlsMode::Disable)], 8080), m);
        }
    }

    #[test]
    fn port_beats_listener() {
        let ports = [pm(8080, MtlsMode::Disable), pm(9000, MtlsMode::Strict)];
        assert_eq!(
            effective_mtls(MtlsMode::Strict, &ports, 8080),
            MtlsMode::Disable
        );
        assert_eq!(
            effective_mtls(MtlsMode::Disable, &ports, 9000),
            MtlsMode::Strict
        );
        assert_eq!(
            effective_mtls(MtlsMode::Unset, &ports, 9000),
            MtlsMode::Strict
        );
    }

    #[test]
    fn unset_port_inherits() {
        let ports = [pm(8080, MtlsMode::Unset)];
        assert_eq!(
            effective_mtls(MtlsMode::Strict, &ports, 8080),
            MtlsMode::Strict
        );
        assert_eq!(
            effective_mtls(MtlsMode::Unset, &ports, 8080),
            MtlsMode::Permissive
        );
    }
}
