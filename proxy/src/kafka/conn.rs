//! One redirected Kafka connection: a reader that parses, judges and
//! forwards (or queues a denial for) each request in order, and a writer
//! that emits responses in the same order: the upstream's response for a
//! forwarded request, the proxy's own for a denied one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::deny::{self, denial};
use super::judge::{KafkaJudgement, KafkaRules};
use super::metrics::{KafkaLimit, KafkaMetrics, KafkaVerdictLabel};
use super::parse::{self, KafkaFrame, TopicNames};
use super::{KafkaConfig, UPSTREAM_IDLE};
use crate::access_log::AccessRecord;
use crate::budget::{self, BudgetGrant, SourceBudget, SourceKey};
use crate::conn::{self, AcceptLog, ConnAddrs, FixedDestination};
use crate::policy::PolicyHandle;
use crate::upstream;

/// What every connection of one proxy shares.
#[derive(Debug)]
pub(crate) struct KafkaShared {
    pub policy: PolicyHandle,
    /// Connections held, per source and in total.
    pub connections: Arc<SourceBudget>,
    /// Bytes of request frames buffered, per source and in total.
    pub buffered: Arc<SourceBudget>,
    pub config: KafkaConfig,
    pub metrics: Arc<KafkaMetrics>,
    /// Topic IDs learned from each broker's Metadata responses, by the
    /// broker's address (see [`KafkaShared::topic_names`]).
    pub topic_ids: Mutex<HashMap<SocketAddr, Arc<Mutex<TopicNames>>>>,
}

/// Most brokers whose topic IDs are remembered; connections to further
/// brokers learn on their own connection only.
const MAX_BROKERS: usize = 4096;

impl KafkaShared {
    /// The topic ID -> name map of the broker at `broker` (the connection's
    /// original destination), shared by every connection to it: a client
    /// learns IDs on its bootstrap connection and fetches by ID on another.
    /// Only that broker's own responses teach it, so one broker cannot
    /// rename another's topics.
    fn topic_names(&self, broker: SocketAddr) -> Arc<Mutex<TopicNames>> {
        let mut map = self
            .topic_ids
            .lock()
            .expect("topic ID map lock is never poisoned");
        if let Some(names) = map.get(&broker) {
            return names.clone();
        }
        let names = Arc::new(Mutex::new(TopicNames::new()));
        if map.len() < MAX_BROKERS {
            map.insert(broker, names.clone());
        }
        names
    }
}

/// What the Kafka accept loop says when it cannot take a connection.
const ACCEPT_LOG: AcceptLog = AcceptLog {
    accept_failed: "Kafka accept failed",
    no_original_dst: "no original destination for a Kafka connection",
};

/// Accepts on `listener` until shutdown. Whose connection it is comes from
/// what the datapath knows of the source address; it is refused before
/// anything is read when that source (or the proxy) holds its share.
pub(crate) fn accept_loop(
    listener: TcpListener,
    shared: Arc<KafkaShared>,
    shutdown: watch::Receiver<bool>,
    fixed: Option<FixedDestination>,
) -> JoinHandle<()> {
    conn::accept_loop(
        listener,
        shutdown,
        fixed,
        ACCEPT_LOG,
        move |stream, addrs, _| {
            let key = shared.policy.snapshot().budget_key(addrs.client.ip());
            let Some(permit) = budget::admit(&shared.connections, key, |why, key| {
                let limit = KafkaLimit::connections(why);
                shared.metrics.limit_refusal(limit);
                tracing::debug!(src = %addrs.client, source = %key, ?limit,
                    "Kafka connection refused by a limit");
            }) else {
                return;
            };
            let _ = stream.set_nodelay(true);
            let shared = shared.clone();
            tokio::spawn(async move {
                let _permit = permit;
                serve(stream, addrs, key, shared).await
            });
        },
    )
}

/// What the access log says about one request.
#[derive(Debug)]
struct LogEntry {
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    client_id: String,
    topics: String,
    /// The verdict of a forwarded request, logged once it is answered:
    /// `Allowed` or `Audit` (`Denied` for a denied Metadata request
    /// forwarded as a request for no topic, see `metadata_denial`).
    verdict: KafkaVerdictLabel,
    reason: String,
    start: Instant,
    /// For a forwarded Metadata request: the rules and the request, to
    /// remove from the response the topics the rules may not list. For a
    /// request for every topic that is its filter; for one naming topics
    /// it keeps a broker that answers more than was asked (tansu lists
    /// every topic for a request naming none) from telling the client of
    /// topics an all-topics request would not show it.
    list_filter: Option<Box<(KafkaRules, KafkaFrame)>>,
    /// For a denied Metadata request forwarded as a request for no topic
    /// ([`deny::brokers_only_request`]): the request, whose denial is
    /// built from the broker's answer.
    metadata_denial: Option<Box<KafkaFrame>>,
}

