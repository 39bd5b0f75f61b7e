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
mod tests {
    use super::*;

    /// A ClientHello record with the given extensions body.
    fn hello(version: [u8; 2], exts: Option<Vec<u8>>) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend([7u8; 32]);
        body.push(0); // session id
        body.extend([0, 2, 0x13, 0x01]); // one cipher suite
        body.extend([1, 0]); // null compression
        if let Some(e) = exts {
            body.extend((e.len() as u16).to_be_bytes());
            body.extend(e);
        }
        let mut hs = vec![1];
        hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend(body);
        let mut rec = vec![0x16, version[0], version[1]];
        rec.extend((hs.len() as u16).to_be_bytes());
        rec.extend(hs);
        rec
    }

    fn sni_ext(name: &[u8]) -> Vec<u8> {
        let mut entry = vec![0];
        entry.extend((name.len() as u16).to_be_bytes());
        entry.extend(name);
        let mut list = (entry.len() as u16).to_be_bytes().to_vec();
        list.extend(entry);
        let mut ext = vec![0, 0];
        ext.extend((list.len() as u16).to_be_bytes());
        ext.extend(list);
        ext
    }

    #[test]
    fn reads_sni_of_every_record_version() {
        for v in [[3, 0], [3, 1], [3, 2], [3, 3]] {
            let mut exts = vec![0, 10, 0, 2, 0, 29]; // another extension first
            exts.extend(sni_ext(b"Api.Example.com"));
            assert_eq!(
                parse(&hello(v, Some(exts))),
                Hello::ClientHello {
                    sni: Some("api.example.com".into())
                }
            );
        }
    }

    #[test]
    fn no_extensions_or_no_sni() {
        assert_eq!(
            parse(&hello([3, 1], None)),
            Hello::ClientHello { sni: None }
        );
        assert_eq!(
            parse(&hello([3, 3], Some(vec![0, 10, 0, 2, 0, 29]))),
            Hello::ClientHello { sni: None }
        );
    }

    #[test]
    fn incomplete_until_the_whole_hello_is_there() {
        let full = hello([3, 3], Some(sni_ext(b"a.test")));
        for n in 1..full.len() {
            assert_eq!(parse(&full[..n]), Hello::Incomplete, "prefix {n}");
        }
    }

    #[test]
    fn hello_split_over_two_records() {
        let full = hello([3, 3], Some(sni_ext(b"split.test")));
        let hs = &full[5..];
        let (a, b) = hs.split_at(20);
        let mut two = vec![0x16, 3, 3];
        two.extend((a.len() as u16).to_be_bytes());
        two.extend(a);
        two.extend([0x16, 3, 3]);
        two.extend((b.len() as u16).to_be_bytes());
        two.extend(b);
        assert_eq!(
            parse(&two),
            Hello::ClientHello {
                sni: Some("split.test".into())
            }
        );
    }

    #[test]
    fn a_list_of_several_names_is_refused() {
        let mut exts = Vec::new();
        let mut list = Vec::new();
        for name in [&b"api.test"[..], b"admin.test"] {
            list.push(0);
            list.extend((name.len() as u16).to_be_bytes());
            list.extend(name);
        }
        exts.extend([0, 0]);
        exts.extend(((list.len() + 2) as u16).to_be_bytes());
        exts.extend((list.len() as u16).to_be_bytes());
        exts.extend(list);
        assert_eq!(parse(&hello([3, 3], Some(exts))), Hello::SeveralServerNames);
    }

    #[test]
    fn plaintext_and_garbage() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Hello::NotTls);
        assert!(matches!(parse(&[0x16, 9, 9, 0, 1, 0]), Hello::Malformed(_)));
        assert!(matches!(parse(&[0x16, 3, 1, 0, 0]), Hello::Malformed(_)));
        // A ServerHello is not a ClientHello.
        let mut h = hello([3, 3], None);
        h[5] = 2;
        assert!(matches!(parse(&h), Hello::Malformed(_)));
        // A name with a NUL or a slash is refused.
        assert!(matches!(
            parse(&hello([3, 3], Some(sni_ext(b"a\0b")))),
            Hello::Malformed(_)
        ));
        // An extension length past the end.
        let mut bad = sni_ext(b"a.test");
        bad[3] = 200;
        assert!(matches!(
            parse(&hello([3, 3], Some(bad))),
            Hello::Malformed(_)
        ));
    }

    #[test]
    fn truncations_and_corruptions_never_panic() {
        let full = hello([3, 3], Some(sni_ext(b"fuzz.example")));
        let mut seed = 0x2545f4914f6cdd1du64;
        for _ in 0..20000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut b = full.clone();
            let i = (seed as usize) % b.len();
            b[i] = (seed >> 32) as u8;
            let n = ((seed >> 16) as usize) % (b.len() + 1);
            let _ = parse(&b[..n]);
        }
    }
}
