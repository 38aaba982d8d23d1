//! Where access-log lines go: a bounded queue to one writer thread. A request hands its line
//! over without waiting; when the queue is full (the output is slower than the traffic) the
//! line is dropped and counted in `mesh_proxy_access_log_dropped_total`.
//!
//! The thread starts with the first line, so a proxy that never logs has none.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Mutex, OnceLock};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

/// Lines waiting for the writer; past this they are dropped.
pub const DEFAULT_CAPACITY: usize = 4096;

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
    tx: OnceLock<SyncSender<String>>,
    dropped: Counter,
    written: Counter,
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
            tx: OnceLock::new(),
            dropped: Counter::default(),
            written: Counter::default(),
        }
    }

    /// Sets the output; only before the first line (returns false after).
    pub fn set_output(&self, output: Output) -> bool {
        if self.tx.get().is_some() {
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

    /// Queues a line without waiting; a full queue drops it.
    pub fn send(&self, line: String) {
        let tx = self.tx.get_or_init(|| self.start());
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(line) {
            self.dropped.inc();
        }
    }

    fn start(&self) -> SyncSender<String> {
        let (tx, rx) = sync_channel(self.capacity);
        let output = self
            .output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or(Output::Stdout);
        let (dropped, written) = (self.dropped.clone(), self.written.clone());
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(output, &rx, &dropped, &written));
        if let Err(e) = spawned {
            // The receiver is gone with the closure: every line is counted as dropped.
            tracing::error!(error = %e, "access log writer thread did not start");
        }
        tx
    }
}

fn open(output: Output) -> io::Result<Box<dyn Write + Send>> {
    Ok(match output {
        Output::Stdout => Box::new(io::stdout()),
        Output::File(path) => Box::new(io::BufWriter::new(
            OpenOptions::new().create(true).append(true).open(path)?,
        )),
        Output::Writer(w) => w,
    })
}

/// The writer thread: writes what is queued, flushes when the queue is empty, ends when the
/// sink is dropped.
fn write_lines(output: Output, rx: &Receiver<String>, dropped: &Counter, written: &Counter) {
    let described = format!("{output:?}");
    let mut out = match open(output) {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(output = %described, error = %e, "access log output cannot be opened; lines are dropped");
            for _ in rx.iter() {
                dropped.inc();
            }
            return;
        }
    };
    let mut failing = false;
    while let Ok(first) = rx.recv() {
        let mut line = Some(first);
        while let Some(l) = line.take() {
            match out.write_all(l.as_bytes()) {
                Ok(()) => {
                    written.inc();
                    failing = false;
                }
                Err(e) => {
                    dropped.inc();
                    // Once per run of failures, not once per line.
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(output = %described, error = %e, "access log write failed");
                    }
                }
            }
            line = rx.try_recv().ok();
        }
        let _ = out.flush();
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
        sink.send("0\n".into());
        // The writer took line 0 and is held: the queue holds 4 more, the rest drop.
        entered.wait();
        let start = Instant::now();
        for i in 1..=20 {
            sink.send(format!("{i}\n"));
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
            sink.send(format!("line {i}\n"));
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
    fn an_output_that_cannot_be_opened_counts_every_line_as_dropped() {
        let sink = Sink::new(
            Output::File("/nonexistent-dir/access.log".into()),
            DEFAULT_CAPACITY,
        );
        for _ in 0..3 {
            sink.send("x\n".into());
        }
        wait_until(|| sink.dropped() == 3);
        assert_eq!(sink.written(), 0);
    }
}
