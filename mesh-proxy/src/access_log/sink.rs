//! Where access-log lines go: a bounded buffer that one writer thread empties, as Envoy's
//! access-log files do. A request appends its line under a short lock and never waits for
//! the output; the writer takes the whole buffer at most [`FLUSH_INTERVAL`] after its first
//! line (sooner when [`FLUSH_BYTES`] have gathered) and writes it with one call. When the
//! buffer holds its capacity in lines (the output is slower than the traffic) a line is
//! dropped and counted in `mesh_proxy_access_log_dropped_total`.
//!
//! Appending instead of queueing one message per line matters: a queue wakes the writer for
//! every request, which cost more than making the line.
//!
//! The thread starts with the first line, so a proxy that never logs has none.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

/// Lines waiting for the writer; past this they are dropped.
pub const DEFAULT_CAPACITY: usize = 4096;
/// The longest a line waits in the buffer (Envoy's `file_flush_interval` is 1 s; lines show
/// up sooner here for people tailing a log).
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// A buffer this large is written at once, without waiting for the interval.
pub const FLUSH_BYTES: usize = 64 * 1024;

/// The access-log output.
pub enum Output {
    /// Istio's default (`/dev/stdout`).
    Stdout,
    /// A file, appended to (created if absent).
    File(PathBuf),
    /// Any writer (tests, embedding).
    Writer(Box<dyn Write + Send>),
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stdout => f.write_str("Stdout"),
            Self::File(p) => write!(f, "File({})", p.display()),
            Self::Writer(_) => f.write_str("Writer"),
        }
    }
}

#[derive(Debug)]
pub struct Sink {
    capacity: usize,
    /// Taken by the writer thread when it starts.
    output: Mutex<Option<Output>>,
    shared: OnceLock<Arc<Shared>>,
    dropped: Counter,
    written: Counter,
}

/// The buffer between the requests and the writer thread.
#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<Pending>,
    /// Signalled when the buffer gets its first line or reaches [`FLUSH_BYTES`].
    wake: Condvar,
    /// Signalled when the writer finished a batch.
    wrote: Condvar,
}

#[derive(Debug, Default)]
struct Pending {
    bytes: Vec<u8>,
    lines: usize,
    /// Write without waiting for the interval (a flush before exit asked for it).
    urgent: bool,
    /// The writer holds a batch it has not finished writing.
    writing: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A writer that panicked left whole lines behind: keep using them.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Default for Sink {
    fn default() -> Self {
        Self::new(Output::Stdout, DEFAULT_CAPACITY)
    }
}

impl Sink {
    pub fn new(output: Output, capacity: usize) -> Self {
        Self {
            capacity,
            output: Mutex::new(Some(output)),
            shared: OnceLock::new(),
            dropped: Counter::default(),
            written: Counter::default(),
        }
    }

