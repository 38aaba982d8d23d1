//! Compiled route tables: virtual host selection by authority, then first-match routes.

use crate::fast_map::FastMap;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use mesh_proto::config::v1 as pb;

use super::cors::Cors;
use super::fault::Fault;
use super::headers::HeaderOps;
use super::matcher::{RequestView, RouteMatcher};
use super::rewrite::PathRewrite;
use crate::retry::RetryPolicy;

#[derive(Debug)]
pub struct RouteTable {
    vhosts: Vec<VirtualHost>,
    /// Lower-case domain (with or without port) to vhost index.
    exact: FastMap<String, usize>,
    /// `*.example.com` stored as `.example.com`, longest first.
    suffixes: Vec<(String, usize)>,
    catch_all: Option<usize>,
}

#[derive(Debug)]
pub struct VirtualHost {
    pub name: String,
    pub routes: Vec<Route>,
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub matcher: RouteMatcher,
    pub action: Action,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    /// Delays and aborts injected before the action.
    pub fault: Option<Fault>,
    /// Checked before the fault and the action.
    pub cors: Option<Cors>,
}

#[derive(Debug)]
pub enum Action {
    Forward(Forward),
    Redirect(Redirect),
    Direct { status: StatusCode, body: Bytes },
}

#[derive(Debug)]
pub struct Forward {
    pub destinations: Vec<Destination>,
    total_weight: u32,
    pub timeout: Option<Duration>,
    /// None: Istio's default policy applies.
    pub retry: Option<RetryPolicy>,
    pub path_rewrite: Option<PathRewrite>,
    pub authority_rewrite: Option<HeaderValue>,
    /// Shadow copies of a share of the requests.
    pub mirrors: Vec<Mirror>,
}

/// Where a share of a route's requests is mirrored.
#[derive(Debug)]
pub struct Mirror {
    pub cluster: String,
    pub subset: String,
    /// Parts per million of the requests.
    pub share_ppm: u32,
}

#[derive(Debug)]
pub struct Destination {
    pub cluster: String,
    pub subset: String,
    pub weight: u32,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
}

#[derive(Debug)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    /// No port in the Location: the scheme's default.
    pub scheme_default_port: bool,
    pub path: Option<String>,
    pub status: StatusCode,
}

pub use crate::config::FieldError;

/// Why a route table does not compile: the table itself, or one of its routes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("{0}")]
    Table(FieldError),
    #[error("virtualHosts[{virtual_host}].routes[{route}].{error}")]
    Route {
        virtual_host: usize,
        route: usize,
        error: FieldError,
    },
}

impl TableError {
    /// The field path below the route table.
    pub fn field(&self) -> String {
        match self {
            Self::Table(e) => e.field.clone(),
            Self::Route {
                virtual_host,
                route,
                error,
            } => {
                error
                    .clone()
                    .within(&format!("virtualHosts[{virtual_host}].routes[{route}]"))
                    .field
            }
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Self::Table(e) | Self::Route { error: e, .. } => &e.reason,
        }
    }
}

