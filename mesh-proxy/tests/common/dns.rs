//! A DNS server on loopback for tests: answers A queries for any name with the addresses
//! and TTL it is told, AAAA queries with no record, and SERVFAIL while told to fail.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::net::UdpSocket;

#[derive(Debug, Clone)]
struct Zone {
    addresses: Vec<Ipv4Addr>,
    ttl: u32,
    failing: bool,
    queries: u64,
}

/// The server; it stops when dropped.
pub struct TestDns {
    pub addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestDns {
    pub async fn start(addresses: &[&str], ttl: u32) -> TestDns {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let zone = Arc::new(Mutex::new(Zone {
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            ttl,
            failing: false,
            queries: 0,
        }));
        let task = tokio::spawn(serve(socket, zone.clone()));
        TestDns { addr, zone, task }
    }

    /// Answers these addresses from now on.
    pub fn answer(&self, addresses: &[&str]) {
        let mut zone = self.zone.lock().unwrap();
        zone.addresses = addresses.iter().map(|a| a.parse().unwrap()).collect();
        zone.failing = false;
    }

    /// SERVFAIL to every query from now on (or answers again).
    pub fn fail(&self, failing: bool) {
        self.zone.lock().unwrap().failing = failing;
    }

    /// A queries answered or failed so far.
    pub fn queries(&self) -> u64 {
        self.zone.lock().unwrap().queries
    }
}

async fn serve(socket: UdpSocket, zone: Arc<Mutex<Zone>>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            return;
        };
        let Ok(query) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        if query.metadata.message_type != MessageType::Query {
            continue;
        }
        let zone = {
            let mut z = zone.lock().unwrap();
            if query
                .queries
                .iter()
                .any(|q| q.query_type() == RecordType::A)
            {
                z.queries += 1;
            }
            z.clone()
        };
        let id = query.metadata.id;
        let mut reply = if zone.failing {
            Message::error_msg(id, OpCode::Query, ResponseCode::ServFail)
        } else {
            Message::response(id, OpCode::Query)
        };
        reply.metadata.recursion_desired = query.metadata.recursion_desired;
        reply.metadata.recursion_available = true;
        for q in &query.queries {
            reply.add_query(q.clone());
            if !zone.failing && q.query_type() == RecordType::A {
                for ip in &zone.addresses {
                    reply.add_answer(Record::from_rdata(
                        q.name().clone(),
                        zone.ttl,
                        RData::A(A(*ip)),
                    ));
                }
            }
        }
        if let Ok(bytes) = reply.to_vec() {
            let _ = socket.send_to(&bytes, peer).await;
        }
    }
}
