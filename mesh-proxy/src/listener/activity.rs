//! When a downstream connection should be closed for doing nothing: an idle keep-alive
//! connection after the idle timeout, a client in the middle of sending request headers after
//! the header-read timeout. Pure bookkeeping; `serve` feeds it events and acts on deadlines.

use std::time::Duration;

use tokio::time::Instant;

/// The downstream connection timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A client that began a request must send all its headers within this time.
    pub header_read: Duration,
    /// A connection with no request in flight is closed after this long (Istio's downstream
    /// idle timeout, 1 h by default).
    pub idle: Duration,
}

/// An HTTP/1.1 connection idle this long, with nothing in flight, lets go of its HTTP state
/// and buffers until its next request (see `serve`): most idle keep-alive connections stay
/// idle far longer, while a busy one never pays for setting them up again.
pub const PARK_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No request in flight since `since`.
    Idle { since: Instant },
    /// The first bytes of a request head arrived at `since`; the head is not complete.
    ReadingHead { since: Instant },
    /// Requests in flight (head received, response not finished).
    Active,
}

/// Why a connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    Idle,
    HeaderRead,
    /// Not a close: idle for [`PARK_AFTER`] after a request that leaves nothing to read.
    Park,
}

#[derive(Debug)]
pub struct Activity {
    timeouts: Timeouts,
    phase: Phase,
    in_flight: usize,
    /// Whether any byte arrived yet: the first ones tell HTTP/2 (its preface) from HTTP/1.1.
    started: bool,
    /// HTTP/2 carries pings and settings between requests: bytes read while idle are not the
    /// start of a request head there, so only requests count.
    multiplexed: bool,
    /// Whether the last request left the connection parkable once idle: HTTP/1.1, no request
    /// body (nothing of it can still be unread), no upgrade.
    parkable: bool,
    /// The deadline the watcher sleeps until ([`Self::arm`]), if any. Events only wake it
    /// when they make the deadline earlier: a deadline that moved later is found when the
    /// sleep ends, so a busy connection costs its watcher no wake-up per request.
    armed: Option<Instant>,
}

impl Activity {
    pub fn new(timeouts: Timeouts, now: Instant) -> Self {
        Self {
            timeouts,
            phase: Phase::Idle { since: now },
            in_flight: 0,
            started: false,
            multiplexed: false,
            parkable: false,
            armed: None,
        }
    }

    /// The deadline to sleep until, now recorded as the one the watcher waits for.
    pub fn arm(&mut self) -> Option<(Instant, Expired)> {
        let deadline = self.deadline();
        self.armed = deadline.map(|(at, _)| at);
        deadline
    }

