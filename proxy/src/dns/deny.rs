//! The only place where a DNS refusal or failure becomes a wire message.
//! Responses are built from the query's own bytes: the header (id, opcode,
//! RD) and the question section exactly as sent, so names keep their case
//! byte for byte. Nothing else is answered: no records, no EDNS.

use super::parse::{DnsQuery, HEADER_LEN};

/// How a denied query is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DenyResponse {
    /// `REFUSED` (Cilium's default).
    #[default]
    Refused,
    /// `NXDOMAIN`: the name does not exist, as far as the client knows.
    NxDomain,
}

/// A DNS response code the proxy answers with itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyRcode {
    FormErr = 1,
    ServFail = 2,
    NxDomain = 3,
    Refused = 5,
}

impl ProxyRcode {
    /// The rcode's name, as in the access log.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyRcode::FormErr => "FORMERR",
            ProxyRcode::ServFail => "SERVFAIL",
            ProxyRcode::NxDomain => "NXDOMAIN",
            ProxyRcode::Refused => "REFUSED",
        }
    }
}

impl From<DenyResponse> for ProxyRcode {
    fn from(d: DenyResponse) -> Self {
        match d {
            DenyResponse::Refused => ProxyRcode::Refused,
            DenyResponse::NxDomain => ProxyRcode::NxDomain,
        }
    }
}

/// A response to `query` with `rcode`, echoing its questions.
pub fn respond(query: &DnsQuery, rcode: ProxyRcode) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + query.question_bytes.len());
    out.extend_from_slice(&query.id.to_be_bytes());
    out.extend_from_slice(&flags(query.flags, rcode));
    let qdcount = u16::try_from(query.questions.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&qdcount.to_be_bytes());
    out.extend_from_slice(&[0; 6]);
    out.extend_from_slice(&query.question_bytes);
    out
}

/// A header-only `FORMERR` for a message that could not be parsed but has
/// a full header: the id and opcode are echoed, there is no question.
pub fn format_error(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() < HEADER_LEN {
        return None;
    }
    let mut out = Vec::with_capacity(HEADER_LEN);
    out.extend_from_slice(&bytes[..2]);
    out.extend_from_slice(&flags([bytes[2], bytes[3]], ProxyRcode::FormErr));
    out.extend_from_slice(&[0; 8]);
    Some(out)
}

/// Response flags: QR, the query's opcode and RD, RA, and `rcode`.
fn flags(query: [u8; 2], rcode: ProxyRcode) -> [u8; 2] {
    const QR: u8 = 0x80;
    const OPCODE: u8 = 0x78;
    const RD: u8 = 0x01;
    const RA: u8 = 0x80;
    [QR | (query[0] & (OPCODE | RD)), RA | rcode as u8]
}
