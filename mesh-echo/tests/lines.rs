//! Line mode over real TCP sockets: `<name> <line>` per line, bounded lines, clean close.

use std::time::Duration;

use mesh_echo::EchoConfig;
use mesh_echo::lines::MAX_LINE;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

async fn start(name: &str) -> mesh_echo::EchoHandle {
    let cfg = EchoConfig {
        name: name.into(),
        ..Default::default()
    };
    mesh_echo::lines::spawn("127.0.0.1:0", cfg).await.unwrap()
}

/// Everything the server sends until it closes, within 5 s.
async fn read_to_close(s: &mut (impl AsyncReadExt + Unpin)) -> String {
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut all))
        .await
        .expect("server closes within 5 s")
        .unwrap();
    String::from_utf8(all).unwrap()
}

#[tokio::test]
async fn every_line_is_answered_with_the_name_then_eof_closes() {
    let echo = start("one").await;
    let s = TcpStream::connect(echo.addr()).await.unwrap();
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    let mut answer = String::new();

    w.write_all(b"hello\n").await.unwrap();
    r.read_line(&mut answer).await.unwrap();
    assert_eq!(answer, "one hello\n");

    // A line split over two writes is answered once, when complete.
    w.write_all(b"split ").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    w.write_all(b"line\nsecond\n").await.unwrap();
    answer.clear();
    r.read_line(&mut answer).await.unwrap();
    assert_eq!(answer, "one split line\n");
    answer.clear();
    r.read_line(&mut answer).await.unwrap();
    assert_eq!(answer, "one second\n");

    // Half-close: the server answers what it read, then closes its side.
    w.write_all(b"bye\n").await.unwrap();
    w.shutdown().await.unwrap();
    assert_eq!(read_to_close(&mut r).await, "one bye\n");
    assert_eq!(echo.connections(), 1);
    assert_eq!(echo.requests(), 4, "one count per line");
}

#[tokio::test]
async fn a_last_line_without_newline_is_answered_before_close() {
    let echo = start("two").await;
    let mut s = TcpStream::connect(echo.addr()).await.unwrap();
    s.write_all(b"a\nb").await.unwrap();
    s.shutdown().await.unwrap();
    assert_eq!(read_to_close(&mut s).await, "two a\ntwo b\n");

    // A connection closed without sending anything gets nothing and is closed too.
    let mut s = TcpStream::connect(echo.addr()).await.unwrap();
    s.shutdown().await.unwrap();
    assert_eq!(read_to_close(&mut s).await, "");
}

#[tokio::test]
async fn lines_up_to_the_limit_are_answered_longer_ones_close_the_connection() {
    let echo = start("one").await;
    let mut s = TcpStream::connect(echo.addr()).await.unwrap();
    let longest = "x".repeat(MAX_LINE);
    s.write_all(format!("{longest}\n").as_bytes())
        .await
        .unwrap();
    let mut answer = vec![0u8; MAX_LINE + 5];
    s.read_exact(&mut answer).await.unwrap();
    assert_eq!(answer, format!("one {longest}\n").into_bytes());

    // One byte more and no newline: an error line, then the server closes.
    let too_long = "y".repeat(MAX_LINE + 1);
    s.write_all(too_long.as_bytes()).await.unwrap();
    assert_eq!(
        read_to_close(&mut s).await,
        format!("one error: line longer than {MAX_LINE} bytes\n")
    );
}

#[tokio::test]
async fn connections_are_answered_independently_and_stop_with_the_server() {
    let echo = start("one").await;
    let mut a = BufReader::new(TcpStream::connect(echo.addr()).await.unwrap());
    let mut b = BufReader::new(TcpStream::connect(echo.addr()).await.unwrap());
    for (i, c) in [&mut a, &mut b].into_iter().enumerate() {
        c.get_mut()
            .write_all(format!("from {i}\n").as_bytes())
            .await
            .unwrap();
    }
    for (i, c) in [&mut a, &mut b].into_iter().enumerate() {
        let mut answer = String::new();
        c.read_line(&mut answer).await.unwrap();
        assert_eq!(answer, format!("one from {i}\n"));
    }
    assert_eq!(echo.connections(), 2);
    // Dropping the server ends open connections too.
    drop(echo);
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), a.read_to_end(&mut rest))
        .await
        .expect("connection closed with the server")
        .unwrap_or(0);
    assert_eq!(n, 0);
}