    /// Sets the output; only before the first line (returns false after).
    pub fn set_output(&self, output: Output) -> bool {
        if self.shared.get().is_some() {
            return false;
        }
        let mut slot = self.output.lock().unwrap_or_else(|p| p.into_inner());
        match slot.as_mut() {
            Some(o) => {
                *o = output;
                true
            }
            None => false,
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "access_log_dropped",
            "Access-log lines dropped because the writer fell behind or failed",
            self.dropped.clone(),
        );
        registry.register(
            "access_log_written",
            "Access-log lines written",
            self.written.clone(),
        );
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    pub fn written(&self) -> u64 {
        self.written.get()
    }

    /// Appends a line without waiting for the output; a full buffer drops it.
    pub fn send(&self, line: &[u8]) {
        self.send_with(|buf| buf.extend_from_slice(line));
    }

    /// Appends the line `write` writes (one, with its newline) straight into the buffer;
    /// a full buffer drops it without calling `write`.
    pub fn send_with(&self, write: impl FnOnce(&mut Vec<u8>)) {
        let shared = self.shared.get_or_init(|| self.start());
        let mut pending = shared.lock();
        if pending.lines >= self.capacity {
            drop(pending);
            self.dropped.inc();
            return;
        }
        let first = pending.lines == 0;
        let before = pending.bytes.len();
        write(&mut pending.bytes);
        pending.lines += 1;
        let reached = before < FLUSH_BYTES && pending.bytes.len() >= FLUSH_BYTES;
        drop(pending);
        if first || reached {
            shared.wake.notify_one();
        }
    }

    /// Writes what is buffered now and waits for it, at most `timeout` (before the process
    /// exits: lines still in the buffer would be lost).
    pub fn flush(&self, timeout: Duration) {
        let Some(shared) = self.shared.get() else {
            return;
        };
        let mut pending = shared.lock();
        pending.urgent = true;
        shared.wake.notify_one();
        let _ = shared
            .wrote
            .wait_timeout_while(pending, timeout, |p| p.lines > 0 || p.writing);
    }

    fn start(&self) -> Arc<Shared> {
        let shared = Arc::new(Shared::default());
        let output = self
            .output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or(Output::Stdout);
        let (dropped, written) = (self.dropped.clone(), self.written.clone());
        let theirs = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(output, &theirs, &dropped, &written));
        if let Err(e) = spawned {
            // Nobody empties the buffer: it fills, and every line after is counted dropped.
            tracing::error!(error = %e, "access log writer thread did not start");
        }
        shared
    }
}

fn open(output: Output) -> io::Result<Box<dyn Write + Send>> {
    Ok(match output {
        Output::Stdout => Box::new(io::stdout()),
        Output::File(path) => Box::new(OpenOptions::new().create(true).append(true).open(path)?),
        Output::Writer(w) => w,
    })
}

/// Takes the buffered lines once there are some and the first has waited
/// [`FLUSH_INTERVAL`] (or the buffer reached [`FLUSH_BYTES`]); `spare` becomes the new buffer.
fn take(shared: &Shared, spare: Vec<u8>) -> (Vec<u8>, usize) {
    let pending = shared.lock();
    let pending = shared
        .wake
        .wait_while(pending, |p| p.lines == 0)
        .unwrap_or_else(|p| p.into_inner());
    let (mut pending, _) = shared
        .wake
        .wait_timeout_while(pending, FLUSH_INTERVAL, |p| {
            p.bytes.len() < FLUSH_BYTES && !p.urgent
        })
        .unwrap_or_else(|p| p.into_inner());
    pending.urgent = false;
    pending.writing = true;
    let lines = std::mem::take(&mut pending.lines);
    (std::mem::replace(&mut pending.bytes, spare), lines)
}

fn wrote(shared: &Shared) {
    shared.lock().writing = false;
    shared.wrote.notify_all();
}

/// The writer thread: writes each batch of lines with one call, for the life of the process.
fn write_lines(output: Output, shared: &Shared, dropped: &Counter, written: &Counter) {
    let described = format!("{output:?}");
    let mut out = match open(output) {
        Ok(o) => Some(o),
        Err(e) => {
            tracing::error!(output = %described, error = %e, "access log output cannot be opened; lines are dropped");
            None
        }
    };
    let mut failing = false;
    let mut spare = Vec::new();
    loop {
        let (batch, lines) = take(shared, spare);
        let result = match out.as_mut() {
            Some(out) => out.write_all(&batch).and_then(|()| out.flush()),
            None => Err(io::ErrorKind::NotFound.into()),
        };
        match result {
            Ok(()) => {
                written.inc_by(lines as u64);
                failing = false;
            }
            Err(e) => {
                dropped.inc_by(lines as u64);
                // Once per run of failures, not once per batch.
                if out.is_some() && !std::mem::replace(&mut failing, true) {
                    tracing::warn!(output = %described, error = %e, "access log write failed");
                }
            }
        }
        wrote(shared);
        spare = batch;
        spare.clear();
        // A burst's buffer is not kept for the quiet that follows.
        if spare.capacity() > 4 * FLUSH_BYTES {
            spare = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};
    use std::time::{Duration, Instant};

    use super::*;

    /// A writer that holds its first write until released, to fill the queue.
    struct Held {
        entered: Arc<Barrier>,
        release: Arc<Barrier>,
        held: bool,
        lines: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Held {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if !std::mem::replace(&mut self.held, true) {
                self.entered.wait();
                self.release.wait();
            }
            self.lines.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn wait_until(mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "timed out");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let entered = Arc::new(Barrier::new(2));
        let release = Arc::new(Barrier::new(2));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let writer = Held {
            entered: entered.clone(),
            release: release.clone(),
            held: false,
            lines: lines.clone(),
        };
        let sink = Sink::new(Output::Writer(Box::new(writer)), 4);
        sink.send(b"0\n");
        // The writer took line 0 and is held: the buffer holds 4 more, the rest drop.
        entered.wait();
        let start = Instant::now();
        for i in 1..=20 {
            sink.send(format!("{i}\n").as_bytes());
        }
        assert!(start.elapsed() < Duration::from_secs(1), "send waited");
        assert_eq!(sink.dropped(), 16);
        release.wait();
        wait_until(|| sink.written() == 5);
        assert_eq!(
            String::from_utf8(lines.lock().unwrap().clone()).unwrap(),
            "0\n1\n2\n3\n4\n"
        );
    }

    #[test]
    fn a_file_output_gets_every_line() {
        let dir = std::env::temp_dir().join(format!("mesh-access-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let _ = std::fs::remove_file(&path);
        let sink = Sink::default();
        assert!(sink.set_output(Output::File(path.clone())));
        for i in 0..100 {
            sink.send(format!("line {i}\n").as_bytes());
        }
        assert!(
            !sink.set_output(Output::Stdout),
            "the output is fixed once started"
        );
        wait_until(|| std::fs::read_to_string(&path).is_ok_and(|s| s.lines().count() == 100));
        assert_eq!(sink.dropped(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_flush_returns_once_the_buffer_is_written() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink::new(Output::Writer(Box::new(Shared(lines.clone()))), 16);
        // Waits for the writer thread to have taken the first line, then buffers more.
        sink.send(b"first\n");
        wait_until(|| sink.written() == 1);
        sink.send(b"second\n");
        sink.flush(Duration::from_secs(5));
        assert_eq!(sink.written(), 2);
        assert_eq!(&*lines.lock().unwrap(), b"first\nsecond\n");
    }

    /// A writer into a buffer the test keeps.
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_output_that_cannot_be_opened_counts_every_line_as_dropped() {
        let sink = Sink::new(
            Output::File("/nonexistent-dir/access.log".into()),
            DEFAULT_CAPACITY,
        );
        for _ in 0..3 {
            sink.send(b"x\n");
        }
        wait_until(|| sink.dropped() == 3);
        assert_eq!(sink.written(), 0);
    }
}
