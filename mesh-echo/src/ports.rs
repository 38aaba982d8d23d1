//! Loopback ports for servers that tests and examples start in other processes or bind later.
//!
//! Binding port 0, reading the port and closing the socket leaves a window before the real
//! server binds it, and the kernel hands out ports of its ephemeral range (32768 and up) as
//! the source ports of every outgoing connection, so a parallel test's client could take it
//! (seen as "address already in use"). Ports here come from below that range instead, spread
//! per process and never handed out twice by one process.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

const FIRST: u32 = 20_000;
const COUNT: u32 = 12_000;

/// A loopback address whose port is free now and below the ephemeral range.
pub fn free_loopback_addr() -> SocketAddr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(2_654_435_761);
    for _ in 0..COUNT {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + seed.wrapping_add(n.wrapping_mul(7_919)) % COUNT;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port as u16)) {
            return l.local_addr().expect("bound socket has an address");
        }
    }
    panic!(
        "no free loopback port between {FIRST} and {}",
        FIRST + COUNT
    );
}

/// The port of [`free_loopback_addr`].
pub fn free_loopback_port() -> u16 {
    free_loopback_addr().port()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_free_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..200).map(|_| free_loopback_port()).collect();
        let mut unique = ports.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ports.len());
        assert!(ports.iter().all(|p| (20_000..32_000).contains(p)));
        for p in &ports[..10] {
            TcpListener::bind(("127.0.0.1", *p)).expect("still free");
        }
    }
}
