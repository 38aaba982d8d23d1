//! Listeners: binding, accepting, and replacing them when the config changes.

mod activity;
mod authorize;
mod context;
mod h1;
pub mod http_sniff;
mod idle;
mod l4;
mod on_wake;
mod original_dst;
mod rewind;
mod secure;
mod serve;
mod splice;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use mesh_proto::config::v1 as pb;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use activity::Timeouts;
pub use authorize::{Denied, authorize};
pub use context::{ConnConfig, ConnContext, ListenerSpec, read_config};
/// How the connection's own HTTP/1.1 codec reads a request head (for the fuzz targets).
pub use h1::request as http1_head;
pub use l4::{Forward, HTTP_SNIFF_TIMEOUT, SNI_PEEK_TIMEOUT};
pub use original_dst::original_dst;
pub use secure::{InboundTls, PeerIdentity, Secured};

use crate::config::security::same_socket;
use crate::config::{ConfigError, ConfigObject, FieldError, Snapshot};
use crate::http::Proxy;
use crate::identity::IdentitySlot;
use crate::metrics::{Held, ListenerLabels, Metrics};
use crate::tls::{Termination, peer_exchange};
use crate::upstream::{Cluster, passthrough_cluster};

struct Running {
    spec: pb::Listener,
    addr: SocketAddr,
    stop: CancellationToken,
    accepting: tokio::task::JoinHandle<()>,
}

/// Sockets bound for a new config, not yet serving.
pub struct Prepared {
    bound: Vec<(pb::Listener, TcpListener)>,
    /// Changed listeners whose address is still held by their predecessor: bound once it stops.
    rebind: Vec<pb::Listener>,
    keep: Vec<String>,
    /// Gateway listeners' TLS, loaded from its files, by listener name.
    terminations: HashMap<String, Arc<Termination>>,
}

pub struct Listeners {
    /// The config; each connection reads it once, at accept.
    config: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    /// Original destinations' cluster, shared by HTTP and TCP.
    passthrough: Arc<Cluster>,
    proxy: Arc<Proxy>,
    running: Mutex<HashMap<String, Running>>,
    builder: Arc<serve::HttpServers>,
    timeouts: Timeouts,
    /// Open connections allowed per listener; more are closed at accept. None: unlimited.
    max_connections: Option<usize>,
    tls: Arc<InboundTls>,
    /// Where credentials named by gateway servers are read from.
    credential_dir: Option<std::path::PathBuf>,
    /// Cancelled when the proxy drains: connections finish what is in flight and close.
    pub drain: CancellationToken,
    /// Every connection task, so a drain can wait for them.
    pub connections: TaskTracker,
}

impl Listeners {
    pub fn new(
        config: Arc<ArcSwap<Snapshot>>,
        metrics: Arc<Metrics>,
        timeouts: Timeouts,
        max_connections: Option<usize>,
        identity: Arc<IdentitySlot>,
        credential_dir: Option<std::path::PathBuf>,
    ) -> Self {
        let passthrough = passthrough_cluster(&metrics);
        let proxy = Arc::new(Proxy::new(
            config.clone(),
            metrics.clone(),
            passthrough.clone(),
        ));
        Self {
            config,
            metrics,
            passthrough,
            proxy,
            running: Mutex::new(HashMap::new()),
            builder: Arc::new(serve::http_builder()),
            timeouts,
            max_connections,
            tls: Arc::new(InboundTls::new(identity)),
            credential_dir,
            drain: CancellationToken::new(),
            connections: TaskTracker::new(),
        }
    }

    /// Binds the listeners that are new or changed. Nothing changes when one cannot bind.
    pub fn prepare(&self, specs: &[pb::Listener]) -> Result<Prepared, ConfigError> {
        let running = self.running.lock().expect("listeners lock");
        let mut bound = Vec::new();
        let mut rebind = Vec::new();
        let mut keep = Vec::new();
        let mut terminations = HashMap::new();
        for (i, spec) in specs.iter().enumerate() {
            if running
                .get(&spec.name)
                .is_some_and(|r| same_socket(&r.spec, spec))
            {
                keep.push(spec.name.clone());
                continue;
            }
            if let Some(tls) = &spec.downstream_tls {
                let loaded =
                    Termination::load(tls, self.credential_dir.as_deref()).map_err(|e| {
                        ConfigError::new(
                            ConfigObject::Listener { index: i },
                            FieldError::new("downstreamTls", e.to_string()),
                        )
                    })?;
                terminations.insert(spec.name.clone(), Arc::new(loaded));
            }
            match bind(&spec.address) {
                Ok(listener) => bound.push((spec.clone(), listener)),
                Err(e)
                    if e.kind() == std::io::ErrorKind::AddrInUse
                        && running.values().any(|r| r.spec.address == spec.address) =>
                {
                    rebind.push(spec.clone());
                }
                Err(e) => {
                    return Err(ConfigError::new(
                        ConfigObject::Listener { index: i },
                        FieldError::new(
                            "address",
                            format!("cannot listen on {}: {e}", spec.address),
                        ),
                    ));
                }
            }
        }
        Ok(Prepared {
            bound,
            rebind,
            keep,
            terminations,
        })
    }

