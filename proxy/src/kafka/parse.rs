//! Kafka request frames as the policy sees them (pure, no I/O, fuzzed):
//! the header (decoded with `kafka-protocol`) and every topic the body
//! addresses, for each API that addresses topics.
//!
//! Bodies are walked here, not decoded with `kafka-protocol`: its array
//! decoder reserves `count` elements before reading one, so a 14-byte
//! Produce frame claiming 2^31 topics makes it ask for ~200 GB and aborts
//! the process. The walker below checks every count against the bytes
//! left (each element takes at least one byte) and allocates only what it
//! has read. Field order and versions follow the Kafka 4.1 schemas, the
//! same ones `kafka-protocol` 0.18 is generated from.
//!
//! An API that may address topics but is not walked here is
//! [`Topics::Unparsed`]: the judge denies it (see
//! `policy_model::l7::kafka`: every topic must be listed, or the request
//! denied).

use std::collections::HashMap;
use std::fmt;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::Decodable;

/// The largest request frame accepted by default: 16 MiB. Kafka's own
/// `socket.request.max.bytes` is 100 MiB, but clients send at most
/// `max.request.size` (1 MiB by default) and a frame is buffered whole
/// before it is judged.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// Stands for "every topic" (a Metadata request with null topics, an
/// OffsetFetch for all of a group's topics). No rule can name it (rule
/// topics are `[a-zA-Z0-9._-]`), so only a rule without a topic allows it.
pub const ALL_TOPICS: &str = "*";

/// A topic ID (UUID) as sent on the wire.
pub type TopicId = [u8; 16];

/// Topic IDs learned from one broker's Metadata responses.
pub type TopicNames = HashMap<TopicId, String>;

/// One topic a request addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRef {
    /// The name as sent, or resolved from the ID; `None` when only an ID
    /// was sent and it is not known (the request is denied).
    pub name: Option<String>,
    /// The topic ID, when the version sends one (zero when only a name
    /// was used).
    pub id: Option<TopicId>,
    /// The partitions the request names for the topic, in order.
    pub partitions: Vec<i32>,
}

/// The topics of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topics {
    /// The API addresses no topic (ApiVersions, Heartbeat, ...).
    None,
    /// The request addresses every topic (null topic list).
    All,
    /// The topics listed, in order (repeats kept).
    Listed(Vec<TopicRef>),
    /// Topics grouped by consumer group (OffsetFetch v8+); a `None` topic
    /// list means all of that group's topics.
    Groups(Vec<(String, Option<Vec<TopicRef>>)>),
    /// Transactions each with topics (AddPartitionsToTxn v4+).
    Transactions(Vec<(String, Vec<TopicRef>)>),
    /// The API may address topics but the proxy does not read its body:
    /// always denied.
    Unparsed,
}

impl Topics {
    /// The names the policy judges: every listed topic, [`ALL_TOPICS`] for
    /// "all"; `Err` with the first unresolved topic ID when a topic has no
    /// name, or when the body is not read.
    pub fn names(&self) -> Result<Vec<&str>, Unnamed> {
        let mut out = Vec::new();
        fn push<'a>(out: &mut Vec<&'a str>, list: &'a [TopicRef]) -> Result<(), Unnamed> {
            for t in list {
                match &t.name {
                    Some(n) => out.push(n.as_str()),
                    None => return Err(Unnamed::Id(t.id.unwrap_or_default())),
                }
            }
            Ok(())
        }
        match self {
            Topics::None => {}
            Topics::All => return Ok(vec![ALL_TOPICS]),
            Topics::Listed(list) => push(&mut out, list)?,
            Topics::Groups(groups) => {
                let mut all = false;
                for (_, topics) in groups {
                    match topics {
                        Some(list) => push(&mut out, list)?,
                        None => all = true,
                    }
                }
                if all {
                    out.push(ALL_TOPICS);
                }
            }
            Topics::Transactions(txns) => {
                for (_, list) in txns {
                    push(&mut out, list)?;
                }
            }
            Topics::Unparsed => return Err(Unnamed::Unparsed),
        }
        Ok(out)
    }
}

/// Why a request's topics cannot all be named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unnamed {
    /// A topic ID no Metadata response of this broker named.
    Id(TopicId),
    /// The proxy does not read this API's body.
    Unparsed,
}