/// One response to emit, in request order.
#[derive(Debug)]
enum Slot {
    /// Forwarded: relay the upstream's next response. The first forwarded
    /// slot hands the writer the upstream's read half.
    Forwarded {
        log: LogEntry,
        upstream: Option<OwnedReadHalf>,
        /// `false` for an acks=0 Produce: nothing to relay (the slot only
        /// hands over the upstream).
        respond: bool,
    },
    /// Denied: write these bytes.
    Denied { log: LogEntry, response: Bytes },
}

async fn serve(client: TcpStream, addrs: ConnAddrs, key: SourceKey, shared: Arc<KafkaShared>) {
    let _guard = shared.metrics.connection();
    let (client_read, client_write) = client.into_split();
    let names = shared.topic_names(addrs.original_dst);
    let (tx, rx) = mpsc::channel(shared.config.max_in_flight.max(1));
    let writer = tokio::spawn(write_responses(
        rx,
        client_write,
        addrs,
        shared.clone(),
        names.clone(),
    ));
    read_requests(client_read, tx, addrs, key, &shared, &names).await;
    let _ = writer.await;
}

/// Reads, parses and judges requests until the client closes, a frame
/// cannot be read, or the upstream fails.
async fn read_requests(
    client: OwnedReadHalf,
    tx: mpsc::Sender<Slot>,
    addrs: ConnAddrs,
    key: SourceKey,
    shared: &KafkaShared,
    names: &Mutex<TopicNames>,
) {
    let mut client = BufReader::new(client);
    let mut upstream: Option<OwnedWriteHalf> = None;
    let mut first = true;
    loop {
        let read = read_frame(&mut client, shared, key, first).await;
        first = false;
        // The grant keeps the frame's bytes counted until it is dropped at
        // the end of this iteration (after it is forwarded or denied).
        let (frame, _grant) = match read {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(FrameError::Limit(limit, why)) => {
                tracing::warn!(src = %addrs.client, dst = %addrs.original_dst, ?limit,
                    error = %why, "Kafka connection closed by a limit");
                shared.metrics.limit_refusal(limit);
                break;
            }
            Err(FrameError::Invalid(why)) => {
                tracing::warn!(src = %addrs.client, dst = %addrs.original_dst, error = %why,
                    "Kafka request frame refused; closing the connection");
                shared
                    .metrics
                    .request("unknown", KafkaVerdictLabel::Invalid, None);
                break;
            }
        };
        let start = Instant::now();
        let parsed = {
            let names = names.lock().expect("topic names lock is never poisoned");
            parse::parse_request(&frame, &names)
        };
        let parsed = match parsed {
            Ok(p) => p,
            Err(why) => {
                let api = i16::from_be_bytes([frame[0], frame.get(1).copied().unwrap_or(0)]);
                let name = policy_model::l7::kafka::api_key_name(api).unwrap_or("unknown");
                AccessRecord::KafkaUnreadable {
                    addrs,
                    api_key: name,
                    reason: &why.to_string(),
                }
                .emit();
                shared
                    .metrics
                    .request(name, KafkaVerdictLabel::Invalid, None);
                break;
            }
        };
        let rules = shared
            .policy
            .snapshot()
            .kafka_rules(addrs.client, addrs.original_dst);
        let judgement = rules.judge(&parsed);
        let (verdict, reason) = judgement.logged();
        let mut log = LogEntry {
            api_key: parsed.api_key,
            api_version: parsed.api_version,
            correlation_id: parsed.correlation_id,
            client_id: parsed.client_id.clone().unwrap_or_default(),
            topics: topic_list(&parsed),
            verdict,
            reason,
            start,
            list_filter: None,
            metadata_denial: None,
        };
        if judgement.forwards() && parsed.api_key == ApiKey::Metadata {
            log.list_filter = Some(Box::new((rules.clone(), parsed.clone())));
        }
        // A denied Metadata request is answered from the broker's answer
        // to a request for no topic, so the denial carries the cluster.
        let substitute = match &judgement {
            KafkaJudgement::Denied(_) => deny::brokers_only_request(&frame, &parsed),
            KafkaJudgement::Allowed { .. } | KafkaJudgement::Audit { .. } => None,
        };
        let forward: Option<&[u8]> = match (&judgement, &substitute) {
            (KafkaJudgement::Allowed { .. } | KafkaJudgement::Audit { .. }, _) => Some(&frame),
            (KafkaJudgement::Denied(_), Some(sub)) => Some(&sub[4..]),
            (KafkaJudgement::Denied(_), None) => None,
        };
        if let Some(bytes) = forward {
            let denied = !judgement.forwards();
            if denied {
                log.metadata_denial = Some(Box::new(parsed.clone()));
            }
            let handoff = match send_upstream(&mut upstream, shared, &addrs, bytes).await {
                Ok(h) => h,
                Err(e) => {
                    access_log(&addrs, &log, "upstream_error", Some(&e));
                    shared.metrics.request(
                        api_name(log.api_key),
                        KafkaVerdictLabel::UpstreamError,
                        None,
                    );
                    break;
                }
            };
            if !parsed.expects_response {
                access_log(&addrs, &log, log.verdict.log_text(), None);
                shared
                    .metrics
                    .request(api_name(log.api_key), log.verdict, None);
                if let Some(r) = handoff {
                    // Nothing to relay yet, but the writer needs the
                    // upstream's read half for later responses.
                    let slot = Slot::Forwarded {
                        log,
                        upstream: Some(r),
                        respond: false,
                    };
                    if tx.send(slot).await.is_err() {
                        break;
                    }
                }
                continue;
            }
            let slot = Slot::Forwarded {
                log,
                upstream: handoff,
                respond: true,
            };
            if tx.send(slot).await.is_err() {
                break;
            }
            continue;
        }
        if !parsed.expects_response {
            access_log(&addrs, &log, "denied", None);
            shared
                .metrics
                .request(api_name(log.api_key), KafkaVerdictLabel::Denied, None);
            continue;
        }
        let response = match denial(&parsed) {
            Ok(r) => r,
            Err(e) => {
                access_log(&addrs, &log, "denied", Some(&e.to_string()));
                shared
                    .metrics
                    .request(api_name(log.api_key), KafkaVerdictLabel::Invalid, None);
                break;
            }
        };
        if tx.send(Slot::Denied { log, response }).await.is_err() {
            break;
        }
    }
    // Dropping `tx` lets the writer finish the queued responses and close.
    drop(tx);
    if let Some(mut up) = upstream {
        let _ = up.shutdown().await;
    }
}