    /// Starts the prepared listeners and stops those the new config dropped or replaced.
    /// Connections already accepted by a stopped listener carry on.
    pub async fn commit(&self, prepared: Prepared) {
        let mut stopped = Vec::new();
        self.running
            .lock()
            .expect("listeners lock")
            .retain(|name, r| {
                let kept = prepared.keep.contains(name);
                if !kept {
                    r.stop.cancel();
                    stopped.push(std::mem::replace(&mut r.accepting, tokio::spawn(async {})));
                }
                kept
            });
        let mut bound = prepared.bound;
        if !prepared.rebind.is_empty() {
            // The old socket closes when its accept loop returns.
            for task in stopped {
                let _ = task.await;
            }
            for spec in prepared.rebind {
                match bind(&spec.address) {
                    Ok(listener) => bound.push((spec, listener)),
                    Err(e) => tracing::error!(listener = %spec.name, error = %e, "cannot listen"),
                }
            }
        }
        let mut running = self.running.lock().expect("listeners lock");
        for (spec, listener) in bound {
            let addr = listener.local_addr().expect("bound socket has an address");
            let stop = CancellationToken::new();
            tracing::info!(listener = %spec.name, %addr, "listening");
            let termination = prepared.terminations.get(&spec.name).cloned();
            let accepting =
                tokio::spawn(self.accept_loop(listener, spec.clone(), stop.clone(), termination));
            running.insert(
                spec.name.clone(),
                Running {
                    spec,
                    addr,
                    stop,
                    accepting,
                },
            );
        }
    }

    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.running
            .lock()
            .expect("listeners lock")
            .get(name)
            .map(|r| r.addr)
    }

    /// Stops accepting on every listener.
    pub fn stop_all(&self) {
        for r in self.running.lock().expect("listeners lock").values() {
            r.stop.cancel();
        }
    }

    fn accept_loop(
        &self,
        listener: TcpListener,
        spec: pb::Listener,
        stop: CancellationToken,
        termination: Option<Arc<Termination>>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let config = self.config.clone();
        let passthrough = self.passthrough.clone();
        let proxy = self.proxy.clone();
        let tls = self.tls.clone();
        let builder = self.builder.clone();
        let timeouts = self.timeouts;
        let drain = self.drain.clone();
        let tracker = self.connections.clone();
        let listener_spec = Arc::new(ListenerSpec::new(&spec));
        let labels = ListenerLabels {
            listener: spec.name.clone(),
        };
        let accepted = self
            .metrics
            .downstream_connections
            .get_or_create(&labels)
            .clone();
        let active = self
            .metrics
            .downstream_connections_active
            .get_or_create(&labels)
            .clone();
        let overflow = self
            .metrics
            .downstream_connections_overflow
            .get_or_create(&labels)
            .clone();
        let parked = self
            .metrics
            .downstream_connections_parked
            .get_or_create(&labels)
            .clone();
        // One permit per open connection of this listener.
        let slots = self
            .max_connections
            .map(|n| Arc::new(tokio::sync::Semaphore::new(n)));
        let local_port = listener.local_addr().map_or(0, |a| a.port());
        async move {
            loop {
                let (stream, peer) = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = listener.accept() => match r {
                        Ok(pair) => pair,
                        Err(e) => {
                            // Out of file descriptors and the like: back off instead of spinning.
                            tracing::warn!(listener = %listener_spec.name, error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let slot = match &slots {
                    None => None,
                    Some(slots) => match slots.clone().try_acquire_owned() {
                        Ok(permit) => Some(permit),
                        Err(_) => {
                            // At the limit: closed before anything is read or allocated.
                            overflow.inc();
                            tracing::debug!(listener = %listener_spec.name, %peer, "connection limit reached, closing");
                            drop(stream);
                            continue;
                        }
                    },
                };
                let _ = stream.set_nodelay(true);
                let original_dst = if spec.transparent {
                    original_dst(&stream)
                } else {
                    None
                };
                // The workload port: where the client was going before a redirect, else the
                // port this listener is bound to (the port pilot gave it).
                let destination_port = original_dst.map_or(local_port, |d| d.port());
                // The one read of the config for this connection: its security, its
                // classification and its target all come from this snapshot.
                let snapshot = config.load_full();
                let conn = ConnContext {
                    listener: listener_spec.clone(),
                    peer,
                    original_dst,
                    peer_identity: None,
                    destination_port,
                    log_downstream: OnceLock::new(),
                };
                accepted.inc();
                let open = Open::new(&active, slot);
                let connections = tracker.clone();
                let proxy = proxy.clone();
                let builder = builder.clone();
                let drain = drain.clone();
                let passthrough = passthrough.clone();
                let tls = tls.clone();
                let termination = termination.clone();
                let parked = parked.clone();
                tracker.spawn(async move {
                    // Where the client was going: its original destination, else this
                    // listener's local address it connected to.
                    let dst = original_dst
                        .or_else(|| stream.local_addr().ok())
                        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], local_port)));
                    // The handshakes and reads below are boxed: this task lives as long as the
                    // connection, and its size is that of its largest stage.
                    let conn_config = Box::pin(read_config(
                        &stream,
                        &conn.listener,
                        &snapshot,
                        &passthrough,
                        dst,
                        original_dst,
                    ))
                    .await;
                    // What the connection needs is held in `conn_config`; the rest of the
                    // snapshot may go when the config changes.
                    drop(snapshot);
                    let security = conn_config.security.clone();
                    // A gateway's TLS is terminated for HTTP only: layer 4 routes (TLS
                    // passthrough) take the connection as it is.
                    let termination =
                        termination.filter(|_| matches!(conn_config.forward, Forward::Http));
                    // Each way in below serves on a task of its own once its handshakes are
                    // done: this task, sized for them, ends, and an idle connection costs only
                    // its serving future.
                    let serve = serve::Serve {
                        proxy,
                        builder,
                        drain,
                        timeouts,
                        parked,
                        config: conn_config,
                    };
                    match security {
                        None => match termination {
                            // Outbound: plaintext from the local application.
                            None => serve_on_own_task(&connections, serve.run(stream, conn), open),
                            Some(t) => {
                                if let Some(s) = Box::pin(t.accept(stream, &conn.listener.name)).await {
                                    serve_on_own_task(&connections, serve.run(s, conn), open)
                                }
                            }
                        },
                        Some(security) => {
                            let mode = security.mode_for(destination_port);
                            match Box::pin(tls.secure(stream, mode, peer, &conn.listener.name)).await {
                                Some(Secured::Plain(s)) => {
                                    serve_on_own_task(&connections, serve.run(s, conn), open)
                                }
                                Some(Secured::Tls(mut s, mut id)) => {
                                    if peer_exchange::negotiated(s.get_ref().1) {
                                        let ours = serve.proxy.metrics().istio.local_header();
                                        match peer_exchange::exchange(&mut *s, ours.as_ref()).await {
                                            Ok(theirs) => id.metadata = theirs,
                                            Err(e) => {
                                                tracing::debug!(%peer, error = %e, "downstream proxy's metadata exchange failed");
                                                return;
                                            }
                                        }
                                    }
                                    let conn = ConnContext {
                                        peer_identity: Some(id),
                                        ..conn
                                    };
                                    serve_on_own_task(&connections, serve.run(*s, conn), open)
                                }
                                None => {}
                            }
                        }
                    }
                });
            }
        }
    }
}

/// An accepted connection, counted open and holding its listener slot until dropped.
struct Open {
    _active: Held,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Open {
    fn new(active: &Gauge, slot: Option<OwnedSemaphorePermit>) -> Self {
        Self {
            _active: Held::new(active),
            _slot: slot,
        }
    }
}

/// Serves a connection whose handshakes are done on a task of its own, open until it ends.
fn serve_on_own_task(
    connections: &TaskTracker,
    serving: impl Future<Output = ()> + Send + 'static,
    open: Open,
) {
    connections.spawn(async move {
        serving.await;
        drop(open);
    });
}

fn bind(address: &str) -> std::io::Result<TcpListener> {
    let addr: SocketAddr = address.parse().map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "not an IP:port address")
    })?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}
