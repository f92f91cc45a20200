use std::io::Result as IoResult;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};

use crate::connection::Connection;
#[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
use crate::ssl::SslStream;

pub(crate) enum Stream {
    Http(Connection),
    #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
    Https(SslStream),
}

impl Stream {
    // Not `Clone`: duplicating the descriptor fails when the process is out
    // of them (EMFILE), and that must not panic the accept thread.
    fn try_clone(&self) -> IoResult<Self> {
        match self {
            Stream::Http(tcp_stream) => tcp_stream.try_clone().map(Stream::Http),
            #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
            Stream::Https(ssl_stream) => Ok(Stream::Https(ssl_stream.clone())),
        }
    }

    fn set_read_timeout(&self, t: Option<std::time::Duration>) -> IoResult<()> {
        match self {
            Stream::Http(c) => c.set_read_timeout(t),
            #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
            Stream::Https(_) => Ok(()),
        }
    }
}

impl From<Connection> for Stream {
    fn from(tcp_stream: Connection) -> Self {
        Stream::Http(tcp_stream)
    }
}

impl Stream {
    fn secure(&self) -> bool {
        match self {
            Stream::Http(_) => false,
            #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
            Stream::Https(_) => true,
        }
    }

    fn peer_addr(&mut self) -> IoResult<Option<SocketAddr>> {
        match self {
            Stream::Http(tcp_stream) => tcp_stream.peer_addr(),
            #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
            Stream::Https(ssl_stream) => ssl_stream.peer_addr(),
        }
    }

    fn shutdown(&mut self, how: Shutdown) -> IoResult<()> {
        match self {
            Stream::Http(tcp_stream) => tcp_stream.shutdown(how),
            #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
            Stream::Https(ssl_stream) => ssl_stream.shutdown(how),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        match self {
            Stream::Http(tcp_stream) => tcp_stream.read(buf),
            #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
            Stream::Https(ssl_stream) => ssl_stream.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> IoResult<usize> {
        match self {
            Stream::Http(tcp_stream) => tcp_stream.write(buf),
            #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
            Stream::Https(ssl_stream) => ssl_stream.write(buf),
        }
    }

    fn flush(&mut self) -> IoResult<()> {
        match self {
            Stream::Http(tcp_stream) => tcp_stream.flush(),
            #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
            Stream::Https(ssl_stream) => ssl_stream.flush(),
        }
    }
}

pub struct RefinedTcpStream {
    // `None` only once taken out by `into_tcp` (see PATCHES.md, 10).
    stream: Option<Stream>,
    close_read: bool,
    close_write: bool,
}

impl RefinedTcpStream {
    /// Splits a connection into its read and write halves; if duplicating
    /// it fails, the error comes back with the connection, to retry.
    #[allow(clippy::type_complexity)]
    pub(crate) fn new<S>(
        stream: S,
    ) -> Result<(RefinedTcpStream, RefinedTcpStream), (std::io::Error, Stream)>
    where
        S: Into<Stream>,
    {
        let stream: Stream = stream.into();

        let read = match stream.try_clone() {
            Ok(read) => read,
            Err(e) => return Err((e, stream)),
        };
        let write = stream;

        let read = RefinedTcpStream {
            stream: Some(read),
            close_read: true,
            close_write: false,
        };

        let write = RefinedTcpStream {
            stream: Some(write),
            close_read: false,
            close_write: true,
        };

        Ok((read, write))
    }

    fn stream(&self) -> IoResult<&Stream> {
        self.stream.as_ref().ok_or_else(taken)
    }

    fn stream_mut(&mut self) -> IoResult<&mut Stream> {
        self.stream.as_mut().ok_or_else(taken)
    }

    /// How long one read may wait (SO_RCVTIMEO); `None`: forever.
    pub(crate) fn set_read_timeout(&self, t: Option<std::time::Duration>) -> IoResult<()> {
        self.stream()?.set_read_timeout(t)
    }

    /// Sends a FIN after what was written: the peer sees the end of the
    /// response even while its own input is still being drained.
    pub(crate) fn shutdown_write(&mut self) -> IoResult<()> {
        self.stream_mut()?.shutdown(Shutdown::Write)
    }

    /// Returns true if this struct wraps around a secure connection.
    #[inline]
    pub(crate) fn secure(&self) -> bool {
        self.stream.as_ref().is_some_and(Stream::secure)
    }

    /// A duplicate handle on a plain TCP socket (for the connection slots,
    /// which may shut it down); `None` for other kinds or without a spare
    /// descriptor.
    pub(crate) fn try_clone_tcp(&self) -> Option<std::net::TcpStream> {
        match &self.stream {
            Some(Stream::Http(Connection::Tcp(s))) => s.try_clone().ok(),
            _ => None,
        }
    }

    /// Whether `into_tcp` can hand out this connection's socket.
    pub(crate) fn is_tcp(&self) -> bool {
        matches!(self.stream, Some(Stream::Http(Connection::Tcp(_))))
    }

    pub(crate) fn peer_addr(&mut self) -> IoResult<Option<SocketAddr>> {
        self.stream_mut()?.peer_addr()
    }

    /// The plain TCP socket, for a handler that takes the connection over.
    /// Neither half is shut down: dropping the other half only closes its
    /// duplicate descriptor, and the socket lives on in the returned stream.
    pub(crate) fn into_tcp(mut self) -> Option<std::net::TcpStream> {
        self.close_read = false;
        self.close_write = false;
        match self.stream.take() {
            Some(Stream::Http(Connection::Tcp(s))) => Some(s),
            _ => None,
        }
    }

    /// Drops this half without shutting the socket down (see `into_tcp`).
    pub(crate) fn disarm(mut self) {
        self.close_read = false;
        self.close_write = false;
    }
}

fn taken() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        "the connection was handed over",
    )
}

impl Drop for RefinedTcpStream {
    fn drop(&mut self) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        if self.close_read {
            stream.shutdown(Shutdown::Read).ok();
        }

        if self.close_write {
            stream.shutdown(Shutdown::Write).ok();
        }
    }
}

impl Read for RefinedTcpStream {
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        self.stream_mut()?.read(buf)
    }
}

impl Write for RefinedTcpStream {
    fn write(&mut self, buf: &[u8]) -> IoResult<usize> {
        self.stream_mut()?.write(buf)
    }

    fn flush(&mut self) -> IoResult<()> {
        self.stream_mut()?.flush()
    }
}
