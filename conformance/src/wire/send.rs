//! Sending wire probes from inside the lab's namespaces, many at once, and
//! reading what each saw as an [`Outcome`].

use super::plan::{DNS_PORT, WireCall, WireProbe};
use super::{kafka, tls};
use anyhow::Result;
use policy_model::Protocol;
use portcullis_lab::probe::{self, Observed, Outcome};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Sends one probe and reports what came back.
pub fn send(w: &WireProbe, timeout: Duration) -> Result<Outcome> {
    for (name, server) in &w.resolve_first {
        let v6 = w.dst.is_ipv6();
        let _ = probe::resolve(&w.src_ns, *server, DNS_PORT, name, v6, timeout)?;
    }
    let tcp_dns = w.protocol == Protocol::Tcp;
    match &w.call {
        WireCall::Kafka(k) => kafka::probe(&w.src_ns, w.src_ip, w.dst, w.port, k, timeout),
        WireCall::Tls(t) => {
            let t_out = timeout.max(Duration::from_millis(1500));
            tls::probe(&w.src_ns, w.src_ip, w.dst, w.port, t, t_out)
        }
        WireCall::Dns(name) => {
            probe::dns(&w.src_ns, w.src_ip, w.dst, w.port, name, tcp_dns, timeout)
        }
        _ if w.port == DNS_PORT && matches!(w.protocol, Protocol::Tcp | Protocol::Udp) => {
            // L4 probe of the DNS port: any DNS answer means connected.
            let r = probe::dns(
                &w.src_ns,
                w.src_ip,
                w.dst,
                w.port,
                "probe.lab.",
                tcp_dns,
                timeout,
            )?;
            Ok(match r {
                Outcome::Dns(_) => Outcome::Connected,
                other => other,
            })
        }
        WireCall::Http(h) => probe::http(
            &w.src_ns,
            w.src_ip,
            w.dst,
            w.port,
            &probe::HttpProbe {
                method: &h.method,
                path: &h.path,
                host: h.host.as_deref(),
                headers: &h.headers,
                h2: h.h2,
            },
            timeout.max(Duration::from_millis(1500)),
        ),
        WireCall::L4 => {
            let r = match w.protocol {
                Protocol::Udp => probe::udp_from(&w.src_ns, w.src_ip, w.dst, w.port, timeout)?,
                Protocol::Icmp | Protocol::Icmpv6 => {
                    probe::ping(&w.src_ns, w.src_ip, w.dst, timeout)?
                }
                p if p.is_extended() => {
                    probe::raw(&w.src_ns, w.src_ip, w.dst, p.number(), timeout)?
                }
                _ => probe::tcp_from(&w.src_ns, w.src_ip, w.dst, w.port, timeout)?,
            };
            Ok(match r {
                Observed::Connected => Outcome::Connected,
                Observed::Blocked => Outcome::Blocked,
            })
        }
    }
}

/// Sends `wire` with `parallel` probes in flight (a thread each, each
/// taking the next probe as soon as its last one is done: a denied probe
/// waiting out its timeout holds up no other); the outcomes in the same
/// order.
pub fn send_all(wire: &[&WireProbe], timeout: Duration, parallel: usize) -> Result<Vec<Outcome>> {
    let next = AtomicUsize::new(0);
    let workers = parallel.max(1).min(wire.len());
    let done: Vec<Vec<(usize, Result<Outcome>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(w) = wire.get(i) else {
                            return mine;
                        };
                        mine.push((i, send(w, timeout)));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec![(usize::MAX, Err(anyhow::anyhow!("probe panicked")))])
            })
            .collect()
    });
    let mut out: Vec<Option<Outcome>> = vec![None; wire.len()];
    for (i, r) in done.into_iter().flatten() {
        let outcome = r?;
        if let Some(slot) = out.get_mut(i) {
            *slot = Some(outcome);
        }
    }
    out.into_iter()
        .enumerate()
        .map(|(i, o)| {
            o.ok_or_else(|| anyhow::anyhow!("probe {i} was not sent (a sender panicked)"))
        })
        .collect()
}