/// Sends one request frame (`frame`, without its length) upstream,
/// connecting first when the connection has none yet; a fresh
/// connection's read half is returned, for the writer.
async fn send_upstream(
    upstream: &mut Option<OwnedWriteHalf>,
    shared: &KafkaShared,
    addrs: &ConnAddrs,
    frame: &[u8],
) -> Result<Option<OwnedReadHalf>, String> {
    let mut handoff = None;
    if upstream.is_none() {
        let policy = shared.policy.snapshot();
        let stream = upstream::connect(
            &shared.config.upstream,
            &policy,
            addrs.client,
            addrs.upstream,
        )
        .await
        .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let (r, w) = stream.into_split();
        handoff = Some(r);
        *upstream = Some(w);
    }
    let up = upstream.as_mut().expect("connected just above");
    let len = (frame.len() as u32).to_be_bytes();
    up.write_all(&len).await.map_err(|e| e.to_string())?;
    up.write_all(frame).await.map_err(|e| e.to_string())?;
    Ok(handoff)
}

/// Writes the response of every slot in order.
async fn write_responses(
    mut rx: mpsc::Receiver<Slot>,
    mut client: OwnedWriteHalf,
    addrs: ConnAddrs,
    shared: Arc<KafkaShared>,
    names: Arc<Mutex<TopicNames>>,
) {
    let mut upstream: Option<BufReader<OwnedReadHalf>> = None;
    while let Some(slot) = rx.recv().await {
        match slot {
            Slot::Denied { log, response } => {
                if client.write_all(&response).await.is_err() {
                    break;
                }
                let seconds = log.start.elapsed().as_secs_f64();
                access_log(&addrs, &log, "denied", None);
                shared.metrics.request(
                    api_name(log.api_key),
                    KafkaVerdictLabel::Denied,
                    Some(seconds),
                );
            }
            Slot::Forwarded {
                log,
                upstream: new,
                respond,
            } => {
                if let Some(r) = new {
                    upstream = Some(BufReader::new(r));
                }
                if !respond {
                    continue;
                }
                let Some(up) = upstream.as_mut() else {
                    break;
                };
                let relayed = tokio::time::timeout(
                    UPSTREAM_IDLE,
                    relay_response(up, &mut client, &log, &shared.config, &names),
                )
                .await
                .unwrap_or_else(|_| Err("the upstream did not answer in time".to_string()));
                match relayed {
                    Ok(()) => {
                        let seconds = log.start.elapsed().as_secs_f64();
                        access_log(&addrs, &log, log.verdict.log_text(), None);
                        shared
                            .metrics
                            .request(api_name(log.api_key), log.verdict, Some(seconds));
                    }
                    Err(why) => {
                        access_log(&addrs, &log, "upstream_error", Some(&why));
                        shared.metrics.request(
                            api_name(log.api_key),
                            KafkaVerdictLabel::UpstreamError,
                            None,
                        );
                        break;
                    }
                }
            }
        }
    }
    let _ = client.shutdown().await;
}