impl fmt::Display for Unnamed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unnamed::Id(id) => write!(f, "topic ID {} is not known for this broker", uuid(id)),
            Unnamed::Unparsed => f.write_str("the proxy does not read this API's topics"),
        }
    }
}

/// A topic ID in the usual 8-4-4-4-12 form.
pub fn uuid(id: &TopicId) -> String {
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// One parsed request frame (without its 4-byte length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaFrame {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
    /// Whether the body uses flexible (compact, tagged) encoding.
    pub flexible: bool,
    pub topics: Topics,
    /// Consumer groups or coordinator keys the request names (for
    /// denials of group APIs).
    pub groups: Vec<String>,
    /// `false` for a Produce with `acks = 0`: the broker sends no
    /// response, and neither does a denial.
    pub expects_response: bool,
}

/// A frame that cannot be read: the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("frame of {0} bytes is shorter than a request header")]
    Short(usize),
    #[error("unknown API key {0}")]
    UnknownApiKey(i16),
    #[error("{api:?} v{version} is outside the versions the proxy reads ({min}..={max})")]
    UnsupportedVersion {
        api: ApiKey,
        version: i16,
        min: i16,
        max: i16,
    },
    #[error("request header: {0}")]
    Header(String),
    #[error("{api:?} v{version} body: {what} at byte {at}")]
    Body {
        api: ApiKey,
        version: i16,
        what: &'static str,
        at: usize,
    },
}

