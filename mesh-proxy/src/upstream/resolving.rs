//! The members of a DNS cluster, rebuilt off the request path whenever an answer of one of
//! its names changes; requests read the latest build without a lock.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};
use futures_util::future::select_all;
use mesh_proto::config::v1 as pb;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::members::{BuildInput, EndpointHost, Members, endpoint_host};
use super::tls_policy::CompileFor;
use crate::dns::{Answer, Dns};
use crate::identity::IdentitySlot;
use crate::lb::Policy;

pub struct Resolving {
    current: ArcSwap<Members>,
    spec: pb::Cluster,
    identity: Arc<IdentitySlot>,
    policy: Policy,
    ejections: Counter,
    /// The names among the endpoints, without duplicates.
    names: Vec<String>,
    /// True once every name had an answer (or a first lookup that failed).
    ready: watch::Sender<bool>,
    /// How long a request waits for the first answers, known once started.
    first_answer_wait: OnceLock<Duration>,
    /// Ends the rebuild task (and with it the cluster's watch of its names) when the
    /// cluster is dropped by a config update.
    started: OnceLock<DropGuard>,
}

/// Before `start`, a request waits this long (a cluster is started when its config is
/// applied, so only a cluster compiled outside a proxy waits at all).
const UNSTARTED_WAIT: Duration = Duration::from_secs(1);

impl Resolving {
    /// `initial` was built without answers; the names are those of `spec`'s endpoints.
    pub fn new(
        spec: &pb::Cluster,
        initial: Members,
        identity: &Arc<IdentitySlot>,
        policy: Policy,
        ejections: Counter,
    ) -> Self {
        let mut names: Vec<String> = spec
            .endpoints
            .iter()
            .filter_map(|e| match endpoint_host(&e.address, spec.discovery()) {
                Ok(EndpointHost::Name(name, _)) => Some(name.to_string()),
                _ => None,
            })
            .collect();
        names.sort();
        names.dedup();
        let (ready, _) = watch::channel(names.is_empty());
        Self {
            current: ArcSwap::from_pointee(initial),
            spec: spec.clone(),
            identity: identity.clone(),
            policy,
            ejections,
            names,
            ready,
            first_answer_wait: OnceLock::new(),
            started: OnceLock::new(),
        }
    }

    pub fn members(&self) -> Guard<Arc<Members>> {
        self.current.load()
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until every name had its first lookup, at most the first-answer wait.
    pub fn first_answers(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut ready = self.ready.subscribe();
        let wait = self
            .first_answer_wait
            .get()
            .copied()
            .unwrap_or(UNSTARTED_WAIT);
        async move {
            let _ = tokio::time::timeout(wait, ready.wait_for(|r| *r)).await;
        }
    }

    /// Watches the names with `dns`: the members are rebuilt at once from the answers known
    /// (a config update keeps the endpoints of names resolved before), then on every change.
    pub fn start(self: &Arc<Self>, dns: &Dns) {
        let token = CancellationToken::new();
        if self.started.set(token.clone().drop_guard()).is_err() {
            return;
        }
        let _ = self.first_answer_wait.set(dns.timing().first_answer_wait);
        if self.names.is_empty() {
            return;
        }
        let mut receivers: Vec<(String, watch::Receiver<Answer>)> = self
            .names
            .iter()
            .map(|n| (n.clone(), dns.watch(n)))
            .collect();
        for (_, rx) in &mut receivers {
            rx.mark_unchanged();
        }
        self.rebuild(&receivers);
        tokio::spawn(follow(Arc::downgrade(self), receivers, token));
    }

    fn rebuild(&self, receivers: &[(String, watch::Receiver<Answer>)]) {
        let answers: HashMap<&str, Answer> = receivers
            .iter()
            .map(|(n, rx)| (n.as_str(), rx.borrow().clone()))
            .collect();
        let lookup = |name: &str| answers.get(name).cloned().flatten();
        let previous = self.current.load();
        let built = Members::build(
            &self.spec,
            BuildInput {
                identity: &self.identity,
                purpose: CompileFor::Proxy,
                policy: self.policy,
                answer: &lookup,
                previous: Some(&previous),
                ejections: self.ejections.clone(),
            },
        );
        match built {
            Ok(members) => {
                tracing::debug!(cluster = %self.spec.name, endpoints = ?members.addresses(), "dns cluster endpoints");
                self.current.store(Arc::new(members));
            }
            // The same spec compiled before, so only files read again (TLS origination
            // certificates) can fail here: the endpoints before stay.
            Err(e) => {
                tracing::warn!(cluster = %self.spec.name, error = %e, "dns cluster not rebuilt")
            }
        }
        if answers.values().all(Option::is_some) {
            self.ready.send_replace(true);
        }
    }
}

/// Rebuilds the members on every change of an answer until the cluster is gone.
async fn follow(
    cluster: Weak<Resolving>,
    mut receivers: Vec<(String, watch::Receiver<Answer>)>,
    token: CancellationToken,
) {
    loop {
        let changed = select_all(receivers.iter_mut().map(|(_, rx)| Box::pin(rx.changed())));
        tokio::select! {
            _ = token.cancelled() => return,
            (result, _, _) = changed => {
                if result.is_err() {
                    return;
                }
            }
        }
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        cluster.rebuild(&receivers);
    }
}
