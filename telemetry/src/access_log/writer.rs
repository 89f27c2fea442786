//! [`AccessLog`]: the request side (filter, format, enqueue) and the writer
//! thread (take the whole queue, write it in one call).
//!
//! The queue is one byte buffer of whole lines behind a mutex, swapped with
//! the writer's empty buffer when the writer takes it: a producer holds the
//! lock for one copy of its line, the writer for one swap. The writer is
//! woken only when it waits on an empty queue, so a burst costs one wake-up.

use std::cell::RefCell;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::sink::{FileSink, Sink};
use super::{AccessLogConfig, AccessLogError, AccessLogFilter, AccessLogFormat, AccessRecord};

/// The access log, cheap to clone: one per proxy, a clone per listener
/// thread. Logging never blocks on the writer.
#[derive(Clone)]
pub struct AccessLog {
    inner: Arc<Inner>,
}

/// The writer thread, to stop it at exit ([`AccessLogHandle::shutdown`]).
/// Dropping the handle leaves the thread running; it also stops, after
/// writing what is queued, once every [`AccessLog`] clone is dropped.
pub struct AccessLogHandle {
    queue: Arc<Queue>,
    thread: JoinHandle<()>,
}

/// What [`AccessLog::log`] did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOutcome {
    /// The line waits for the writer.
    Queued,
    /// The filter left the record out.
    Filtered,
    /// The queue was full (or the writer stopped): the line is dropped and
    /// counted in [`AccessLogStats::dropped`].
    Dropped,
}

/// The access log's counters since it started, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccessLogStats {
    /// Lines written to the sink.
    pub written: u64,
    /// Lines dropped because the queue was full: the writer falls behind.
    pub dropped: u64,
    /// Failed writes, opens, reopens and rotations. Each is logged as a
    /// warning, at most one every ten seconds.
    pub write_errors: u64,
    /// Lines of the batches whose write failed (a batch may be partly
    /// written before the failure). The next batch is tried afresh.
    pub lost: u64,
}

struct Inner {
    format: AccessLogFormat,
    filter: AccessLogFilter,
    queue: Arc<Queue>,
}

impl Drop for Inner {
    /// The last [`AccessLog`] clone is gone: the writer finishes the queue
    /// and stops.
    fn drop(&mut self) {
        self.queue.stop();
    }
}

struct Queue {
    state: Mutex<State>,
    wake: Condvar,
    max_lines: usize,
    max_bytes: usize,
    /// The longest a queued line waits for the writer.
    flush_interval: Duration,
    written: AtomicU64,
    dropped: AtomicU64,
    write_errors: AtomicU64,
    lost: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Whole lines, each ending in `\n`.
    buf: Vec<u8>,
    lines: usize,
    /// How the writer sleeps on `wake`.
    writer: Waiting,
    reopen: bool,
    /// Stop once the queue is empty.
    stop: bool,
    /// The writer has stopped: nothing queued will be written.
    closed: bool,
}

/// What the writer thread is waiting for.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// Not waiting (writing, or about to look at the queue).
    #[default]
    No,
    /// An empty queue: the first line wakes it, to start the flush timer.
    Idle,
    /// The flush timer: only a full enough queue, a reopen or the stop
    /// wake it before.
    Timer,
}

/// Queued bytes that get the writer going before its flush timer: Envoy's
/// file access log flushes at 64 KiB too.
pub const FLUSH_BYTES: usize = 64 << 10;

