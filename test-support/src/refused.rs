//! An address where connections are refused, without binding a port, dropping it and hoping
//! nobody takes it meanwhile.

use std::net::SocketAddr;

use socket2::{Domain, Socket, Type};

/// A loopback address where connections are refused: a socket bound to a port the kernel
/// picked, never listening. Held, it keeps the port: it does not set `SO_REUSEADDR`, so no other
/// socket can bind that port (Linux lets two sockets share a port only when both set it), and
/// the kernel does not hand a bound port out as a connection's source port.
pub struct RefusedAddr {
    _socket: Socket,
    addr: SocketAddr,
}

impl RefusedAddr {
    pub fn new() -> RefusedAddr {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a TCP socket");
        let any_port: SocketAddr = "127.0.0.1:0".parse().expect("an address");
        socket.bind(&any_port.into()).expect("bind 127.0.0.1:0");
        let addr = socket
            .local_addr()
            .expect("a bound socket's address")
            .as_socket()
            .expect("an IP address");
        RefusedAddr {
            _socket: socket,
            addr,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Default for RefusedAddr {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_refused_and_the_port_cannot_be_taken_while_held() {
        let refused = RefusedAddr::new();
        let err = std::net::TcpStream::connect(refused.addr()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
        // Servers (tokio's among them) set SO_REUSEADDR; even so the port is not theirs.
        let other = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        other.set_reuse_address(true).unwrap();
        assert!(other.bind(&refused.addr().into()).is_err());
    }
}
