//! LocalRateLimit (`networking.mesh.dev/v1alpha1`, the mesh's own kind): a token bucket on a
//! workload's inbound side, per proxy, as Envoy's local rate limit filter. Istio needs an
//! EnvoyFilter for this; here it is a resource validated like the others.

use serde::{Deserialize, Serialize};

use super::common::StringMatch;
use crate::security::WorkloadSelector;

/// The period `requestsPerUnit` refills over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RateLimitUnit {
    Second,
    Minute,
    Hour,
}

impl RateLimitUnit {
    /// The unit in milliseconds, the proxy's fill interval.
    pub fn millis(self) -> u64 {
        match self {
            RateLimitUnit::Second => 1_000,
            RateLimitUnit::Minute => 60_000,
            RateLimitUnit::Hour => 3_600_000,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LocalRateLimit {
    /// Unset or empty: every workload of the namespace (of the mesh, in the root namespace).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
    /// Tokens added per `unit`; each request takes one. Required, above 0.
    pub requests_per_unit: u32,
    /// Required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<RateLimitUnit>,
    /// The bucket's size (requests let through at once after a quiet period); at least
    /// `requestsPerUnit`. Unset: `requestsPerUnit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Requests that match a route take that route's bucket instead (the first route that
    /// matches); the others take the top-level one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RateLimitRoute>,
}

/// Requests with a bucket of their own.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RateLimitRoute {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Any one must match. Required.
    #[serde(rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub match_: Vec<RateLimitMatch>,
    /// Required, above 0.
    pub requests_per_unit: u32,
    /// Unset: the top-level `unit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<RateLimitUnit>,
    /// Unset: this route's `requestsPerUnit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

/// Conditions on one request; every one set must hold, at least one must be set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RateLimitMatch {
    /// The request's path (without the query), as a VirtualService's `uri`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
}

impl LocalRateLimit {
    /// The top-level bucket's size.
    pub fn effective_burst(&self) -> u32 {
        self.burst.unwrap_or(self.requests_per_unit)
    }
}

impl RateLimitRoute {
    /// This route's bucket size.
    pub fn effective_burst(&self) -> u32 {
        self.burst.unwrap_or(self.requests_per_unit)
    }
}
