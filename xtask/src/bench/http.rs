//! A minimal HTTP/1.1 client over `std::net::TcpStream` that times what a streaming client
//! sees: the first body byte, every server-sent event, and the last byte.
//!
//! It speaks just enough HTTP for the three servers the harness talks to (the mock, nginx,
//! sllmp): `Content-Length`, `Transfer-Encoding: chunked`, or a body up to the end of the
//! connection; keep-alive when the server allows it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Every socket read and write gives up after this long.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// What one request saw.
#[derive(Debug, Clone)]
pub(crate) struct Timed {
    /// The response status.
    pub(crate) status: u16,
    /// From writing the request to the first byte of the body.
    pub(crate) ttfb: Duration,
    /// From writing the request to the end of the body.
    pub(crate) total: Duration,
    /// When each server-sent event (`...\n\n`) was complete, from writing the request.
    pub(crate) events: Vec<Duration>,
    /// The last bytes of the body (up to 64).
    pub(crate) tail: Vec<u8>,
}

/// One client connection.
pub(crate) struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed.
    pos: usize,
}

enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

enum ChunkState {
    Size,
    Data(usize),
    DataEnd,
    Trailer,
}

/// Collects the body and the times it arrived at.
struct Sink {
    started: Instant,
    first: Option<Duration>,
    events: Vec<Duration>,
    tail: Vec<u8>,
    after_newline: bool,
}

impl Sink {
    fn take(&mut self, bytes: &[u8], at: Instant) {
        if bytes.is_empty() {
            return;
        }
        let since = at - self.started;
        self.first.get_or_insert(since);
        for &b in bytes {
            if b == b'\n' {
                if self.after_newline {
                    self.events.push(since);
                    self.after_newline = false;
                    continue;
                }
                self.after_newline = true;
            } else if b != b'\r' {
                self.after_newline = false;
            }
        }
        self.tail.extend_from_slice(bytes);
        if self.tail.len() > 64 {
            self.tail.drain(..self.tail.len() - 64);
        }
    }
}

impl Conn {
    /// A connection to `addr`, opened on the first request.
    pub(crate) fn new(addr: SocketAddr) -> Conn {
        Conn {
            addr,
            stream: None,
            buf: Vec::with_capacity(16 * 1024),
            pos: 0,
        }
    }

    fn stream(&mut self) -> io::Result<&mut TcpStream> {
        if self.stream.is_none() {
            let stream = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT)?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(IO_TIMEOUT))?;
            stream.set_write_timeout(Some(IO_TIMEOUT))?;
            self.stream = Some(stream);
            self.buf.clear();
            self.pos = 0;
        }
        Ok(self.stream.as_mut().expect("just connected"))
    }

    /// Reads more bytes into the buffer; fails at the end of the connection.
    fn fill(&mut self) -> io::Result<Instant> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream()?.read(&mut chunk)?;
        let at = Instant::now();
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(at)
    }

    /// Sends a request and reads the whole answer, timing it. `body` is sent as JSON.
    pub(crate) fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
        keep_alive: bool,
    ) -> io::Result<Timed> {
        let result = self.request_inner(method, path, body, keep_alive);
        if result.is_err() || !keep_alive {
            self.stream = None;
        }
        result
    }

    fn request_inner(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
        keep_alive: bool,
    ) -> io::Result<Timed> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAccept: */*\r\n",
            self.addr
        );
        if !body.is_empty() {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        if !keep_alive {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        let stream = self.stream()?;
        let started = Instant::now();
        stream.write_all(&request)?;

        // The head.
        let mut last_read = started;
        let head_end = loop {
            if let Some(at) = find(&self.buf[self.pos..], b"\r\n\r\n") {
                break self.pos + at + 4;
            }
            last_read = self.fill()?;
        };
        let head = String::from_utf8_lossy(&self.buf[self.pos..head_end]).into_owned();
        self.pos = head_end;
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad status line"))?;
        let mut framing = Framing::UntilClose;
        let mut server_closes = false;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            match name.as_str() {
                "content-length" => {
                    let n = value.parse().map_err(|_| {
                        io::Error::new(io::ErrorKind::InvalidData, "bad content-length")
                    })?;
                    framing = Framing::Length(n);
                }
                "transfer-encoding" if value.eq_ignore_ascii_case("chunked") => {
                    framing = Framing::Chunked;
                }
                "connection" if value.eq_ignore_ascii_case("close") => server_closes = true,
                _ => {}
            }
        }

        let mut sink = Sink {
            started,
            first: None,
            events: Vec::new(),
            tail: Vec::new(),
            after_newline: false,
        };
        match framing {
            Framing::Length(mut left) => loop {
                let take = left.min(self.buf.len() - self.pos);
                sink.take(&self.buf[self.pos..self.pos + take], last_read);
                self.pos += take;
                left -= take;
                if left == 0 {
                    break;
                }
                last_read = self.fill()?;
            },
            Framing::UntilClose => loop {
                sink.take(&self.buf[self.pos..], last_read);
                self.pos = self.buf.len();
                match self.fill() {
                    Ok(at) => last_read = at,
                    Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                        server_closes = true;
                        break;
                    }
                    Err(err) => return Err(err),
                }
            },
            Framing::Chunked => {
                let mut state = ChunkState::Size;
                'body: loop {
                    loop {
                        let available = &self.buf[self.pos..];
                        match state {
                            ChunkState::Size => {
                                let Some(end) = find(available, b"\r\n") else {
                                    break;
                                };
                                let line = String::from_utf8_lossy(&available[..end]);
                                let size = usize::from_str_radix(
                                    line.split(';').next().unwrap_or("").trim(),
                                    16,
                                )
                                .map_err(|_| {
                                    io::Error::new(io::ErrorKind::InvalidData, "bad chunk size")
                                })?;
                                self.pos += end + 2;
                                state = if size == 0 {
                                    ChunkState::Trailer
                                } else {
                                    ChunkState::Data(size)
                                };
                            }
                            ChunkState::Data(left) => {
                                if available.is_empty() {
                                    break;
                                }
                                let take = left.min(available.len());
                                sink.take(&available[..take], last_read);
                                self.pos += take;
                                state = if take == left {
                                    ChunkState::DataEnd
                                } else {
                                    ChunkState::Data(left - take)
                                };
                            }
                            ChunkState::DataEnd => {
                                if available.len() < 2 {
                                    break;
                                }
                                self.pos += 2;
                                state = ChunkState::Size;
                            }
                            ChunkState::Trailer => {
                                let Some(end) = find(available, b"\r\n") else {
                                    break;
                                };
                                self.pos += end + 2;
                                if end == 0 {
                                    break 'body;
                                }
                            }
                        }
                    }
                    last_read = self.fill()?;
                }
            }
        }
        let total = last_read - started;
        if server_closes {
            self.stream = None;
        }
        Ok(Timed {
            status,
            ttfb: sink.first.unwrap_or(total),
            total,
            events: sink.events,
            tail: sink.tail,
        })
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The status of `GET path` on a fresh connection.
pub(crate) fn get_status(addr: SocketAddr, path: &str) -> io::Result<u16> {
    Conn::new(addr)
        .request("GET", path, b"", false)
        .map(|t| t.status)
}
