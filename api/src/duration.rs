//! Durations as Istio writes them: protobuf JSON (`3s`, `0.1s`) and Go style
//! (`100ms`, `1h`, `1m30s`).

use std::fmt;
use std::time::Duration as StdDuration;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("invalid duration {0:?}: negative durations are not allowed")]
    Negative(String),
    #[error("invalid duration {0:?}: missing unit (use ns, us, ms, s, m or h)")]
    MissingUnit(String),
    #[error("invalid duration {0:?}: unknown unit {1:?} (use ns, us, ms, s, m or h)")]
    UnknownUnit(String, String),
    #[error("invalid duration {0:?}: expected a number")]
    BadNumber(String),
    #[error("invalid duration {0:?}: too large")]
    Overflow(String),
}

/// Parses `3s`, `0.1s`, `100ms`, `1h`, `1m30s`, `1.5h`, `250us`, `0`.
pub fn parse_duration(input: &str) -> Result<StdDuration, DurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s.starts_with('-') {
        return Err(DurationError::Negative(input.to_string()));
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    // Go accepts a bare zero without unit.
    if s == "0" {
        return Ok(StdDuration::ZERO);
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(DurationError::BadNumber(input.to_string()));
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let nanos_per_unit: u128 = match unit {
            "" => return Err(DurationError::MissingUnit(input.to_string())),
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            other => {
                return Err(DurationError::UnknownUnit(
                    input.to_string(),
                    other.to_string(),
                ));
            }
        };
        let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part
                .parse()
                .map_err(|_| DurationError::Overflow(input.to_string()))?
        };
        let mut frac_nanos: u128 = 0;
        let mut scale: u128 = 1;
        for d in frac_part.bytes().take(18) {
            frac_nanos = frac_nanos * 10 + u128::from(d - b'0');
            scale *= 10;
        }
        total = int
            .checked_mul(nanos_per_unit)
            .and_then(|v| v.checked_add(frac_nanos * nanos_per_unit / scale))
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| DurationError::Overflow(input.to_string()))?;
        rest = next;
    }
    let secs = u64::try_from(total / 1_000_000_000)
        .map_err(|_| DurationError::Overflow(input.to_string()))?;
    Ok(StdDuration::new(secs, (total % 1_000_000_000) as u32))
}

/// Formats as protobuf JSON does: seconds with up to nine fractional digits.
pub fn format_duration(d: StdDuration) -> String {
    let nanos = d.subsec_nanos();
    if nanos == 0 {
        return format!("{}s", d.as_secs());
    }
    let frac = format!("{nanos:09}");
    format!("{}.{}s", d.as_secs(), frac.trim_end_matches('0'))
}

/// A duration field of an Istio resource.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub StdDuration);

impl Duration {
    pub fn as_std(&self) -> StdDuration {
        self.0
    }
}

impl From<StdDuration> for Duration {
    fn from(d: StdDuration) -> Self {
        Self(d)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"3s\", \"0.1s\" or \"100ms\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                parse_duration(v).map(Duration).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> StdDuration {
        StdDuration::from_millis(v)
    }

    #[test]
    fn protobuf_and_go_forms() {
        assert_eq!(parse_duration("3s").unwrap(), ms(3000));
        assert_eq!(parse_duration("0.1s").unwrap(), ms(100));
        assert_eq!(parse_duration("1.5s").unwrap(), ms(1500));
        assert_eq!(parse_duration("100ms").unwrap(), ms(100));
        assert_eq!(parse_duration("1h").unwrap(), ms(3_600_000));
        assert_eq!(parse_duration("1m30s").unwrap(), ms(90_000));
        assert_eq!(parse_duration("1.5h").unwrap(), ms(5_400_000));
        assert_eq!(
            parse_duration("250us").unwrap(),
            StdDuration::from_micros(250)
        );
        assert_eq!(parse_duration("7ns").unwrap(), StdDuration::from_nanos(7));
        assert_eq!(parse_duration("300s").unwrap(), ms(300_000));
        assert_eq!(parse_duration("0").unwrap(), StdDuration::ZERO);
        assert_eq!(
            parse_duration("3.000000001s").unwrap(),
            StdDuration::new(3, 1)
        );
    }

    #[test]
    fn errors_are_clear() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert!(matches!(
            parse_duration("-1s"),
            Err(DurationError::Negative(_))
        ));
        assert!(matches!(
            parse_duration("10"),
            Err(DurationError::MissingUnit(_))
        ));
        assert!(matches!(
            parse_duration("apple"),
            Err(DurationError::BadNumber(_))
        ));
        assert!(matches!(
            parse_duration("5d"),
            Err(DurationError::UnknownUnit(_, _))
        ));
        assert!(matches!(
            parse_duration("1..2s"),
            Err(DurationError::BadNumber(_))
        ));
        let msg = parse_duration("5d").unwrap_err().to_string();
        assert!(msg.contains("unknown unit \"d\""), "{msg}");
    }

    #[test]
    fn round_trips_as_protobuf_json() {
        assert_eq!(format_duration(ms(3000)), "3s");
        assert_eq!(format_duration(ms(100)), "0.1s");
        let d: Duration = serde_json::from_value(serde_json::json!("1m30s")).unwrap();
        assert_eq!(serde_json::to_value(d).unwrap(), serde_json::json!("90s"));
        assert!(serde_json::from_value::<Duration>(serde_json::json!(5)).is_err());
    }
}
