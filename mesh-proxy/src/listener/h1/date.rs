//! The `Date` header of responses that come without one (RFC 9110 section 6.6.1: an origin
//! with a clock sends it; hyper's server adds it too), formatted once a second per thread.

use std::cell::RefCell;
use std::time::{Duration, SystemTime};

/// `Sun, 06 Nov 1994 08:49:37 GMT`
pub const DATE_LEN: usize = 29;

struct Cached {
    text: [u8; DATE_LEN],
    /// When the text stops being the current second.
    until: SystemTime,
}

thread_local! {
    static CACHED: RefCell<Cached> = const {
        RefCell::new(Cached { text: [0; DATE_LEN], until: SystemTime::UNIX_EPOCH })
    };
}

/// Appends the current date in IMF-fixdate form.
pub fn extend(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if now >= cached.until {
            let since_epoch = now
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            let second = since_epoch.as_secs();
            // Always 29 bytes for years 1000 to 9999; a clock outside them keeps the last.
            let text = httpdate::fmt_http_date(now);
            if text.len() == DATE_LEN {
                cached.text.copy_from_slice(text.as_bytes());
            }
            cached.until = SystemTime::UNIX_EPOCH + Duration::from_secs(second + 1);
        }
        out.extend_from_slice(&cached.text);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_date_is_the_current_second_in_imf_fixdate() {
        let before = SystemTime::now();
        let mut out = Vec::new();
        extend(&mut out);
        let text = std::str::from_utf8(&out).unwrap();
        assert_eq!(text.len(), DATE_LEN);
        assert!(text.ends_with(" GMT"), "{text}");
        let parsed = httpdate::parse_http_date(text).unwrap();
        let lag = before.duration_since(parsed).unwrap_or_default();
        assert!(lag < Duration::from_secs(2), "{text} is {lag:?} old");
    }
}
