//! Who is on the other end of an established connection.

use rustls::CommonState;

use mesh_identity::{SpiffeId, spiffe_id_of};

/// The SPIFFE ID in the URI SAN of the peer's leaf certificate, once the handshake has
/// verified it. `None` without a client certificate or before the handshake completes.
/// Accepts a `ServerConnection` or `ClientConnection` (both deref to `CommonState`).
pub fn peer_spiffe_id(conn: &CommonState) -> Option<SpiffeId> {
    spiffe_id_of(conn.peer_certificates()?.first()?).ok()
}
