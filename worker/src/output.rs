//! What a runtime writes to stdout and stderr, as the lines of its log.
//!
//! A task per pipe reads output as it comes. When an invocation ends, the
//! environment drains the pipes itself ([`Pipes::drain`]) under the same
//! lock as the tasks, before it writes `END`: a line the function printed
//! before it answered is then in that invocation's log, even when the
//! reading task had not been scheduled yet (under load it often had not,
//! and the line went to the next invocation's log or was cleared).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use tokio::net::unix::pipe;

/// Most lines kept of an invocation's log.
pub const LOG_LINES: usize = 1000;
/// Longest log line kept, bytes (longer ones are cut).
pub const LOG_LINE_BYTES: usize = 8192;

/// Adds `line` to `log`, cut to [`LOG_LINE_BYTES`], dropping the oldest
/// line past [`LOG_LINES`].
pub(crate) fn push_bounded(log: &Mutex<Vec<String>>, mut line: String) {
    if line.len() > LOG_LINE_BYTES {
        let mut end = LOG_LINE_BYTES;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
    }
    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
    if log.len() >= LOG_LINES {
        log.remove(0);
    }
    log.push(line);
}

/// The log lines so far, shared with the reading tasks.
pub type Log = Arc<Mutex<Vec<String>>>;

/// One pipe of the runtime's output.
struct Pipe {
    rx: pipe::Receiver,
    /// Bytes after the last newline read, kept for the next read.
    partial: Mutex<Vec<u8>>,
}

impl Pipe {
    /// Moves what the pipe holds now into `log`, line by line. False at the
    /// end of the output (the writers closed the pipe) or on an error.
    fn drain(&self, log: &Mutex<Vec<String>>) -> bool {
        let mut partial = self.partial.lock().unwrap_or_else(|e| e.into_inner());
        let mut buf = [0u8; 8192];
        loop {
            match self.read(&mut buf) {
                Ok(0) => {
                    if !partial.is_empty() {
                        push_bounded(log, line_of(&partial));
                        partial.clear();
                    }
                    return false;
                }
                Ok(n) => {
                    partial.extend_from_slice(&buf[..n]);
                    while let Some(end) = partial.iter().position(|&b| b == b'\n') {
                        let rest = partial.split_off(end + 1);
                        push_bounded(log, line_of(&partial[..end]));
                        *partial = rest;
                    }
                    // A line without end is cut where the log would cut it.
                    if partial.len() > LOG_LINE_BYTES {
                        push_bounded(log, line_of(&partial));
                        partial.clear();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
    }
}

impl Pipe {
    /// One `read` of the pipe (non-blocking). Not through tokio's
    /// `try_read`, which answers `WouldBlock` without reading until the
    /// reactor has seen the pipe readable: a drain must find what is in the
    /// pipe now.
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: reads into `buf`, which is valid for `buf.len()` bytes,
        // from a descriptor `rx` owns for as long as `self` lives.
        let n = unsafe {
            libc::read(
                self.rx.as_raw_fd(),
                buf.as_mut_ptr().cast::<libc::c_void>(),
                buf.len(),
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Reads the pipe into `log` whenever it becomes readable, until the
    /// end of the output.
    async fn read_into(&self, log: &Mutex<Vec<String>>) {
        while self.rx.readable().await.is_ok() {
            // `WouldBlock` from the closure clears the read readiness, so
            // the next `readable` waits for new output.
            let drained = self.rx.try_io(|| {
                if self.drain(log) {
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    Ok(())
                }
            });
            match drained {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                _ => return,
            }
        }
    }
}

/// A line as the log keeps it: without its `\r`, bytes that are not UTF-8
/// replaced.
fn line_of(bytes: &[u8]) -> String {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    String::from_utf8_lossy(bytes).into_owned()
}

/// The runtime's output pipes.
pub struct Pipes {
    pipes: Vec<Arc<Pipe>>,
}

impl Pipes {
    /// Reads `fds` (the read ends of the runtime's stdout and stderr) into
    /// `log`, each in a task of its own, which ends with the output. Must be
    /// called within the runtime.
    pub fn start(
        fds: Vec<OwnedFd>,
        log: &Log,
    ) -> io::Result<(Pipes, Vec<tokio::task::JoinHandle<()>>)> {
        let mut pipes = Vec::new();
        let mut readers = Vec::new();
        for fd in fds {
            let pipe = Arc::new(Pipe {
                rx: pipe::Receiver::from_owned_fd(fd)?,
                partial: Mutex::new(Vec::new()),
            });
            let (reading, log) = (pipe.clone(), log.clone());
            readers.push(tokio::spawn(async move {
                reading.read_into(&log).await;
            }));
            pipes.push(pipe);
        }
        Ok((Pipes { pipes }, readers))
    }

    /// Moves everything the pipes hold now into `log`.
    pub fn drain(&self, log: &Mutex<Vec<String>>) {
        for pipe in &self.pipes {
            pipe.drain(log);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn a_drain_takes_what_was_written_before_it_whole_lines_only() {
        let (rx, tx) = std::io::pipe().unwrap();
        let mut tx = std::fs::File::from(OwnedFd::from(tx));
        let log: Log = Arc::default();
        // No task reads: the drain alone must find what was written.
        let pipe = Pipe {
            rx: pipe::Receiver::from_owned_fd(OwnedFd::from(rx)).unwrap(),
            partial: Mutex::new(Vec::new()),
        };
        tx.write_all(b"first\r\nsecond\nthird, unfinished").unwrap();
        assert!(pipe.drain(&log));
        assert_eq!(*log.lock().unwrap(), ["first", "second"]);
        tx.write_all(b" now\n\xff\n").unwrap();
        drop(tx);
        assert!(!pipe.drain(&log), "the end of the output is told");
        assert_eq!(
            *log.lock().unwrap(),
            ["first", "second", "third, unfinished now", "\u{fffd}"]
        );
    }
}