impl RouteTable {
    pub fn compile(table: &pb::RouteTable) -> Result<Self, TableError> {
        let mut vhosts = Vec::with_capacity(table.virtual_hosts.len());
        let mut exact = FastMap::default();
        let mut suffixes = Vec::new();
        let mut catch_all = None;
        for (vi, vh) in table.virtual_hosts.iter().enumerate() {
            let at = |f: &str| format!("virtualHosts[{vi}].{f}");
            for (di, domain) in vh.domains.iter().enumerate() {
                let domain = domain.to_ascii_lowercase();
                let duplicate = if domain == "*" {
                    catch_all.replace(vi).is_some()
                } else if let Some(rest) = domain.strip_prefix('*') {
                    let dup = suffixes.iter().any(|(s, _)| s == rest);
                    suffixes.push((rest.to_string(), vi));
                    dup
                } else {
                    exact.insert(domain.clone(), vi).is_some()
                };
                if duplicate {
                    return Err(TableError::Table(FieldError::new(
                        at(&format!("domains[{di}]")),
                        format!("domain {domain:?} appears in more than one virtual host"),
                    )));
                }
            }
            let routes = vh
                .routes
                .iter()
                .enumerate()
                .map(|(ri, r)| {
                    Route::compile(r).map_err(|error| TableError::Route {
                        virtual_host: vi,
                        route: ri,
                        error,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            vhosts.push(VirtualHost {
                name: vh.name.clone(),
                routes,
            });
        }
        suffixes.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        Ok(Self {
            vhosts,
            exact,
            suffixes,
            catch_all,
        })
    }

    /// The virtual host for an authority: exact (with port, then without), longest `*.suffix`,
    /// then `*`.
    pub fn virtual_host(&self, authority: &str) -> Option<&VirtualHost> {
        let lowered;
        let authority = if authority.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = authority.to_ascii_lowercase();
            lowered.as_str()
        } else {
            authority
        };
        let host = strip_port(authority);
        let index = self
            .exact
            .get(authority)
            .or_else(|| self.exact.get(host))
            .copied()
            .or_else(|| {
                self.suffixes
                    .iter()
                    .find(|(suffix, _)| {
                        host.ends_with(suffix.as_str()) && host.len() > suffix.len()
                    })
                    .map(|(_, i)| *i)
            })
            .or(self.catch_all)?;
        Some(&self.vhosts[index])
    }

    /// The first route of the authority's virtual host that matches the request.
    pub fn route(&self, authority: &str, req: &RequestView<'_>) -> Option<&Route> {
        self.virtual_host(authority)?
            .routes
            .iter()
            .find(|r| r.matcher.matches(req))
    }
}

/// `host:port` -> `host`, leaving IPv6 literals (`[::1]:80` -> `[::1]`) intact.
pub fn strip_port(authority: &str) -> &str {
    match authority.rfind(':') {
        Some(i)
            if !authority[i..].contains(']')
                && authority[i + 1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            &authority[..i]
        }
        _ => authority,
    }
}

impl Route {
    fn compile(r: &pb::Route) -> Result<Self, FieldError> {
        fn prefixed(p: &'static str) -> impl Fn(FieldError) -> FieldError {
            move |e| e.within(p)
        }
        let matcher = match &r.r#match {
            Some(m) => RouteMatcher::compile(m).map_err(prefixed("match"))?,
            None => RouteMatcher::default(),
        };
        let action = match &r.action {
            None => {
                return Err(FieldError::new(
                    "action",
                    "a route needs route, redirect or directResponse",
                ));
            }
            Some(pb::route::Action::Route(a)) => {
                Action::Forward(Forward::compile(a).map_err(prefixed("route"))?)
            }
            Some(pb::route::Action::Redirect(rd)) => {
                Action::Redirect(Redirect::compile(rd).map_err(prefixed("redirect"))?)
            }
            Some(pb::route::Action::DirectResponse(d)) => Action::Direct {
                status: status_code(d.status)
                    .map_err(|e| FieldError::new("directResponse.status", e))?,
                body: if d.body_bytes.is_empty() {
                    Bytes::from(d.body.clone())
                } else {
                    Bytes::from(d.body_bytes.clone())
                },
            },
        };
        Ok(Self {
            name: r.name.clone(),
            matcher,
            action,
            request_headers: HeaderOps::compile(r.request_headers.as_ref())
                .map_err(prefixed("requestHeaders"))?,
            response_headers: HeaderOps::compile(r.response_headers.as_ref())
                .map_err(prefixed("responseHeaders"))?,
            fault: match &r.fault {
                Some(f) => Fault::compile(f).map_err(prefixed("fault"))?,
                None => None,
            },
            cors: r
                .cors
                .as_ref()
                .map(Cors::compile)
                .transpose()
                .map_err(prefixed("cors"))?,
        })
    }
}

pub(super) fn status_code(code: u32) -> Result<StatusCode, String> {
    u16::try_from(code)
        .ok()
        .filter(|c| (200..600).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| format!("{code} is not a status code between 200 and 599"))
}

impl Forward {
    fn compile(a: &pb::RouteAction) -> Result<Self, FieldError> {
        if a.clusters.is_empty() {
            return Err(FieldError::new(
                "clusters",
                "at least one cluster is required",
            ));
        }
        let mut destinations = Vec::with_capacity(a.clusters.len());
        for (i, c) in a.clusters.iter().enumerate() {
            let at = |f: &str| format!("clusters[{i}].{f}");
            if c.cluster.is_empty() {
                return Err(FieldError::new(at("cluster"), "must not be empty"));
            }
            destinations.push(Destination {
                cluster: c.cluster.clone(),
                subset: c.subset.clone(),
                // A lone destination takes all traffic whatever its weight says.
                weight: if a.clusters.len() == 1 { 1 } else { c.weight },
                request_headers: HeaderOps::compile(c.request_headers.as_ref())
                    .map_err(|e| e.within(&at("requestHeaders")))?,
                response_headers: HeaderOps::compile(c.response_headers.as_ref())
                    .map_err(|e| e.within(&at("responseHeaders")))?,
            });
        }
        let total_weight = destinations.iter().map(|d| d.weight).sum::<u32>();
        if total_weight == 0 {
            return Err(FieldError::new("clusters", "weights must not all be 0"));
        }
        let retry = a
            .retry_policy
            .as_ref()
            .map(RetryPolicy::compile)
            .transpose()
            .map_err(|e| e.within("retryPolicy"))?;
        let authority_rewrite = if a.authority_rewrite.is_empty() {
            None
        } else {
            Some(
                HeaderValue::from_str(&a.authority_rewrite)
                    .map_err(|_| FieldError::new("authorityRewrite", "invalid authority"))?,
            )
        };
        let mut mirrors = Vec::with_capacity(a.mirrors.len());
        for (i, m) in a.mirrors.iter().enumerate() {
            if m.cluster.is_empty() {
                return Err(FieldError::new(
                    format!("mirrors[{i}].cluster"),
                    "must not be empty",
                ));
            }
            if !(0.0..=100.0).contains(&m.percentage) {
                return Err(FieldError::new(
                    format!("mirrors[{i}].percentage"),
                    format!("{} is not a percentage between 0 and 100", m.percentage),
                ));
            }
            mirrors.push(Mirror {
                cluster: m.cluster.clone(),
                subset: m.subset.clone(),
                share_ppm: (m.percentage * 10_000.0).round() as u32,
            });
        }
        Ok(Self {
            destinations,
            total_weight,
            timeout: (a.timeout_ms > 0).then(|| Duration::from_millis(a.timeout_ms)),
            retry,
            path_rewrite: PathRewrite::compile(a)?,
            authority_rewrite,
            mirrors,
        })
    }

    /// Picks a destination by weight; `roll` is a uniformly random number.
    pub fn pick(&self, roll: u32) -> &Destination {
        super::weighted::pick(&self.destinations, self.total_weight, roll, |d| d.weight)
    }
}

impl Redirect {
    fn compile(r: &pb::Redirect) -> Result<Self, FieldError> {
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let status = match r.response_code {
            0 => StatusCode::MOVED_PERMANENTLY,
            301 | 302 | 303 | 307 | 308 => {
                StatusCode::from_u16(r.response_code as u16).expect("valid code")
            }
            other => {
                return Err(FieldError::new(
                    "responseCode",
                    format!("{other} is not a redirect status"),
                ));
            }
        };
        let port = match r.port {
            0 => None,
            p => Some(
                u16::try_from(p)
                    .map_err(|_| FieldError::new("port", format!("{p} is not a port")))?,
            ),
        };
        Ok(Self {
            scheme: non_empty(&r.scheme),
            host: non_empty(&r.host),
            port,
            scheme_default_port: r.scheme_default_port,
            path: non_empty(&r.path),
            status,
        })
    }

    /// The `Location` for a request to `scheme://authority` + `path_and_query`.
    pub fn location(&self, scheme: &str, authority: &str, path_and_query: &str) -> String {
        let scheme = self.scheme.as_deref().unwrap_or(scheme);
        let host = self
            .host
            .as_deref()
            .unwrap_or_else(|| strip_port(authority));
        let default_port = match scheme {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        };
        let port = match self.port {
            _ if self.scheme_default_port => String::new(),
            Some(p) if Some(p) == default_port => String::new(),
            Some(p) => format!(":{p}"),
            // Keep the request's port only when the host is kept too, and not the old
            // scheme's default port on a scheme change (Envoy's `https_redirect` drops `:80`).
            None if self.host.is_none() => {
                let kept = &authority[strip_port(authority).len()..];
                let default_of_old = match self.scheme.as_deref() {
                    Some("https") => ":80",
                    Some("http") => ":443",
                    _ => "",
                };
                if kept == default_of_old {
                    String::new()
                } else {
                    kept.to_string()
                }
            }
            None => String::new(),
        };
        let path = self.path.as_deref().unwrap_or(path_and_query);
        format!("{scheme}://{host}{port}{path}")
    }
}

#[cfg(test)]
mod tests;
