//! Instant queries against Prometheus's HTTP API (`/api/v1/query`).

use std::collections::BTreeMap;

use http::Method;
use serde::Deserialize;

use super::graph::Sample;
use crate::http::{HttpError, call_async};

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("cannot reach Prometheus at {base}: {reason}")]
    Unreachable { base: String, reason: String },
    #[error(transparent)]
    Http(HttpError),
    #[error("Prometheus answered what is not a query result: {0}")]
    Json(String),
    #[error("Prometheus refused the query: {0}")]
    Refused(String),
    #[error("Prometheus answered a {0}, not an instant vector")]
    NotAVector(String),
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    error: String,
    #[serde(default)]
    data: Option<Data>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<Element>,
}

#[derive(Deserialize)]
struct Element {
    metric: BTreeMap<String, String>,
    /// `[unix time, "value"]`
    value: (f64, String),
}

/// Percent-encodes a query-string value.
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The samples of an instant query's answer; values that are not numbers (`NaN` from a
/// division by a zero rate) are left out.
pub fn parse_vector(body: &str) -> Result<Vec<Sample>, QueryError> {
    let answer: Answer = serde_json::from_str(body).map_err(|e| QueryError::Json(e.to_string()))?;
    if answer.status != "success" {
        return Err(QueryError::Refused(answer.error));
    }
    let data = answer
        .data
        .ok_or_else(|| QueryError::Json("no data".into()))?;
    if data.result_type != "vector" {
        return Err(QueryError::NotAVector(data.result_type));
    }
    Ok(data
        .result
        .into_iter()
        .filter_map(|e| {
            let value: f64 = e.value.1.parse().ok()?;
            value.is_finite().then_some(Sample {
                labels: e.metric,
                value,
            })
        })
        .collect())
}

/// Runs `promql` at Prometheus's `base` URL (`http://HOST:PORT`).
pub async fn instant(base: &str, promql: &str) -> Result<Vec<Sample>, QueryError> {
    let url = format!("{base}/api/v1/query?query={}", encode(promql));
    let body = match call_async(Method::GET, &url).await {
        Ok(body) => body,
        // A bad query is a 400 whose body still says why.
        Err(HttpError::Status { body, .. }) if body.starts_with('{') => body,
        // The URL with its long query would hide the reason.
        Err(HttpError::Unreachable { reason, .. }) => {
            return Err(QueryError::Unreachable {
                base: base.to_owned(),
                reason,
            });
        }
        Err(e) => return Err(QueryError::Http(e)),
    };
    parse_vector(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vector_answer_becomes_samples() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"source_workload":"productpage-v1"},"value":[1700000000.1,"2.5"]},
            {"metric":{"source_workload":"reviews-v1"},"value":[1700000000.1,"NaN"]}]}}"#;
        let samples = parse_vector(body).unwrap();
        assert_eq!(samples.len(), 1, "NaN is left out");
        assert_eq!(samples[0].labels["source_workload"], "productpage-v1");
        assert_eq!(samples[0].value, 2.5);
    }

    #[test]
    fn errors_say_what_prometheus_said() {
        let refused = r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert!(matches!(parse_vector(refused), Err(QueryError::Refused(e)) if e == "parse error"));
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(matches!(
            parse_vector(matrix),
            Err(QueryError::NotAVector(_))
        ));
        assert!(matches!(parse_vector("<html>"), Err(QueryError::Json(_))));
    }

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            encode("rate(x{a=\"b\"}[1m])"),
            "rate%28x%7Ba%3D%22b%22%7D%5B1m%5D%29"
        );
    }
}
