//! HTTP/1.1 Upgrade with a raw TCP client: 101, then a byte-for-byte echo until EOF.

mod common;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads up to the end of the response head and returns it, lowercased.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "EOF in head");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap().to_ascii_lowercase()
}

#[tokio::test]
async fn upgrade_switches_protocols_and_echoes_bytes() {
    let echo = common::start(None).await;
    let mut s = TcpStream::connect(echo.addr()).await.unwrap();
    s.write_all(
        b"GET /chat HTTP/1.1\r\nHost: echo\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    assert!(head.contains("\r\nupgrade: websocket\r\n"), "{head}");
    assert!(head.contains("\r\nx-echo-name: reviews\r\n"), "{head}");

    for msg in [&b"ping"[..], b"\x00\xffbinary", b"pong"] {
        s.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(back, msg);
    }
    // Half-close: the server finishes echoing and closes its side.
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn bytes_sent_with_the_request_head_are_echoed_too() {
    let echo = common::start(None).await;
    let mut s = TcpStream::connect(echo.addr()).await.unwrap();
    // Data right behind the head arrives in hyper's read buffer; it must not be lost.
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: e\r\nConnection: upgrade\r\nUpgrade: custom-proto\r\n\r\nearly",
    )
    .await
    .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.contains("\r\nupgrade: custom-proto\r\n"), "{head}");
    let mut back = [0u8; 5];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"early");
}

#[tokio::test]
async fn broken_replica_refuses_upgrades() {
    let echo = common::start(Some(502)).await;
    let mut s = TcpStream::connect(echo.addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: e\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("http/1.1 502 "), "{head}");
}
