//! [`BatchWriter`]: a log sink that never blocks a request and never wakes a thread per line.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A cloneable `io::Write` that appends to an in-memory buffer, written out by a background
/// thread every `interval` (sooner when the buffer is half full).
///
/// Writing a line costs one short lock and a copy: no system call, no thread wake-up. When
/// the output cannot keep up and the buffer is full, lines are dropped and counted
/// ([`BatchWriter::dropped`]) rather than slowing requests down. Use it as the writer of a
/// `tracing-subscriber` fmt layer (`.with_writer(move || writer.clone())`): each event is
/// one `write` call, so lines never interleave.
///
/// ```
/// use std::io::Write;
/// use std::time::Duration;
/// use sllmp_observe::BatchWriter;
///
/// let (mut writer, guard) = BatchWriter::spawn(Vec::new(), Duration::from_millis(100), 1 << 20);
/// writer.write_all(b"one line\n").unwrap();
/// // Dropping the guard flushes what is buffered and stops the thread.
/// let out: Vec<u8> = guard.finish();
/// assert_eq!(out, b"one line\n");
/// ```
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

struct Shared {
    buffer: Mutex<Vec<u8>>,
    wake: Condvar,
    capacity: usize,
    dropped: AtomicU64,
    closed: AtomicBool,
}

/// Owns the background thread of a [`BatchWriter`]; dropping it flushes and stops it.
pub struct BatchWriterGuard<W: Write + Send + 'static> {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<W>>,
}

impl BatchWriter {
    /// Starts the background thread writing to `out` every `interval`, buffering at most
    /// `capacity` bytes in between.
    pub fn spawn<W: Write + Send + 'static>(
        out: W,
        interval: Duration,
        capacity: usize,
    ) -> (BatchWriter, BatchWriterGuard<W>) {
        let shared = Arc::new(Shared {
            buffer: Mutex::new(Vec::with_capacity(capacity.min(1 << 20))),
            wake: Condvar::new(),
            capacity,
            dropped: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("sllmp-log-writer".into())
            .spawn(move || flush_loop(&thread_shared, out, interval))
            .expect("spawn the log writer thread");
        (
            BatchWriter {
                shared: Arc::clone(&shared),
            },
            BatchWriterGuard {
                shared,
                thread: Some(thread),
            },
        )
    }

    /// Lines dropped so far because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl Write for BatchWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.append(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Writing out is the background thread's job; a flush here would block the caller.
        Ok(())
    }
}

impl BatchWriter {
    /// Adds `data` to the batch, or drops it (counted) when the buffer is full.
    pub(crate) fn append(&self, data: &[u8]) {
        let mut buffer = self.shared.buffer.lock().unwrap_or_else(|e| e.into_inner());
        if buffer.len() + data.len() > self.shared.capacity {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let was_below_half = buffer.len() < self.shared.capacity / 2;
        buffer.extend_from_slice(data);
        if was_below_half && buffer.len() >= self.shared.capacity / 2 {
            self.shared.wake.notify_one();
        }
    }
}

fn flush_loop<W: Write>(shared: &Shared, mut out: W, interval: Duration) -> W {
    let mut spare = Vec::new();
    loop {
        let closed = {
            let buffer = shared.buffer.lock().unwrap_or_else(|e| e.into_inner());
            let (mut buffer, _) = shared
                .wake
                .wait_timeout_while(buffer, interval, |b| {
                    b.len() < shared.capacity / 2 && !shared.closed.load(Ordering::Acquire)
                })
                .unwrap_or_else(|e| e.into_inner());
            std::mem::swap(&mut *buffer, &mut spare);
            shared.closed.load(Ordering::Acquire)
        };
        if !spare.is_empty() {
            // A failing output (disk full) must not take the proxy down: the lines are lost.
            let _ = out.write_all(&spare);
            let _ = out.flush();
            spare.clear();
        }
        if closed {
            let rest =
                std::mem::take(&mut *shared.buffer.lock().unwrap_or_else(|e| e.into_inner()));
            let _ = out.write_all(&rest);
            let _ = out.flush();
            return out;
        }
    }
}

impl<W: Write + Send + 'static> BatchWriterGuard<W> {
    /// Flushes everything buffered, stops the thread and returns the output.
    pub fn finish(mut self) -> W {
        self.stop().expect("the log writer thread ran")
    }

    fn stop(&mut self) -> Option<W> {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        self.thread.take().and_then(|thread| thread.join().ok())
    }
}

impl<W: Write + Send + 'static> Drop for BatchWriterGuard<W> {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_arrive_in_order_and_whole() {
        let (writer, guard) = BatchWriter::spawn(Vec::new(), Duration::from_millis(5), 1 << 16);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..100 {
                        writer
                            .write_all(format!("thread {t} line {i}\n").as_bytes())
                            .unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let out = String::from_utf8(guard.finish()).unwrap();
        assert_eq!(out.lines().count(), 400);
        for t in 0..4 {
            let mine: Vec<_> = out
                .lines()
                .filter(|l| l.starts_with(&format!("thread {t} ")))
                .collect();
            let expected: Vec<_> = (0..100).map(|i| format!("thread {t} line {i}")).collect();
            assert_eq!(mine, expected);
        }
    }

    #[test]
    fn a_full_buffer_drops_and_counts_instead_of_blocking() {
        let (mut writer, guard) = BatchWriter::spawn(Vec::new(), Duration::from_secs(3600), 10);
        writer.write_all(b"123456\n").unwrap();
        writer.write_all(b"7890ab\n").unwrap();
        assert_eq!(writer.dropped(), 1);
        assert_eq!(guard.finish(), b"123456\n");
    }
}
