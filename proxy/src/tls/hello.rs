//! A bounded TLS ClientHello reader: the SNI, with no I/O and no decryption.
//!
//! Hand-written rather than rustls's `Acceptor` because the proxy must
//! judge `serverNames` *before* deciding whether to terminate: for an
//! SNI-only rule the original bytes go upstream untouched, so the reader
//! may not consume them, and it must accept every version a client offers
//! (rustls rejects SSLv3/TLS 1.0/1.1 hellos it would never negotiate).
//! Only the record and handshake framing and the extensions list are
//! walked; every length is checked against its container.

/// Most bytes read while waiting for a complete ClientHello (a hello with
/// post-quantum key shares is ~1.8 KiB; the handshake message length is a
/// 24-bit field, far above anything sane).
pub const MAX_HELLO: usize = 16 * 1024 + 5 * 4;

/// What the first bytes of a connection are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// Not a TLS handshake record: plaintext.
    NotTls,
    /// A TLS handshake record, but the ClientHello is not complete yet.
    Incomplete,
    /// A complete ClientHello; `sni` is its `server_name` host name.
    ClientHello { sni: Option<String> },
    /// A TLS record that is not a well-formed ClientHello.
    Malformed(&'static str),
    /// A ClientHello whose `server_name` list holds more than one name.
    /// RFC 6066 §3 allows one name per type and defines one type, so no
    /// real client sends this; judging only one name would let an upstream
    /// act on another, and a list is never spliced or terminated.
    SeveralServerNames,
}

/// The error of [`client_hello_sni`] for a list of several names.
const SEVERAL_NAMES: &str = "several names in the server_name list";

/// Whether `first` (the first byte of a connection) starts a TLS
/// handshake record.
pub fn looks_like_tls(first: u8) -> bool {
    first == 0x16
}

/// Parses the start of a connection. The ClientHello may span several
/// handshake records; their fragments are joined (up to [`MAX_HELLO`]).
pub fn parse(buf: &[u8]) -> Hello {
    if buf.is_empty() {
        return Hello::Incomplete;
    }
    if !looks_like_tls(buf[0]) {
        return Hello::NotTls;
    }
    // Join handshake fragments of consecutive handshake records.
    let mut msg = Vec::new();
    let mut pos = 0;
    loop {
        if buf.len() < pos + 5 {
            return Hello::Incomplete;
        }
        if buf[pos] != 0x16 {
            return Hello::Malformed("a non-handshake record before the ClientHello ended");
        }
        if buf[pos + 1] != 3 {
            return Hello::Malformed("record version is not 3.x");
        }
        let len = u16::from_be_bytes([buf[pos + 3], buf[pos + 4]]) as usize;
        if len == 0 || len > 16384 + 2048 {
            return Hello::Malformed("record length out of range");
        }
        let end = pos + 5 + len;
        if buf.len() < end {
            return Hello::Incomplete;
        }
        msg.extend_from_slice(&buf[pos + 5..end]);
        pos = end;
        if msg.len() >= 4 {
            if msg[0] != 1 {
                return Hello::Malformed("the first handshake message is not a ClientHello");
            }
            let body = u32::from_be_bytes([0, msg[1], msg[2], msg[3]]) as usize;
            if body + 4 > MAX_HELLO {
                return Hello::Malformed("ClientHello larger than the proxy accepts");
            }
            if msg.len() >= body + 4 {
                return match client_hello_sni(&msg[4..body + 4]) {
                    Ok(sni) => Hello::ClientHello { sni },
                    Err(SEVERAL_NAMES) => Hello::SeveralServerNames,
                    Err(why) => Hello::Malformed(why),
                };
            }
        }
        if pos >= MAX_HELLO {
            return Hello::Malformed("ClientHello larger than the proxy accepts");
        }
    }
}

/// A cursor over a byte slice whose reads fail instead of panicking.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.buf.len() < n {
            return Err("ClientHello field runs past its container");
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<usize, &'static str> {
        Ok(self.take(1)?[0] as usize)
    }

    fn u16(&mut self) -> Result<usize, &'static str> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]) as usize)
    }

    /// A vector with a `width`-byte length prefix.
    fn vec(&mut self, width: usize) -> Result<&'a [u8], &'static str> {
        let n = match width {
            1 => self.u8()?,
            _ => self.u16()?,
        };
        self.take(n)
    }
}

/// The SNI of a ClientHello body (after the 4-byte handshake header).
fn client_hello_sni(body: &[u8]) -> Result<Option<String>, &'static str> {
    let mut r = Reader { buf: body };
    r.take(2)?; // legacy_version
    r.take(32)?; // random
    r.vec(1)?; // legacy_session_id
    r.vec(2)?; // cipher_suites
    r.vec(1)?; // legacy_compression_methods
    if r.buf.is_empty() {
        return Ok(None); // SSLv3-style hello without extensions
    }
    let mut exts = Reader { buf: r.vec(2)? };
    let mut sni = None;
    while !exts.buf.is_empty() {
        let ty = exts.u16()?;
        let data = exts.vec(2)?;
        if ty != 0 {
            continue;
        }
        if sni.is_some() {
            return Err("two server_name extensions");
        }
        let mut list = Reader {
            buf: Reader { buf: data }.vec(2)?,
        };
        let mut entries = 0;
        while !list.buf.is_empty() {
            let name_type = list.u8()?;
            let name = list.vec(2)?;
            entries += 1;
            if entries > 1 {
                // Every name would have to be judged, and an upstream may
                // pick any of them: a list is refused whole.
                return Err(SEVERAL_NAMES);
            }
            if name_type != 0 {
                continue;
            }
            let name = std::str::from_utf8(name).map_err(|_| "server name is not text")?;
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
            {
                return Err("server name is not a DNS host name");
            }
            sni = Some(name.to_ascii_lowercase());
        }
    }
    Ok(sni)
}

#[cfg(test)]
mod tests;