    /// Whether the watcher must look again: the deadline is earlier than the one it sleeps
    /// until, or it sleeps without one.
    fn watcher_late(&self) -> bool {
        match (self.deadline(), self.armed) {
            (Some((at, _)), Some(armed)) => at < armed,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// Bytes arrived from the client. Returns true when the watcher must look again.
    pub fn on_read(&mut self, bytes: &[u8], now: Instant) -> bool {
        if bytes.is_empty() {
            return false;
        }
        if !self.started {
            self.started = true;
            // The HTTP/2 preface starts "PRI * HTTP/2.0"; no HTTP/1.1 method starts "PRI".
            self.multiplexed = bytes.starts_with(b"PRI");
        }
        if let Phase::Idle { .. } = self.phase
            && !self.multiplexed
        {
            self.phase = Phase::ReadingHead { since: now };
            return self.watcher_late();
        }
        false
    }

    /// A request head was complete and the request is being handled; `parkable` when the
    /// connection may be parked once it is idle after it. Returns when the head's first bytes
    /// arrived, if they came while nothing was in flight (a pipelined head, or an HTTP/2
    /// request, has no such time here).
    pub fn on_request(&mut self, parkable: bool) -> Option<Instant> {
        let head_began = match self.phase {
            Phase::ReadingHead { since } => Some(since),
            Phase::Idle { .. } | Phase::Active => None,
        };
        self.in_flight += 1;
        self.phase = Phase::Active;
        self.parkable = parkable;
        head_began
    }

    /// The connection was parked: it stays so until a request makes it parkable again.
    pub fn on_parked(&mut self) {
        self.parkable = false;
    }

    /// A response (headers and body) finished or was abandoned. Returns true when the
    /// watcher must look again.
    pub fn on_response_done(&mut self, now: Instant) -> bool {
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.in_flight == 0 {
            self.phase = Phase::Idle { since: now };
        }
        self.watcher_late()
    }

    /// When the connection expires if nothing happens before, and why; none while requests
    /// are in flight.
    pub fn deadline(&self) -> Option<(Instant, Expired)> {
        match self.phase {
            Phase::Idle { since } if self.parkable && PARK_AFTER < self.timeouts.idle => {
                Some((since + PARK_AFTER, Expired::Park))
            }
            Phase::Idle { since } => Some((since + self.timeouts.idle, Expired::Idle)),
            Phase::ReadingHead { since } => {
                Some((since + self.timeouts.header_read, Expired::HeaderRead))
            }
            Phase::Active => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        header_read: Duration::from_secs(10),
        idle: Duration::from_secs(3600),
    };

    #[test]
    fn idle_connection_expires_after_the_idle_timeout() {
        let start = Instant::now();
        let a = Activity::new(T, start);
        assert_eq!(
            a.deadline(),
            Some((start + Duration::from_secs(3600), Expired::Idle))
        );
    }

    #[test]
    fn a_request_began_when_its_head_first_arrived() {
        let start = Instant::now();
        let mut a = Activity::new(T, start);
        let first_bytes = start + Duration::from_secs(2);
        a.on_read(b"GET / HT", first_bytes);
        a.on_read(b"TP/1.1\r\n\r\n", first_bytes + Duration::from_secs(1));
        assert_eq!(a.on_request(false), Some(first_bytes));
        // Pipelined behind it: its bytes came while a request was in flight.
        assert_eq!(a.on_request(false), None);
        a.on_response_done(start);
        a.on_response_done(start);
        // HTTP/2: bytes between requests are not the start of a head.
        let mut h2 = Activity::new(T, start);
        h2.on_read(b"PRI * HTTP/2.0", first_bytes);
        assert_eq!(h2.on_request(false), None);
    }

    #[test]
    fn a_started_head_is_judged_by_the_header_read_timeout() {
        let start = Instant::now();
        let mut a = Activity::new(T, start);
        let later = start + Duration::from_secs(5);
        assert!(a.on_read(b"GET / HT", later));
        assert_eq!(
            a.deadline(),
            Some((later + Duration::from_secs(10), Expired::HeaderRead))
        );
        // More bytes of the same head do not extend it.
        assert!(!a.on_read(b"TP/1.1\r\n", later + Duration::from_secs(9)));
        assert_eq!(
            a.deadline(),
            Some((later + Duration::from_secs(10), Expired::HeaderRead))
        );
    }

    #[test]
    fn requests_in_flight_never_expire_and_idleness_restarts_after_them() {
        let start = Instant::now();
        let mut a = Activity::new(T, start);
        a.on_read(b"GET", start);
        a.on_request(false);
        a.on_request(false);
        assert_eq!(a.deadline(), None);
        let end = start + Duration::from_secs(7200);
        a.on_response_done(end);
        assert_eq!(a.deadline(), None, "one request still in flight");
        a.on_response_done(end);
        assert_eq!(
            a.deadline(),
            Some((end + Duration::from_secs(3600), Expired::Idle))
        );
    }

    #[test]
    fn http2_frames_between_requests_keep_the_idle_deadline() {
        let start = Instant::now();
        let mut a = Activity::new(T, start);
        assert!(!a.on_read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", start));
        assert!(!a.on_read(b"\x00\x00\x08\x06", start + Duration::from_secs(60)));
        assert_eq!(
            a.deadline(),
            Some((start + Duration::from_secs(3600), Expired::Idle))
        );
    }

    #[test]
    fn an_idle_connection_after_a_parkable_request_parks_then_keeps_its_idle_deadline() {
        let start = Instant::now();
        let mut a = Activity::new(T, start);
        a.on_read(b"GET / HTTP/1.1\r\n\r\n", start);
        a.on_request(true);
        let end = start + Duration::from_secs(2);
        a.on_response_done(end);
        assert_eq!(a.deadline(), Some((end + PARK_AFTER, Expired::Park)));
        a.on_parked();
        assert_eq!(
            a.deadline(),
            Some((end + Duration::from_secs(3600), Expired::Idle)),
            "parking does not restart the idle timeout"
        );
    }

    #[test]
    fn a_request_that_may_leave_bytes_unread_is_never_parked_after() {
        let start = Instant::now();
        let mut a = Activity::new(T, start);
        a.on_request(false);
        a.on_response_done(start);
        assert_eq!(
            a.deadline(),
            Some((start + Duration::from_secs(3600), Expired::Idle))
        );
    }

    #[test]
    fn the_watcher_is_woken_only_for_an_earlier_deadline() {
        let start = Instant::now();
        let mut a = Activity::new(T, start);
        let idle_end = start + Duration::from_secs(3600);
        assert_eq!(a.arm(), Some((idle_end, Expired::Idle)));
        // A head started: its 10 s are well before the armed idle deadline.
        assert!(a.on_read(b"GET / HTTP/1.1\r\n", start));
        assert_eq!(a.arm(), Some((start + T.header_read, Expired::HeaderRead)));
        a.on_request(true);
        // The response ends so late that its park deadline is after the armed header
        // deadline: the sleep ends first and finds the new deadline then.
        let end = start + Duration::from_millis(9_500);
        assert!(!a.on_response_done(end));
        assert_eq!(a.arm(), Some((end + PARK_AFTER, Expired::Park)));
        // A watcher waiting without a sleep (a request was in flight when it looked) is woken
        // by any deadline.
        a.on_read(b"GET", end);
        a.on_request(false);
        assert_eq!(a.arm(), None);
        assert!(a.on_response_done(end + Duration::from_secs(1)));
    }

    #[test]
    fn an_idle_timeout_shorter_than_the_park_delay_closes_instead() {
        let short = Timeouts {
            header_read: Duration::from_secs(10),
            idle: Duration::from_millis(500),
        };
        let start = Instant::now();
        let mut a = Activity::new(short, start);
        a.on_request(true);
        a.on_response_done(start);
        assert_eq!(
            a.deadline(),
            Some((start + Duration::from_millis(500), Expired::Idle))
        );
    }
}