/// Relays the upstream's next response frame to the client, checking its
/// correlation ID, and learns topic IDs from Metadata responses.
async fn relay_response<R, W>(
    up: &mut R,
    client: &mut W,
    log: &LogEntry,
    config: &KafkaConfig,
    names: &Mutex<TopicNames>,
) -> Result<(), String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut len = [0u8; 4];
    up.read_exact(&mut len)
        .await
        .map_err(|e| format!("reading the upstream response: {e}"))?;
    let n = i32::from_be_bytes(len);
    if n < 4 || n as usize > config.max_response_frame {
        return Err(format!("upstream response frame of {n} bytes"));
    }
    let n = n as usize;
    let mut corr = [0u8; 4];
    up.read_exact(&mut corr)
        .await
        .map_err(|e| format!("reading the upstream response: {e}"))?;
    let corr = i32::from_be_bytes(corr);
    if corr != log.correlation_id {
        return Err(format!(
            "upstream answered correlation ID {corr}, expected {}",
            log.correlation_id
        ));
    }
    let write = |e: std::io::Error| format!("writing to the client: {e}");
    if log.api_key == ApiKey::Metadata || log.api_key == ApiKey::ApiVersions {
        let mut body = vec![0u8; n];
        body[..4].copy_from_slice(&corr.to_be_bytes());
        up.read_exact(&mut body[4..])
            .await
            .map_err(|e| format!("reading the upstream response: {e}"))?;
        let body = rewrite_response(body, log, names)?;
        client
            .write_all(&(body.len() as u32).to_be_bytes())
            .await
            .map_err(write)?;
        client.write_all(&body).await.map_err(write)?;
        return Ok(());
    }
    client.write_all(&len).await.map_err(write)?;
    client.write_all(&corr.to_be_bytes()).await.map_err(write)?;
    let mut rest = up.take((n - 4) as u64);
    let copied = tokio::io::copy(&mut rest, client)
        .await
        .map_err(|e| format!("relaying the response: {e}"))?;
    if copied != (n - 4) as u64 {
        return Err("the upstream closed mid-response".to_string());
    }
    Ok(())
}

/// The response the client gets for a Metadata or ApiVersions request:
/// topic IDs learned from Metadata, topics the rules may not list removed
/// from any allowed Metadata, ApiVersions ranges capped to what the
/// proxy reads. `Err` (the connection closes) when the frame cannot be
/// walked for a rewrite it needs: an unfiltered list is never relayed.
fn rewrite_response(
    mut body: Vec<u8>,
    log: &LogEntry,
    names: &Mutex<TopicNames>,
) -> Result<Vec<u8>, String> {
    if log.api_key == ApiKey::ApiVersions {
        parse::cap_api_versions(&mut body, log.api_version)
            .map_err(|why| format!("ApiVersions response cannot be read: {why}"))?;
        return Ok(body);
    }
    {
        let mut names = names.lock().expect("topic names lock is never poisoned");
        parse::learn_topic_ids(&body, log.api_version, &mut names);
    }
    if let Some(request) = &log.metadata_denial {
        return deny::metadata_denial_from(&body, request)
            .map_err(|e| format!("Metadata denial cannot be built from the broker's answer: {e}"));
    }
    let Some(filter) = &log.list_filter else {
        return Ok(body);
    };
    let (rules, request) = filter.as_ref();
    let (filtered, removed) =
        parse::filter_metadata_response(&body, log.api_version, &mut |topic| {
            rules.allows_listing(request, topic)
        })
        .map_err(|why| format!("Metadata response cannot be filtered: {why}"))?;
    if removed > 0 {
        tracing::debug!(
            removed,
            "topics the rules do not allow removed from a Metadata response"
        );
    }
    Ok(filtered)
}