thread_local! {
    /// The line being formatted on this thread, reused from line to line.
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A thread's line buffer is kept up to this capacity; a longer line's
/// buffer is given back after it.
const LINE_RETAIN: usize = 16 << 10;

/// Write failures are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

impl AccessLog {
    /// Starts an access log writing where `config.path` says: the file is
    /// opened (created when missing) now, so a bad path fails here.
    pub fn new(config: AccessLogConfig) -> Result<(AccessLog, AccessLogHandle), AccessLogError> {
        config.validate()?;
        let sink = match &config.path {
            None => Sink::Stdout,
            Some(path) => Sink::File(
                FileSink::open_new(path, config.max_size, config.keep).map_err(|source| {
                    AccessLogError::OpenFile {
                        path: path.clone(),
                        source,
                    }
                })?,
            ),
        };
        Self::start(config, sink)
    }

    /// Starts an access log writing to `writer` (a pipe, a socket, a test's
    /// buffer); `config.path`, `max_size` and `keep` are not used.
    pub fn with_writer(
        config: AccessLogConfig,
        writer: Box<dyn Write + Send>,
    ) -> Result<(AccessLog, AccessLogHandle), AccessLogError> {
        config.validate()?;
        Self::start(config, Sink::Writer(writer))
    }

    fn start(
        config: AccessLogConfig,
        sink: Sink,
    ) -> Result<(AccessLog, AccessLogHandle), AccessLogError> {
        let queue = Arc::new(Queue {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            max_lines: config.queue,
            max_bytes: config.queue_bytes,
            flush_interval: config.flush_interval,
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            lost: AtomicU64::new(0),
        });
        let writer_queue = Arc::clone(&queue);
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || run(&writer_queue, sink))
            .map_err(AccessLogError::SpawnWriter)?;
        let log = AccessLog {
            inner: Arc::new(Inner {
                format: config.format,
                filter: config.filter,
                queue: Arc::clone(&queue),
            }),
        };
        Ok((log, AccessLogHandle { queue, thread }))
    }

    /// Logs `record` if the filter takes it, drawing the sampling number
    /// from the thread's random generator (only when the filter samples).
    pub fn log(&self, record: &AccessRecord<'_>) -> LogOutcome {
        let random = if self.inner.filter.samples() {
            rand::random()
        } else {
            0
        };
        self.log_with_random(record, random)
    }

    /// [`AccessLog::log`] with the sampling number given
    /// ([`AccessLogFilter::matches`]).
    pub fn log_with_random(&self, record: &AccessRecord<'_>, random: u64) -> LogOutcome {
        if !self.inner.filter.matches(record, random) {
            return LogOutcome::Filtered;
        }
        let queued = LINE.try_with(|line| {
            // Not re-entered: nothing below calls back into the log.
            let Ok(mut line) = line.try_borrow_mut() else {
                return false;
            };
            line.clear();
            self.inner.format.write(record, &mut line);
            let queued = self.inner.queue.push(&line);
            if line.capacity() > LINE_RETAIN {
                *line = Vec::new();
            }
            queued
        });
        match queued {
            Ok(true) => LogOutcome::Queued,
            Ok(false) => LogOutcome::Dropped,
            Err(_) => {
                // The thread is exiting and its buffer is gone.
                self.inner.queue.dropped.fetch_add(1, Relaxed);
                LogOutcome::Dropped
            }
        }
    }

    /// Asks the writer to close and open the file again, as after a
    /// logrotate that renamed it; queued lines go to the new file.
    pub fn reopen(&self) {
        let queue = &self.inner.queue;
        let mut state = queue.state.lock();
        state.reopen = true;
        let wake = std::mem::take(&mut state.writer) != Waiting::No;
        drop(state);
        if wake {
            queue.wake.notify_one();
        }
    }

    /// Registers for SIGHUP and returns the future that calls
    /// [`AccessLog::reopen`] on each one; spawn it on any runtime. The
    /// handler is installed before this returns, so from then on SIGHUP no
    /// longer terminates the process.
    ///
    /// # Panics
    /// When called outside a tokio runtime with I/O enabled (tokio's
    /// `signal` requirement).
    #[cfg(unix)]
    pub fn reopen_on_sighup(
        &self,
    ) -> io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = signal(SignalKind::hangup())?;
        let log = self.clone();
        Ok(async move {
            while hangups.recv().await.is_some() {
                tracing::info!("sighup: reopening the access log");
                log.reopen();
            }
        })
    }

    /// The counters so far.
    pub fn stats(&self) -> AccessLogStats {
        self.inner.queue.stats()
    }
}

