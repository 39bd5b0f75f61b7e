//! DNS message parsing (pure, no I/O, fuzzed): the questions of a query as
//! the client sent them, and the parts of an answer the proxy logs.

use std::borrow::Cow;

use hickory_proto::op::{Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use policy_model::l7::normalize_name;

/// Length of the fixed DNS header.
pub const HEADER_LEN: usize = 12;

/// One question of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The name as sent (case kept; presentation form, with a trailing
    /// dot; non-DNS bytes escaped, so they never match a rule).
    pub name: String,
    /// Lowercase, fully qualified: what the rules and the learner see.
    pub normalized: String,
    pub qtype: RecordType,
    /// The question as decoded, for following CNAME chains in the answer.
    pub query: Query,
}

/// A parsed DNS query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsQuery {
    pub id: u16,
    /// The two flag bytes of the header, as sent.
    pub flags: [u8; 2],
    /// At least one.
    pub questions: Vec<Question>,
    /// The question section exactly as sent (echoed in denials, so names
    /// keep their case byte for byte).
    pub question_bytes: Vec<u8>,
}

impl DnsQuery {
    /// The question names as sent, comma-joined (for the log).
    pub fn names(&self) -> String {
        join(self.questions.iter().map(|q| q.name.as_str()))
    }

    /// The question types, comma-joined (for the log).
    pub fn qtypes(&self) -> String {
        join(self.questions.iter().map(|q| q.qtype.to_string()))
    }
}

/// Why a message is not a query the proxy can judge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{len} bytes is shorter than a DNS header (12)")]
    TooShort { len: usize },
    #[error("the message is a response (QR set), not a query")]
    NotAQuery,
    #[error("opcode {0} is not QUERY")]
    OpCode(u8),
    #[error("the query has no question")]
    NoQuestion,
    #[error("malformed DNS message: {0}")]
    Malformed(String),
}

/// Parses the header and question section of a query. The sections after
/// the questions (EDNS, ...) are forwarded untouched and not decoded: the
/// rules judge names only, and a server rejects what it cannot read.
pub fn parse_query(bytes: &[u8]) -> Result<DnsQuery, ParseError> {
    if bytes.len() < HEADER_LEN {
        return Err(ParseError::TooShort { len: bytes.len() });
    }
    let mut decoder = BinDecoder::new(bytes);
    let header = Header::read(&mut decoder).map_err(|e| ParseError::Malformed(e.to_string()))?;
    if header.metadata.message_type != MessageType::Query {
        return Err(ParseError::NotAQuery);
    }
    if header.metadata.op_code != OpCode::Query {
        return Err(ParseError::OpCode(u8::from(header.metadata.op_code)));
    }
    if header.counts.queries == 0 {
        return Err(ParseError::NoQuestion);
    }
    let mut questions = Vec::with_capacity(usize::from(header.counts.queries).min(16));
    for _ in 0..header.counts.queries {
        let query = Query::read(&mut decoder).map_err(|e| ParseError::Malformed(e.to_string()))?;
        let name = query.name().to_ascii();
        questions.push(Question {
            normalized: normalize_name(&name),
            name,
            qtype: query.query_type(),
            query,
        });
    }
    let end = decoder.index();
    Ok(DnsQuery {
        id: u16::from_be_bytes([bytes[0], bytes[1]]),
        flags: [bytes[2], bytes[3]],
        questions,
        question_bytes: bytes[HEADER_LEN..end].to_vec(),
    })
}

/// An upstream answer, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsAnswer {
    pub message: Message,
}

impl DnsAnswer {
    /// Decodes an answer; `None` when it is not a well-formed response.
    pub fn parse(bytes: &[u8]) -> Option<DnsAnswer> {
        let message = Message::from_vec(bytes).ok()?;
        (message.metadata.message_type == MessageType::Response).then_some(DnsAnswer { message })
    }

    /// The response code, as text (`NOERROR`, `NXDOMAIN`, ...); no
    /// allocation for the common codes.
    pub fn rcode(&self) -> Cow<'static, str> {
        let code = self.message.metadata.response_code;
        Cow::Borrowed(match code {
            ResponseCode::NoError => "NOERROR",
            ResponseCode::FormErr => "FORMERR",
            ResponseCode::ServFail => "SERVFAIL",
            ResponseCode::NXDomain => "NXDOMAIN",
            ResponseCode::NotImp => "NOTIMP",
            ResponseCode::Refused => "REFUSED",
            other => return Cow::Owned(format!("RCODE{}", u16::from(other))),
        })
    }

    /// The answer section's data, comma-joined (A/AAAA addresses, CNAME
    /// targets, others by type), for the log.
    pub fn summary(&self) -> String {
        join(self.message.answers.iter().map(|r| match &r.data {
            RData::A(a) => a.0.to_string(),
            RData::AAAA(a) => a.0.to_string(),
            RData::CNAME(c) => c.0.to_ascii(),
            other => other.record_type().to_string(),
        }))
    }
}

/// The id of a message too short or malformed to parse, if it has one.
pub fn message_id(bytes: &[u8]) -> Option<u16> {
    (bytes.len() >= 2).then(|| u16::from_be_bytes([bytes[0], bytes[1]]))
}

fn join<S: AsRef<str>>(items: impl Iterator<Item = S>) -> String {
    let mut out = String::new();
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item.as_ref());
    }
    out
}