/// Reads one request frame. `names` resolves topic IDs.
pub fn parse_request(frame: &[u8], names: &TopicNames) -> Result<KafkaFrame, ParseError> {
    if frame.len() < 8 {
        return Err(ParseError::Short(frame.len()));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let api_version = i16::from_be_bytes([frame[2], frame[3]]);
    let api_key = ApiKey::try_from(raw_key).map_err(|()| ParseError::UnknownApiKey(raw_key))?;
    let range = api_key.valid_versions();
    let (min, max) = body_versions(api_key).unwrap_or((range.min, range.max));
    // ApiVersions of any version is let through: a broker answers an
    // unknown ApiVersions version with v0 and its supported range.
    if api_key != ApiKey::ApiVersions && (api_version < min || api_version > max) {
        return Err(ParseError::UnsupportedVersion {
            api: api_key,
            version: api_version,
            min,
            max,
        });
    }
    let header_version = if api_key == ApiKey::ApiVersions && api_version > range.max {
        2
    } else {
        api_key.request_header_version(api_version)
    };
    let mut buf = Bytes::copy_from_slice(frame);
    let before = buf.len();
    let header = RequestHeader::decode(&mut buf, header_version)
        .map_err(|e| ParseError::Header(e.to_string()))?;
    let header_len = before - buf.len();
    let flexible = header_version >= 2;
    let body = &frame[header_len..];
    let mut walker = Walker {
        cur: Cursor {
            buf: body,
            pos: 0,
            flexible,
        },
        version: api_version,
        names,
        groups: Vec::new(),
        no_response: false,
    };
    let topics = walker.topics(api_key).map_err(|e| ParseError::Body {
        api: api_key,
        version: api_version,
        what: e.0,
        at: header_len + walker.cur.pos,
    })?;
    Ok(KafkaFrame {
        api_key,
        api_version,
        correlation_id: header.correlation_id,
        client_id: header.client_id.map(|s| s.to_string()),
        flexible,
        topics,
        groups: walker.groups,
        expects_response: !walker.no_response,
    })
}

/// The versions whose bodies the walker reads (the `kafka-protocol` 0.18
/// message ranges, which can also encode the denial). `None`: the body is
/// not read.
fn body_versions(api: ApiKey) -> Option<(i16, i16)> {
    Some(match api {
        ApiKey::Produce => (3, 13),
        ApiKey::Fetch => (4, 18),
        ApiKey::ListOffsets => (1, 10),
        ApiKey::Metadata => (0, 13),
        ApiKey::OffsetCommit => (2, 9),
        ApiKey::OffsetFetch => (1, 9),
        ApiKey::CreateTopics => (2, 7),
        ApiKey::DeleteTopics => (1, 6),
        ApiKey::DeleteRecords => (0, 2),
        ApiKey::OffsetForLeaderEpoch => (2, 4),
        ApiKey::TxnOffsetCommit => (0, 5),
        ApiKey::AddPartitionsToTxn => (0, 5),
        ApiKey::DescribeProducers => (0, 0),
        _ => return None,
    })
}

/// Whether `api` addresses no topic at all, so its body need not be read.
/// Anything not listed here and not walked is [`Topics::Unparsed`].
pub fn is_topicless(api: ApiKey) -> bool {
    matches!(
        api,
        ApiKey::ApiVersions
            | ApiKey::FindCoordinator
            | ApiKey::JoinGroup
            | ApiKey::Heartbeat
            | ApiKey::LeaveGroup
            | ApiKey::SyncGroup
            | ApiKey::DescribeGroups
            | ApiKey::ListGroups
            | ApiKey::SaslHandshake
            | ApiKey::SaslAuthenticate
            | ApiKey::InitProducerId
            | ApiKey::AddOffsetsToTxn
            | ApiKey::EndTxn
            | ApiKey::DeleteGroups
            | ApiKey::DescribeCluster
            | ApiKey::DescribeTransactions
            | ApiKey::ListTransactions
            | ApiKey::GetTelemetrySubscriptions
            | ApiKey::PushTelemetry
    )
}

#[derive(Debug)]
struct Malformed(&'static str);

type R<T> = Result<T, Malformed>;

/// A bounds-checked reader over a body.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    flexible: bool,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> R<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(Malformed(what))?;
        let slice = self.buf.get(self.pos..end).ok_or(Malformed(what))?;
        self.pos = end;
        Ok(slice)
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn skip(&mut self, n: usize, what: &'static str) -> R<()> {
        self.take(n, what).map(|_| ())
    }

    fn i16(&mut self) -> R<i16> {
        let b = self.take(2, "truncated int16")?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> R<i32> {
        let b = self.take(4, "truncated int32")?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn uuid(&mut self) -> R<TopicId> {
        let b = self.take(16, "truncated UUID")?;
        let mut id = [0u8; 16];
        id.copy_from_slice(b);
        Ok(id)
    }

    fn uvarint(&mut self) -> R<u32> {
        let mut value: u32 = 0;
        for i in 0..5 {
            let b = self.take(1, "truncated varint")?[0];
            value |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if i == 4 && b > 0x0f {
                    return Err(Malformed("varint overflows 32 bits"));
                }
                return Ok(value);
            }
        }
        Err(Malformed("varint longer than 5 bytes"))
    }

    /// A string (compact when flexible); `None` when null.
    fn string(&mut self) -> R<Option<&'a str>> {
        let len = if self.flexible {
            match self.uvarint()? {
                0 => return Ok(None),
                n => (n - 1) as usize,
            }
        } else {
            match self.i16()? {
                -1 => return Ok(None),
                n if n < 0 => return Err(Malformed("negative string length")),
                n => n as usize,
            }
        };
        let bytes = self.take(len, "truncated string")?;
        std::str::from_utf8(bytes)
            .map(Some)
            .map_err(|_| Malformed("string is not UTF-8"))
    }

    fn skip_string(&mut self) -> R<()> {
        self.string().map(|_| ())
    }

    /// A byte array (records): compact when flexible.
    fn skip_bytes(&mut self) -> R<()> {
        let len = if self.flexible {
            match self.uvarint()? {
                0 => return Ok(()),
                n => (n - 1) as usize,
            }
        } else {
            match self.i32()? {
                -1 => return Ok(()),
                n if n < 0 => return Err(Malformed("negative bytes length")),
                n => n as usize,
            }
        };
        self.skip(len, "truncated bytes")
    }

    /// An array's element count (compact when flexible); `None` when null.
    /// Every element takes at least one byte, so a count above the bytes
    /// left is malformed: nothing is reserved for it.
    fn array(&mut self) -> R<Option<usize>> {
        let n = if self.flexible {
            match self.uvarint()? {
                0 => return Ok(None),
                n => (n - 1) as usize,
            }
        } else {
            match self.i32()? {
                -1 => return Ok(None),
                n if n < 0 => return Err(Malformed("negative array length")),
                n => n as usize,
            }
        };
        if n > self.remaining() {
            return Err(Malformed("array count exceeds the frame"));
        }
        Ok(Some(n))
    }

    fn i32_array(&mut self) -> R<Vec<i32>> {
        let n = self.array()?.unwrap_or(0);
        (0..n).map(|_| self.i32()).collect()
    }

    /// Tagged fields at the end of a flexible struct.
    fn tagged(&mut self) -> R<()> {
        if !self.flexible {
            return Ok(());
        }
        let n = self.uvarint()?;
        for _ in 0..n {
            self.uvarint()?;
            let size = self.uvarint()? as usize;
            self.skip(size, "truncated tagged field")?;
        }
        Ok(())
    }
}

struct Walker<'a, 'n> {
    cur: Cursor<'a>,
    version: i16,
    names: &'n TopicNames,
    groups: Vec<String>,
    no_response: bool,
}

impl Walker<'_, '_> {
    fn topics(&mut self, api: ApiKey) -> R<Topics> {
        let v = self.version;
        match api {
            ApiKey::Produce => self.produce(),
            ApiKey::Fetch => self.fetch(),
            ApiKey::ListOffsets => {
                self.cur.skip(4, "truncated replica id")?;
                if v >= 2 {
                    self.cur.skip(1, "truncated isolation level")?;
                }
                let topics = self.named_topics(|c| {
                    let p = c.i32()?;
                    let fixed = if v >= 4 { 12 } else { 8 };
                    c.skip(fixed, "truncated partition")?;
                    Ok(p)
                })?;
                Ok(Topics::Listed(topics))
            }
            ApiKey::Metadata => self.metadata(),
            ApiKey::OffsetCommit => {
                let group = self.string_req("group id")?;
                self.groups.push(group);
                self.cur.skip(4, "truncated generation")?;
                self.cur.skip_string()?;
                if v >= 7 {
                    self.cur.skip_string()?;
                }
                if v <= 4 {
                    self.cur.skip(8, "truncated retention")?;
                }
                let topics = self.named_topics(|c| {
                    let p = c.i32()?;
                    c.skip(if v >= 6 { 12 } else { 8 }, "truncated offset")?;
                    c.skip_string()?;
                    Ok(p)
                })?;
                Ok(Topics::Listed(topics))
            }
            ApiKey::OffsetFetch => self.offset_fetch(),
            ApiKey::CreateTopics => {
                let mut topics = Vec::new();
                for _ in 0..self.cur.array()?.unwrap_or(0) {
                    let name = self.string_req("topic name")?;
                    self.cur.skip(6, "truncated topic settings")?;
                    for _ in 0..self.cur.array()?.unwrap_or(0) {
                        self.cur.skip(4, "truncated assignment")?;
                        self.cur.i32_array()?;
                        self.cur.tagged()?;
                    }
                    for _ in 0..self.cur.array()?.unwrap_or(0) {
                        self.cur.skip_string()?;
                        self.cur.skip_string()?;
                        self.cur.tagged()?;
                    }
                    self.cur.tagged()?;
                    topics.push(named(name, Vec::new()));
                }
                Ok(Topics::Listed(topics))
            }
            ApiKey::DeleteTopics => {
                let mut topics = Vec::new();
                if v >= 6 {
                    for _ in 0..self.cur.array()?.unwrap_or(0) {
                        let name = self.cur.string()?.map(str::to_string);
                        let id = self.cur.uuid()?;
                        self.cur.tagged()?;
                        topics.push(self.by_name_or_id(name, id, Vec::new()));
                    }
                } else {
                    for _ in 0..self.cur.array()?.unwrap_or(0) {
                        topics.push(named(self.string_req("topic name")?, Vec::new()));
                    }
                }
                Ok(Topics::Listed(topics))
            }
            ApiKey::DeleteRecords => {
                let topics = self.named_topics(|c| {
                    let p = c.i32()?;
                    c.skip(8, "truncated offset")?;
                    Ok(p)
                })?;
                Ok(Topics::Listed(topics))
            }
            ApiKey::OffsetForLeaderEpoch => {
                if v >= 3 {
                    self.cur.skip(4, "truncated replica id")?;
                }
                let topics = self.named_topics(|c| {
                    let p = c.i32()?;
                    c.skip(8, "truncated epochs")?;
                    Ok(p)
                })?;
                Ok(Topics::Listed(topics))
            }
            ApiKey::TxnOffsetCommit => {
                self.cur.skip_string()?;
                let group = self.string_req("group id")?;
                self.groups.push(group);
                self.cur.skip(10, "truncated producer")?;
                if v >= 3 {
                    self.cur.skip(4, "truncated generation")?;
                    self.cur.skip_string()?;
                    self.cur.skip_string()?;
                }
                let topics = self.named_topics(|c| {
                    let p = c.i32()?;
                    c.skip(if v >= 2 { 12 } else { 8 }, "truncated offset")?;
                    c.skip_string()?;
                    Ok(p)
                })?;
                Ok(Topics::Listed(topics))
            }
            ApiKey::AddPartitionsToTxn => {
                if v >= 4 {
                    let mut txns = Vec::new();
                    for _ in 0..self.cur.array()?.unwrap_or(0) {
                        let id = self.string_req("transactional id")?;
                        self.cur.skip(11, "truncated producer")?;
                        let topics = self.partition_lists()?;
                        self.cur.tagged()?;
                        txns.push((id, topics));
                    }
                    Ok(Topics::Transactions(txns))
                } else {
                    self.cur.skip_string()?;
                    self.cur.skip(10, "truncated producer")?;
                    Ok(Topics::Listed(self.partition_lists()?))
                }
            }
            ApiKey::DescribeProducers => Ok(Topics::Listed(self.partition_lists()?)),
            ApiKey::FindCoordinator => {
                if v >= 4 {
                    self.cur.skip(1, "truncated key type")?;
                    for _ in 0..self.cur.array()?.unwrap_or(0) {
                        let key = self.string_req("coordinator key")?;
                        self.groups.push(key);
                    }
                } else {
                    let key = self.string_req("coordinator key")?;
                    self.groups.push(key);
                }
                Ok(Topics::None)
            }
            api if is_topicless(api) => Ok(Topics::None),
            _ => Ok(Topics::Unparsed),
        }
    }

    fn string_req(&mut self, what: &'static str) -> R<String> {
        match self.cur.string()? {
            Some(s) => Ok(s.to_string()),
            None => Err(Malformed(what)),
        }
    }

    fn by_name_or_id(&self, name: Option<String>, id: TopicId, partitions: Vec<i32>) -> TopicRef {
        let name = match name {
            Some(n) if !n.is_empty() || id == [0; 16] => Some(n),
            _ => self.names.get(&id).cloned(),
        };
        TopicRef {
            name,
            id: Some(id),
            partitions,
        }
    }

    fn by_id(&self, id: TopicId, partitions: Vec<i32>) -> TopicRef {
        TopicRef {
            name: self.names.get(&id).cloned(),
            id: Some(id),
            partitions,
        }
    }

    /// `[name, [partition...], tagged]` with the partition read by `part`
    /// (which reads the partition's fields but not its tagged fields).
    fn named_topics(
        &mut self,
        mut part: impl FnMut(&mut Cursor<'_>) -> R<i32>,
    ) -> R<Vec<TopicRef>> {
        let mut topics = Vec::new();
        for _ in 0..self.cur.array()?.unwrap_or(0) {
            let name = self.string_req("topic name")?;
            let mut partitions = Vec::new();
            for _ in 0..self.cur.array()?.unwrap_or(0) {
                partitions.push(part(&mut self.cur)?);
                self.cur.tagged()?;
            }
            self.cur.tagged()?;
            topics.push(named(name, partitions));
        }
        Ok(topics)
    }

    /// `[name, [int32], tagged]`.
    fn partition_lists(&mut self) -> R<Vec<TopicRef>> {
        let mut topics = Vec::new();
        for _ in 0..self.cur.array()?.unwrap_or(0) {
            let name = self.string_req("topic name")?;
            let partitions = self.cur.i32_array()?;
            self.cur.tagged()?;
            topics.push(named(name, partitions));
        }
        Ok(topics)
    }

    fn produce(&mut self) -> R<Topics> {
        let v = self.version;
        self.cur.skip_string()?;
        self.no_response = self.cur.i16()? == 0;
        self.cur.skip(4, "truncated timeout")?;
        let mut topics = Vec::new();
        for _ in 0..self.cur.array()?.unwrap_or(0) {
            let key = self.topic_key(v >= 13)?;
            let mut partitions = Vec::new();
            for _ in 0..self.cur.array()?.unwrap_or(0) {
                partitions.push(self.cur.i32()?);
                self.cur.skip_bytes()?;
                self.cur.tagged()?;
            }
            self.cur.tagged()?;
            topics.push(self.topic_ref(key, partitions));
        }
        Ok(Topics::Listed(topics))
    }

    fn fetch(&mut self) -> R<Topics> {
        let v = self.version;
        if v <= 14 {
            self.cur.skip(4, "truncated replica id")?;
        }
        self.cur.skip(13, "truncated fetch limits")?;
        if v >= 7 {
            self.cur.skip(8, "truncated session")?;
        }
        let mut topics = Vec::new();
        for _ in 0..self.cur.array()?.unwrap_or(0) {
            let key = self.topic_key(v >= 13)?;
            let mut partitions = Vec::new();
            for _ in 0..self.cur.array()?.unwrap_or(0) {
                partitions.push(self.cur.i32()?);
                let mut fixed = 8 + 4;
                if v >= 9 {
                    fixed += 4;
                }
                if v >= 12 {
                    fixed += 4;
                }
                if v >= 5 {
                    fixed += 8;
                }
                self.cur.skip(fixed, "truncated fetch partition")?;
                self.cur.tagged()?;
            }
            self.cur.tagged()?;
            topics.push(self.topic_ref(key, partitions));
        }
        // Forgotten topics leave the fetch session: they read nothing and
        // are not judged. They are still walked so the frame is checked.
        if v >= 7 {
            for _ in 0..self.cur.array()?.unwrap_or(0) {
                self.topic_key(v >= 13)?;
                self.cur.i32_array()?;
                self.cur.tagged()?;
            }
        }
        Ok(Topics::Listed(topics))
    }

    fn metadata(&mut self) -> R<Topics> {
        let v = self.version;
        let Some(n) = self.cur.array()? else {
            return Ok(Topics::All);
        };
        // v0: an empty list means every topic.
        if n == 0 && v == 0 {
            return Ok(Topics::All);
        }
        let mut topics = Vec::new();
        for _ in 0..n {
            let id = if v >= 10 { self.cur.uuid()? } else { [0; 16] };
            let name = self.cur.string()?.map(str::to_string);
            self.cur.tagged()?;
            if v < 10 && name.is_none() {
                return Err(Malformed("null topic name"));
            }
            topics.push(self.by_name_or_id(name, id, Vec::new()));
        }
        Ok(Topics::Listed(topics))
    }

    fn offset_fetch(&mut self) -> R<Topics> {
        let v = self.version;
        if v <= 7 {
            let group = self.string_req("group id")?;
            self.groups.push(group);
            let Some(n) = self.cur.array()? else {
                return Ok(Topics::All);
            };
            let mut topics = Vec::new();
            for _ in 0..n {
                let name = self.string_req("topic name")?;
                let partitions = self.cur.i32_array()?;
                self.cur.tagged()?;
                topics.push(named(name, partitions));
            }
            return Ok(Topics::Listed(topics));
        }
        let mut groups = Vec::new();
        for _ in 0..self.cur.array()?.unwrap_or(0) {
            let group = self.string_req("group id")?;
            if v >= 9 {
                self.cur.skip_string()?;
                self.cur.skip(4, "truncated member epoch")?;
            }
            let topics = match self.cur.array()? {
                None => None,
                Some(n) => {
                    let mut topics = Vec::new();
                    for _ in 0..n {
                        let name = self.string_req("topic name")?;
                        let partitions = self.cur.i32_array()?;
                        self.cur.tagged()?;
                        topics.push(named(name, partitions));
                    }
                    Some(topics)
                }
            };
            self.cur.tagged()?;
            self.groups.push(group.clone());
            groups.push((group, topics));
        }
        Ok(Topics::Groups(groups))
    }

    /// A topic's name, or its ID when `by_id`.
    fn topic_key(&mut self, by_id: bool) -> R<TopicKey> {
        if by_id {
            Ok(TopicKey::Id(self.cur.uuid()?))
        } else {
            Ok(TopicKey::Name(self.string_req("topic name")?))
        }
    }

    fn topic_ref(&self, key: TopicKey, partitions: Vec<i32>) -> TopicRef {
        match key {
            TopicKey::Name(n) => named(n, partitions),
            TopicKey::Id(id) => self.by_id(id, partitions),
        }
    }
}

enum TopicKey {
    Name(String),
    Id(TopicId),
}

fn named(name: String, partitions: Vec<i32>) -> TopicRef {
    TopicRef {
        name: Some(name),
        id: None,
        partitions,
    }
}

/// Most topic IDs remembered per broker; later ones are not learned
/// (requests naming them are denied).
pub const MAX_LEARNED_TOPICS: usize = 100_000;

/// Learns topic ID -> name from a Metadata response frame (without its
/// length) of version `version`, as the broker sent it. Returns how many
/// were learned; a response that cannot be read teaches nothing (it is
/// still relayed unchanged: the client judges it).
pub fn learn_topic_ids(frame: &[u8], version: i16, names: &mut TopicNames) -> usize {
    let flexible = ApiKey::Metadata.response_header_version(version) >= 1;
    let mut cur = Cursor {
        buf: frame,
        pos: 0,
        flexible,
    };
    let mut learned = Vec::new();
    if read_metadata_response(&mut cur, version, &mut learned).is_err() {
        return 0;
    }
    let mut n = 0;
    for (id, name) in learned {
        if names.len() >= MAX_LEARNED_TOPICS && !names.contains_key(&id) {
            break;
        }
        names.insert(id, name);
        n += 1;
    }
    n
}

fn read_metadata_response(cur: &mut Cursor<'_>, v: i16, out: &mut Vec<(TopicId, String)>) -> R<()> {
    cur.skip(4, "truncated correlation id")?;
    cur.tagged()?;
    if v >= 3 {
        cur.skip(4, "truncated throttle")?;
    }
    for _ in 0..cur.array()?.unwrap_or(0) {
        cur.skip(4, "truncated node id")?;
        cur.skip_string()?;
        cur.skip(4, "truncated port")?;
        if v >= 1 {
            cur.skip_string()?;
        }
        cur.tagged()?;
    }
    if v >= 2 {
        cur.skip_string()?;
    }
    if v >= 1 {
        cur.skip(4, "truncated controller id")?;
    }
    for _ in 0..cur.array()?.unwrap_or(0) {
        cur.skip(2, "truncated error code")?;
        let name = cur.string()?.map(str::to_string);
        let id = if v >= 10 { cur.uuid()? } else { [0; 16] };
        if v >= 1 {
            cur.skip(1, "truncated is_internal")?;
        }
        for _ in 0..cur.array()?.unwrap_or(0) {
            cur.skip(10, "truncated partition")?;
            if v >= 7 {
                cur.skip(4, "truncated leader epoch")?;
            }
            cur.i32_array()?;
            cur.i32_array()?;
            if v >= 5 {
                cur.i32_array()?;
            }
            cur.tagged()?;
        }
        if v >= 8 {
            cur.skip(4, "truncated authorized operations")?;
        }
        cur.tagged()?;
        if let Some(name) = name
            && id != [0; 16]
            && !name.is_empty()
        {
            out.push((id, name));
        }
    }
    Ok(())
}

/// Keeps only the topics `keep` allows in a Metadata response frame
/// (without its length) of version `version`, for a request that asked
/// for every topic: the topic array is rebuilt from the entries kept, the
/// rest of the frame is copied unchanged. Returns the new frame and how
/// many topics were removed. A topic without a name is removed (it cannot
/// be judged). `Err` when the frame cannot be walked: the caller must not
/// relay it.
pub fn filter_metadata_response(
    frame: &[u8],
    version: i16,
    keep: &mut dyn FnMut(&str) -> bool,
) -> Result<(Vec<u8>, usize), &'static str> {
    let flexible = ApiKey::Metadata.response_header_version(version) >= 1;
    let mut cur = Cursor {
        buf: frame,
        pos: 0,
        flexible,
    };
    let walked = walk_metadata_topics(&mut cur, version).map_err(|e| e.0)?;
    let kept: Vec<&(usize, usize, Option<String>)> = walked
        .entries
        .iter()
        .filter(|(_, _, name)| name.as_deref().is_some_and(&mut *keep))
        .collect();
    let removed = walked.entries.len() - kept.len();
    let mut out = Vec::with_capacity(frame.len());
    out.extend_from_slice(&frame[..walked.count_at]);
    if flexible {
        let mut n = kept.len() as u32 + 1;
        while n >= 0x80 {
            out.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    } else {
        out.extend_from_slice(&(kept.len() as i32).to_be_bytes());
    }
    for (start, end, _) in kept {
        out.extend_from_slice(&frame[*start..*end]);
    }
    out.extend_from_slice(&frame[walked.rest_at..]);
    Ok((out, removed))
}

/// Where the topic array of a Metadata response is.
struct MetadataTopics {
    /// Offset of the array's count.
    count_at: usize,
    /// Each entry's byte range and name.
    entries: Vec<(usize, usize, Option<String>)>,
    /// Offset of the first byte after the array.
    rest_at: usize,
}

fn walk_metadata_topics(cur: &mut Cursor<'_>, v: i16) -> R<MetadataTopics> {
    cur.skip(4, "truncated correlation id")?;
    cur.tagged()?;
    if v >= 3 {
        cur.skip(4, "truncated throttle")?;
    }
    for _ in 0..cur.array()?.unwrap_or(0) {
        cur.skip(4, "truncated node id")?;
        cur.skip_string()?;
        cur.skip(4, "truncated port")?;
        if v >= 1 {
            cur.skip_string()?;
        }
        cur.tagged()?;
    }
    if v >= 2 {
        cur.skip_string()?;
    }
    if v >= 1 {
        cur.skip(4, "truncated controller id")?;
    }
    let count_at = cur.pos;
    let mut entries = Vec::new();
    for _ in 0..cur.array()?.unwrap_or(0) {
        let start = cur.pos;
        cur.skip(2, "truncated error code")?;
        let name = cur.string()?.map(str::to_string);
        if v >= 10 {
            cur.skip(16, "truncated topic id")?;
        }
        if v >= 1 {
            cur.skip(1, "truncated is_internal")?;
        }
        for _ in 0..cur.array()?.unwrap_or(0) {
            cur.skip(10, "truncated partition")?;
            if v >= 7 {
                cur.skip(4, "truncated leader epoch")?;
            }
            cur.i32_array()?;
            cur.i32_array()?;
            if v >= 5 {
                cur.i32_array()?;
            }
            cur.tagged()?;
        }
        if v >= 8 {
            cur.skip(4, "truncated authorized operations")?;
        }
        cur.tagged()?;
        entries.push((start, cur.pos, name));
    }
    let rest_at = cur.pos;
    // The rest is copied as it is, but must be a complete response too.
    if (8..=10).contains(&v) {
        cur.skip(4, "truncated cluster authorized operations")?;
    }
    if v >= 13 {
        cur.skip(2, "truncated error code")?;
    }
    cur.tagged()?;
    if cur.remaining() != 0 {
        return Err(Malformed("bytes after the response"));
    }
    Ok(MetadataTopics {
        count_at,
        entries,
        rest_at,
    })
}

/// The highest version of `api` the proxy reads (and can deny): the walked
/// range for APIs whose bodies are read, else `kafka-protocol`'s range.
pub fn max_readable_version(api: ApiKey) -> i16 {
    body_versions(api)
        .map(|(_, max)| max)
        .unwrap_or_else(|| api.valid_versions().max)
}

/// Lowers, in place, every max version of an ApiVersions response frame
/// (without its length, as the broker sent it for a request of version
/// `version`) to what the proxy reads, so clients never pick a version
/// the proxy would have to close the connection on. API keys the proxy
/// does not know are left as they are (requests with them close the
/// connection). A response with an error is left unchanged (a broker
/// answering a version it does not know sends v0 with
/// UNSUPPORTED_VERSION; the client retries). Returns how many ranges were
/// lowered; `Err` when the frame cannot be walked.
pub fn cap_api_versions(frame: &mut [u8], version: i16) -> Result<usize, &'static str> {
    let mut cur = Cursor {
        buf: frame,
        pos: 0,
        flexible: version >= 3,
    };
    // The ApiVersions response header is always v0: the correlation ID.
    cur.skip(4, "truncated correlation id").map_err(|e| e.0)?;
    let error = cur.i16().map_err(|e| e.0)?;
    if error != 0 {
        return Ok(0);
    }
    let mut at = Vec::new();
    let n = cur.array().map_err(|e| e.0)?.unwrap_or(0);
    for _ in 0..n {
        let key = cur.i16().map_err(|e| e.0)?;
        cur.skip(2, "truncated min version").map_err(|e| e.0)?;
        let max_at = cur.pos;
        let max = cur.i16().map_err(|e| e.0)?;
        cur.tagged().map_err(|e| e.0)?;
        if let Ok(api) = ApiKey::try_from(key) {
            let ours = max_readable_version(api);
            if max > ours {
                at.push((max_at, ours));
            }
        }
    }
    for (pos, ours) in &at {
        frame[*pos..*pos + 2].copy_from_slice(&ours.to_be_bytes());
    }
    Ok(at.len())
}
