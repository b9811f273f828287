//! The client side of the control protocol, used by `carpioctl`.

use super::proto::{self, Request, Response};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// A connection to the daemon's control socket.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects to `path`; `retry_for` keeps retrying while the socket does not exist yet
    /// (relayctl's `monitor` does so).
    pub fn connect(path: &Path, retry_for: Option<Duration>) -> io::Result<Self> {
        let deadline = retry_for.map(|d| std::time::Instant::now() + d);
        loop {
            match UnixStream::connect(path) {
                Ok(s) => {
                    let writer = s.try_clone()?;
                    return Ok(Self {
                        reader: BufReader::new(s),
                        writer,
                    });
                }
                Err(e) if deadline.is_some_and(|d| std::time::Instant::now() < d) => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("connect {}: {e}", path.display()),
                    ));
                }
            }
        }
    }

    /// Sends a request.
    pub fn send(&mut self, req: &Request) -> io::Result<()> {
        self.writer.write_all(proto::to_line(req).as_bytes())
    }

    /// Reads the next response; `Ok(None)` when the daemon closed the connection.
    pub fn recv(&mut self) -> io::Result<Option<Response>> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        serde_json::from_str(&line).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad reply from daemon: {e}"),
            )
        })
    }

    /// Sends a request and reads its one response.
    pub fn call(&mut self, req: &Request) -> io::Result<Response> {
        self.send(req)?;
        self.recv()?.ok_or_else(|| {
            io::Error::new(io::ErrorKind::UnexpectedEof, "daemon closed the connection")
        })
    }
}
