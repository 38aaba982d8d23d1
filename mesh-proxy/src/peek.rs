//! Looking at a connection's first bytes without consuming them: PERMISSIVE mTLS (TLS or
//! plaintext), transparent listeners (HTTP or not) and layer 4 routes (the TLS server name).

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

/// Peeks at the start of `stream` (the bytes stay in the socket for whoever reads it) until
/// `judge` decides. `judge(bytes, last)` sees everything received so far; `last` is set once
/// `max_bytes` have arrived or `deadline` has passed, its final chance to decide. `None`: the
/// client sent nothing in time, closed, or `judge` did not decide.
pub async fn peek_until<T>(
    stream: &TcpStream,
    max_bytes: usize,
    deadline: Duration,
    mut judge: impl FnMut(&[u8], bool) -> Option<T>,
) -> io::Result<Option<T>> {
    let until = Instant::now() + deadline;
    let mut buf = vec![0u8; max_bytes];
    let mut seen = 0;
    loop {
        let n = match tokio::time::timeout_at(until, stream.peek(&mut buf)).await {
            Ok(n) => n?,
            Err(_) => return Ok(None),
        };
        if n == 0 {
            return Ok(None);
        }
        let last = n == max_bytes || Instant::now() >= until;
        if let Some(verdict) = judge(&buf[..n], last) {
            return Ok(Some(verdict));
        }
        if last {
            return Ok(None);
        }
        // peek returns at once while any byte is buffered: wait a little for more.
        if n == seen {
            tokio::time::sleep(Duration::from_millis(2).min(until - Instant::now())).await;
        }
        seen = n;
    }
}
