//! Fault injection (VirtualService `fault`, Envoy's HTTP fault filter): a route may delay a
//! share of its requests and abort a share with a chosen HTTP or gRPC status. The delay comes
//! first and does not count against the route's timeout, as in Envoy where the fault filter
//! runs before the router.

use std::time::Duration;

use http::StatusCode;
use mesh_proto::config::v1 as pb;

use super::table::{FieldError, status_code};

/// Shares are kept in parts per million, Envoy's finest `FractionalPercent`.
const MILLION: u32 = 1_000_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    delay: Option<(Duration, Share)>,
    abort: Option<(Abort, Share)>,
}

/// What an aborted request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abort {
    Http(StatusCode),
    /// A gRPC status code (0 to 16), sent as a trailers-only reply.
    Grpc(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Share(u32);

impl Share {
    fn compile(percentage: f64, field: &str) -> Result<Self, FieldError> {
        if !(0.0..=100.0).contains(&percentage) {
            return Err(FieldError::new(
                field,
                format!("{percentage} is not a percentage between 0 and 100"),
            ));
        }
        Ok(Share((percentage * 10_000.0).round() as u32))
    }

    /// `roll` is uniform over u32; the share decides how many of those values hit.
    fn hits(self, roll: u32) -> bool {
        roll % MILLION < self.0
    }
}

/// Rolls of the dice for one request: one for the delay, one for the abort (Envoy draws them
/// independently).
#[derive(Debug, Clone, Copy)]
pub struct Rolls {
    pub delay: u32,
    pub abort: u32,
}

impl Rolls {
    pub fn random() -> Self {
        Self {
            delay: crate::fast_rand::u32(),
            abort: crate::fast_rand::u32(),
        }
    }
}

impl Fault {
    /// `None` when the config injects nothing, so the request path checks a single `Option`.
    pub fn compile(f: &pb::FaultInjection) -> Result<Option<Self>, FieldError> {
        let delay = match &f.delay {
            Some(d) => Some((
                Duration::from_millis(d.fixed_delay_ms),
                Share::compile(d.percentage, "delay.percentage")?,
            )),
            None => None,
        };
        let abort = match &f.abort {
            Some(a) => Some((abort(a)?, Share::compile(a.percentage, "abort.percentage")?)),
            None => None,
        };
        if delay.is_none() && abort.is_none() {
            return Ok(None);
        }
        Ok(Some(Self { delay, abort }))
    }

    /// How long to hold this request, if the dice say so.
    pub fn delay(&self, rolls: Rolls) -> Option<Duration> {
        self.delay
            .filter(|(_, share)| share.hits(rolls.delay))
            .map(|(d, _)| d)
    }

    /// The error to answer with instead of routing, if the dice say so.
    pub fn abort(&self, rolls: Rolls) -> Option<Abort> {
        self.abort
            .filter(|(_, share)| share.hits(rolls.abort))
            .map(|(a, _)| a)
    }
}

fn abort(a: &pb::fault_injection::Abort) -> Result<Abort, FieldError> {
    use pb::fault_injection::abort::Error;
    match &a.error {
        Some(Error::HttpStatus(code)) => status_code(*code)
            .map(Abort::Http)
            .map_err(|e| FieldError::new("abort.httpStatus", e)),
        Some(Error::GrpcStatus(name)) => grpc_code(name).map(Abort::Grpc).ok_or_else(|| {
            FieldError::new(
                "abort.grpcStatus",
                format!("{name:?} is not a gRPC status code name or number"),
            )
        }),
        None => Err(FieldError::new(
            "abort",
            "an abort needs httpStatus or grpcStatus",
        )),
    }
}

/// gRPC's canonical codes, by the names Istio accepts.
const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

fn grpc_code(name: &str) -> Option<u32> {
    if let Ok(n) = name.parse::<u32>() {
        return (n < GRPC_CODES.len() as u32).then_some(n);
    }
    GRPC_CODES
        .iter()
        .position(|c| c.eq_ignore_ascii_case(name))
        .map(|i| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::fault_injection::{Abort as PbAbort, Delay as PbDelay, abort::Error};

    fn compile(delay: Option<(u64, f64)>, abort: Option<(Error, f64)>) -> Option<Fault> {
        Fault::compile(&pb::FaultInjection {
            delay: delay.map(|(ms, p)| PbDelay {
                fixed_delay_ms: ms,
                percentage: p,
            }),
            abort: abort.map(|(e, p)| PbAbort {
                error: Some(e),
                percentage: p,
            }),
        })
        .unwrap()
    }

    fn rolls(delay: u32, abort: u32) -> Rolls {
        Rolls { delay, abort }
    }

    #[test]
    fn nothing_to_inject_compiles_to_none() {
        assert_eq!(compile(None, None), None);
    }

    #[test]
    fn full_share_always_hits_and_zero_never() {
        let f = compile(Some((7000, 100.0)), Some((Error::HttpStatus(500), 0.0))).unwrap();
        for roll in [0, 1, 999_999, 1_000_000, u32::MAX] {
            assert_eq!(
                f.delay(rolls(roll, roll)),
                Some(Duration::from_secs(7)),
                "{roll}"
            );
            assert_eq!(f.abort(rolls(roll, roll)), None, "{roll}");
        }
    }

    #[test]
    fn partial_share_hits_in_proportion_to_the_roll() {
        let f = compile(None, Some((Error::HttpStatus(503), 10.0))).unwrap();
        let abort = Some(Abort::Http(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(f.abort(rolls(0, 99_999)), abort);
        assert_eq!(f.abort(rolls(0, 100_000)), None);
        assert_eq!(
            f.abort(rolls(0, 1_099_999)),
            abort,
            "the roll wraps per million"
        );
        let hits = (0..1_000_000u32)
            .step_by(7)
            .filter(|r| f.abort(rolls(0, *r)).is_some())
            .count();
        let total = 1_000_000usize.div_ceil(7);
        assert!(
            (hits as f64 / total as f64 - 0.1).abs() < 0.001,
            "{hits}/{total}"
        );
    }

    #[test]
    fn delay_and_abort_roll_independently() {
        let f = compile(Some((10, 50.0)), Some((Error::HttpStatus(500), 50.0))).unwrap();
        assert!(f.delay(rolls(0, 900_000)).is_some());
        assert!(f.abort(rolls(0, 900_000)).is_none());
        assert!(f.delay(rolls(900_000, 0)).is_none());
        assert!(f.abort(rolls(900_000, 0)).is_some());
    }

    #[test]
    fn grpc_status_by_name_or_number() {
        let f = compile(None, Some((Error::GrpcStatus("UNAVAILABLE".into()), 100.0))).unwrap();
        assert_eq!(f.abort(rolls(0, 0)), Some(Abort::Grpc(14)));
        let f = compile(None, Some((Error::GrpcStatus("4".into()), 100.0))).unwrap();
        assert_eq!(f.abort(rolls(0, 0)), Some(Abort::Grpc(4)));
        let f = compile(
            None,
            Some((Error::GrpcStatus("permission_denied".into()), 1.0)),
        )
        .unwrap();
        assert_eq!(f.abort(rolls(0, 0)), Some(Abort::Grpc(7)));
    }

    #[test]
    fn invalid_faults_name_the_field() {
        let err = |f: pb::FaultInjection| Fault::compile(&f).unwrap_err();
        let abort = |error, percentage| pb::FaultInjection {
            abort: Some(PbAbort { error, percentage }),
            ..Default::default()
        };
        assert_eq!(
            err(abort(Some(Error::HttpStatus(99)), 1.0)).field,
            "abort.httpStatus"
        );
        assert_eq!(
            err(abort(Some(Error::HttpStatus(600)), 1.0)).field,
            "abort.httpStatus"
        );
        assert_eq!(
            err(abort(Some(Error::GrpcStatus("NOPE".into())), 1.0)).field,
            "abort.grpcStatus"
        );
        assert_eq!(
            err(abort(Some(Error::GrpcStatus("17".into())), 1.0)).field,
            "abort.grpcStatus"
        );
        assert_eq!(err(abort(None, 1.0)).field, "abort");
        assert_eq!(
            err(abort(Some(Error::HttpStatus(500)), 100.5)).field,
            "abort.percentage"
        );
        let delay = pb::FaultInjection {
            delay: Some(PbDelay {
                fixed_delay_ms: 5,
                percentage: f64::NAN,
            }),
            ..Default::default()
        };
        assert_eq!(err(delay).field, "delay.percentage");
    }
}