impl AccessLogHandle {
    /// Writes what is queued, stops the writer thread and waits for it.
    /// Lines logged afterwards are dropped. Blocks: call it at exit, off the
    /// runtime's threads.
    pub fn shutdown(self) -> AccessLogStats {
        self.queue.stop();
        if self.thread.join().is_err() {
            tracing::error!("the access log writer thread panicked");
        }
        self.queue.stats()
    }
}

impl Queue {
    fn push(&self, line: &[u8]) -> bool {
        let mut state = self.state.lock();
        if state.closed
            || state.lines >= self.max_lines
            || state.buf.len() + line.len() > self.max_bytes
        {
            drop(state);
            self.dropped.fetch_add(1, Relaxed);
            return false;
        }
        state.buf.extend_from_slice(line);
        state.lines += 1;
        // One wake per flush: the first line starts the writer's timer, a
        // full enough queue ends it early; the lines between wake nothing.
        let wake = match state.writer {
            Waiting::Idle => true,
            Waiting::Timer => state.buf.len() >= FLUSH_BYTES || state.lines >= self.max_lines / 2,
            Waiting::No => false,
        };
        if wake {
            state.writer = Waiting::No;
        }
        drop(state);
        if wake {
            self.wake.notify_one();
        }
        true
    }

    fn stop(&self) {
        self.state.lock().stop = true;
        self.wake.notify_one();
    }

    fn stats(&self) -> AccessLogStats {
        AccessLogStats {
            written: self.written.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            write_errors: self.write_errors.load(Relaxed),
            lost: self.lost.load(Relaxed),
        }
    }
}

/// The writer thread: wait for lines (or a reopen, or the stop), take them
/// all, write them in one call.
fn run(queue: &Queue, mut sink: Sink) {
    let mut batch = Vec::new();
    let mut warn = Warnings::default();
    loop {
        let mut state = queue.state.lock();
        while state.lines == 0 && !state.reopen {
            if state.stop {
                state.closed = true;
                return;
            }
            state.writer = Waiting::Idle;
            queue.wake.wait(&mut state);
        }
        // Lines are waiting: let more come, up to the flush interval.
        let deadline = Instant::now() + queue.flush_interval;
        while !state.stop
            && !state.reopen
            && state.buf.len() < FLUSH_BYTES
            && state.lines < queue.max_lines / 2
        {
            state.writer = Waiting::Timer;
            if queue.wake.wait_until(&mut state, deadline).timed_out() {
                break;
            }
        }
        state.writer = Waiting::No;
        std::mem::swap(&mut state.buf, &mut batch);
        let lines = std::mem::take(&mut state.lines);
        let reopen = std::mem::take(&mut state.reopen);
        drop(state);

        if reopen {
            if let Err(e) = sink.reopen() {
                queue.write_errors.fetch_add(1, Relaxed);
                warn.warn("reopening the access log failed", &e);
            }
        }
        if lines > 0 {
            let mut rotation_failed = |e: io::Error| {
                queue.write_errors.fetch_add(1, Relaxed);
                warn.warn("rotating the access log failed", &e);
            };
            let result = sink.write(&batch, &mut rotation_failed);
            let lines = lines as u64;
            match result {
                Ok(()) => {
                    queue.written.fetch_add(lines, Relaxed);
                }
                Err(e) => {
                    queue.write_errors.fetch_add(1, Relaxed);
                    queue.lost.fetch_add(lines, Relaxed);
                    warn.warn("writing the access log failed", &e);
                }
            }
            batch.clear();
        }
    }
}

/// Rate-limited warnings: the first, then at most one per [`WARN_EVERY`]
/// with the number held back in between.
#[derive(Default)]
struct Warnings {
    last: Option<Instant>,
    held_back: u64,
}

impl Warnings {
    fn warn(&mut self, what: &'static str, error: &io::Error) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < WARN_EVERY)
        {
            self.held_back += 1;
            return;
        }
        tracing::warn!(%error, held_back = self.held_back, "{what}");
        self.last = Some(now);
        self.held_back = 0;
    }
}
