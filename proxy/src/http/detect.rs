//! Protocol detection: HTTP/2 with prior knowledge starts with the client
//! preface; anything else is served as HTTP/1. One bounded read with a
//! timeout; the bytes read are replayed to the chosen server.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The HTTP/2 client connection preface.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    Http1,
    Http2,
}

/// Classifies the first bytes of a connection: `None` while they are a
/// strict prefix of the HTTP/2 preface (more bytes are needed).
pub fn classify(prefix: &[u8]) -> Option<Detected> {
    let n = prefix.len().min(H2_PREFACE.len());
    if prefix[..n] != H2_PREFACE[..n] {
        Some(Detected::Http1)
    } else if n == H2_PREFACE.len() {
        Some(Detected::Http2)
    } else {
        None
    }
}

/// Reads until the protocol is known, at most `timeout` in all. Returns
/// the protocol (HTTP/1 when the client stops short of a full preface)
/// and the stream with the bytes read put back; `None` when the client
/// closed or sent nothing in time.
pub async fn detect<T: AsyncRead + Unpin>(
    mut io: T,
    timeout: Duration,
) -> io::Result<Option<(Detected, Rewind<T>)>> {
    let mut buf = BytesMut::with_capacity(H2_PREFACE.len());
    let outcome = tokio::time::timeout(timeout, async {
        loop {
            if let Some(d) = (!buf.is_empty()).then(|| classify(&buf)).flatten() {
                return Ok(Some(d));
            }
            // `read_buf` reads at most the remaining capacity: never more
            // than the preface.
            if io.read_buf(&mut buf).await? == 0 {
                return Ok(None);
            }
        }
    })
    .await;
    let detected = match outcome {
        Ok(Ok(Some(d))) => d,
        Ok(Err(e)) => return Err(e),
        Ok(Ok(None)) | Err(_) if buf.is_empty() => return Ok(None),
        // A partial preface, then EOF or silence: HTTP/1 will reject it.
        Ok(Ok(None)) | Err(_) => Detected::Http1,
    };
    Ok(Some((
        detected,
        Rewind {
            prefix: buf.freeze(),
            inner: io,
        },
    )))
}

/// A stream that first yields `prefix`, then reads from `inner`.
#[derive(Debug)]
pub struct Rewind<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    /// A stream replaying `prefix` before `inner`.
    pub fn new(prefix: Bytes, inner: T) -> Self {
        Rewind { prefix, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests;
