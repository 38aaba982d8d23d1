//! Per-request dispatch: gRPC, upgrade or JSON echo.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use mesh_proto::echo::v1::echo_server::EchoServer;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::EchoConfig;
use crate::body::{self, BoxError, ResponseBody};
use crate::grpc::{self, EchoGrpc};
use crate::server::Stats;
use crate::{echo, upgrade};

/// Per-server state shared by every connection.
pub(crate) struct App {
    cfg: Arc<EchoConfig>,
    grpc: EchoServer<EchoGrpc>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
}

impl App {
    pub(crate) fn new(cfg: EchoConfig, stats: Arc<Stats>, shutdown: CancellationToken) -> Self {
        let cfg = Arc::new(cfg);
        Self {
            grpc: grpc::service(cfg.clone()),
            cfg,
            stats,
            shutdown,
        }
    }

    pub(crate) async fn handle(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<ResponseBody>, Infallible> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        Ok(self.dispatch(req).await)
    }

    async fn dispatch(&self, req: Request<Incoming>) -> Response<ResponseBody> {
        let fail_status = self.cfg.fail_status;
        if grpc::is_grpc(&req) {
            return match fail_status {
                None => self.grpc(req).await,
                Some(code) => grpc::broken(code, &self.cfg),
            };
        }
        // A broken replica refuses upgrades too: the JSON handler answers with its status.
        let res = if fail_status.is_none() && upgrade::is_upgrade(&req) {
            upgrade::accept(req, &self.cfg, self.shutdown.clone())
        } else {
            echo::respond(req, &self.cfg).await
        };
        res.unwrap_or_else(|err| {
            // Only a broken request body gets here; the client is gone or misbehaving.
            tracing::debug!(%err, "request failed");
            let mut res = Response::new(body::empty());
            *res.status_mut() = StatusCode::BAD_REQUEST;
            res
        })
    }

    async fn grpc(&self, req: Request<Incoming>) -> Response<ResponseBody> {
        let res = match self.grpc.clone().oneshot(req).await {
            Ok(res) => res,
            Err(never) => match never {},
        };
        res.map(|b| b.map_err(BoxError::from).boxed_unsync())
    }
}