/// Why a request frame was not read.
#[derive(Debug)]
enum FrameError {
    /// A limit was reached: the connection closes and the limit is counted.
    Limit(KafkaLimit, String),
    /// Not a frame (negative or short length, I/O error).
    Invalid(String),
}

/// Reads one length-prefixed request frame within the connection's
/// limits: the length must come within the idle timeout (the first
/// request's within `first_request_timeout`), must not exceed
/// `max_request_frame`, must fit the source's and the proxy's buffer
/// budget (taken before a byte of the frame is buffered, held by the
/// returned grant) and the whole frame must arrive within
/// `frame_timeout`. `Ok(None)` on a clean end of stream.
async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    shared: &KafkaShared,
    key: SourceKey,
    first: bool,
) -> Result<Option<(BytesMut, BudgetGrant)>, FrameError> {
    let config = &shared.config;
    let (wait, on_timeout) = if first {
        (
            config.first_request_timeout,
            KafkaLimit::FirstRequestTimeout,
        )
    } else {
        (config.idle_timeout, KafkaLimit::IdleTimeout)
    };
    let started = tokio::time::Instant::now();
    let mut len = [0u8; 4];
    match tokio::time::timeout(wait, r.read_exact(&mut len)).await {
        Err(_) => {
            return Err(FrameError::Limit(
                on_timeout,
                format!("no request for {wait:?}"),
            ));
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Ok(Err(e)) => return Err(FrameError::Invalid(format!("reading a frame length: {e}"))),
    }
    let n = i32::from_be_bytes(len);
    if n < 0 {
        return Err(FrameError::Invalid(format!("frame of {n} bytes")));
    }
    let max = config.max_request_frame;
    if n as usize > max {
        return Err(FrameError::Limit(
            KafkaLimit::FrameTooLarge,
            format!("frame of {n} bytes (limit {max})"),
        ));
    }
    if n < 8 {
        return Err(FrameError::Invalid(format!(
            "frame of {n} bytes is shorter than a request header"
        )));
    }
    let grant = shared.buffered.try_take(key, n as u64).map_err(|why| {
        FrameError::Limit(
            KafkaLimit::buffer(why),
            format!("no buffer room for a frame of {n} bytes"),
        )
    })?;
    // The first request's whole frame is bounded by the first-request
    // timeout too, so a client cannot hold a connection by trickling it.
    let limit = if first {
        (config
            .first_request_timeout
            .saturating_sub(started.elapsed()))
        .min(config.frame_timeout)
    } else {
        config.frame_timeout
    };
    let mut frame = BytesMut::zeroed(n as usize);
    match tokio::time::timeout(limit, r.read_exact(&mut frame)).await {
        Err(_) => Err(FrameError::Limit(
            if first {
                KafkaLimit::FirstRequestTimeout
            } else {
                KafkaLimit::FrameTimeout
            },
            format!("a frame of {n} bytes did not arrive within {limit:?}"),
        )),
        Ok(Err(e)) => Err(FrameError::Invalid(format!(
            "reading a frame of {n} bytes: {e}"
        ))),
        Ok(Ok(_)) => Ok(Some((frame, grant))),
    }
}

fn api_name(api: ApiKey) -> &'static str {
    policy_model::l7::kafka::api_key_name(api as i16).unwrap_or("unknown")
}

fn topic_list(frame: &KafkaFrame) -> String {
    match frame.topics.names() {
        Ok(names) => names.join(","),
        Err(why) => why.to_string(),
    }
}

fn access_log(addrs: &ConnAddrs, log: &LogEntry, verdict: &str, error: Option<&str>) {
    AccessRecord::Kafka {
        addrs: *addrs,
        api_key: api_name(log.api_key),
        api_version: log.api_version,
        correlation_id: log.correlation_id,
        client_id: &log.client_id,
        topics: &log.topics,
        verdict,
        latency: log.start.elapsed(),
        reason: &log.reason,
        error: error.unwrap_or(""),
    }
    .emit();
}
