//! The bounded ring of recent flows (`--hubble-max-flows`) and the
//! sequence numbers followers read it by.
//!
//! The writer (the flow pump) never waits on a reader: it replaces the
//! oldest flow and bumps a `watch` value. A follower remembers the sequence
//! number it wants next; when the writer has lapped it, the flows in
//! between are gone and the follower is told how many (a `LostEvent`).

use super::flow::Flow;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Hubble's default capacity.
pub const DEFAULT_MAX_FLOWS: usize = 4095;

/// One stored flow and its sequence number (1, 2, ... since the start);
/// or, with `kernel_lost` > 0, the news that the datapath lost that many
/// flow events (its ring buffer was full) before the next flow.
#[derive(Clone)]
pub struct Entry {
    pub seq: u64,
    pub flow: Arc<Flow>,
    pub kernel_lost: u64,
}

struct Inner {
    flows: VecDeque<Entry>,
    /// Sequence number of the next flow written.
    next: u64,
}

/// The ring, shared by the pump (writer) and the server (readers).
pub struct Ring {
    capacity: usize,
    inner: Mutex<Inner>,
    /// The next sequence number: readers wait on its changes.
    written: tokio::sync::watch::Sender<u64>,
    started: std::time::Instant,
}

/// What a reader got: the flows from the sequence number it asked for,
/// and how many in front of them were overwritten before it came.
pub struct Read {
    pub lost: u64,
    pub flows: Vec<Entry>,
}

impl Ring {
    pub fn new(capacity: usize) -> Arc<Ring> {
        let (written, _) = tokio::sync::watch::channel(1);
        Arc::new(Ring {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner {
                flows: VecDeque::with_capacity(capacity.clamp(1, 1 << 16)),
                next: 1,
            }),
            written,
            started: std::time::Instant::now(),
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn uptime_ns(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Stores a flow, dropping the oldest when full.
    pub fn push(&self, flow: Flow) {
        self.push_entry(flow, 0);
    }

    /// Records that the datapath lost `n` flow events: followers are told.
    pub fn push_kernel_lost(&self, n: u64) {
        self.push_entry(Flow::default(), n);
    }

    fn push_entry(&self, flow: Flow, kernel_lost: u64) {
        let next = {
            let Ok(mut g) = self.inner.lock() else { return };
            if g.flows.len() == self.capacity {
                g.flows.pop_front();
            }
            let seq = g.next;
            g.flows.push_back(Entry {
                seq,
                flow: Arc::new(flow),
                kernel_lost,
            });
            g.next += 1;
            g.next
        };
        self.written.send_replace(next);
    }

    /// (flows held, flows seen since the start).
    pub fn counts(&self) -> (u64, u64) {
        self.inner
            .lock()
            .map(|g| (g.flows.len() as u64, g.next - 1))
            .unwrap_or_default()
    }

    /// Every flow held, oldest first.
    pub fn snapshot(&self) -> Vec<Entry> {
        self.snapshot_and_next().0
    }

    /// Every flow held, and the sequence number of the next one: a
    /// follower goes on from there without a gap or a repeat.
    pub fn snapshot_and_next(&self) -> (Vec<Entry>, u64) {
        self.inner
            .lock()
            .map(|g| (g.flows.iter().cloned().collect(), g.next))
            .unwrap_or_default()
    }

    /// The flows from sequence number `from` on (at most `max`).
    pub fn read_from(&self, from: u64, max: usize) -> Read {
        let Ok(g) = self.inner.lock() else {
            return Read {
                lost: 0,
                flows: vec![],
            };
        };
        let oldest = g.flows.front().map(|e| e.seq).unwrap_or(g.next);
        let lost = oldest.saturating_sub(from);
        let start = usize::try_from(from.saturating_sub(oldest)).unwrap_or(usize::MAX);
        let flows = g.flows.iter().skip(start).take(max).cloned().collect();
        Read { lost, flows }
    }

    /// A receiver woken at every write.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.written.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(n: u32) -> Flow {
        Flow {
            proxy_port: n,
            ..Flow::default()
        }
    }

    #[test]
    fn keeps_the_newest_and_counts_what_a_slow_reader_lost() {
        let ring = Ring::new(3);
        for n in 1..=5 {
            ring.push(flow(n));
        }
        assert_eq!(ring.counts(), (3, 5));
        let held: Vec<u32> = ring.snapshot().iter().map(|e| e.flow.proxy_port).collect();
        assert_eq!(held, [3, 4, 5]);
        // A reader that wanted flow 2 lost 2 (flow 3 is the oldest left).
        let r = ring.read_from(2, 10);
        assert_eq!(r.lost, 1);
        assert_eq!(r.flows.len(), 3);
        let r = ring.read_from(5, 10);
        assert_eq!((r.lost, r.flows.len()), (0, 1));
        let r = ring.read_from(6, 10);
        assert_eq!((r.lost, r.flows.len()), (0, 0));
        assert_eq!(ring.snapshot_and_next().1, 6);
    }
}
