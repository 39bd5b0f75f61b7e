//! Reading flow events from the `events` ring buffer.

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use crate::abi::FlowEvent;
use crate::error::DatapathError;
use crate::raw::{flow_event_from_bytes, register_ring};

/// Non-blocking reader of flow events.
pub struct FlowEvents {
    ring: RingBuf<MapData>,
}

impl FlowEvents {
    pub(crate) fn new(ring: RingBuf<MapData>) -> Self {
        Self { ring }
    }

    /// The next queued event, `None` when the ring is empty. Records of the
    /// wrong size (a loader/program mismatch) are logged and skipped.
    pub fn try_next(&mut self) -> Option<FlowEvent> {
        loop {
            let item = self.ring.next()?;
            match flow_event_from_bytes(&item) {
                Some(event) => return Some(event),
                None => tracing::warn!(len = item.len(), "skipping flow event of unexpected size"),
            }
        }
    }

    /// Turns this reader into an async one. Must be called inside a tokio
    /// runtime with I/O enabled.
    pub fn into_async(self) -> Result<AsyncFlowEvents, DatapathError> {
        let fd = register_ring(self.ring).map_err(DatapathError::EventsPoll)?;
        Ok(AsyncFlowEvents { fd })
    }
}

/// Async reader of flow events (tokio).
pub struct AsyncFlowEvents {
    fd: AsyncFd<RingBuf<MapData>>,
}

impl AsyncFlowEvents {
    /// Waits for the next flow event.
    pub async fn next(&mut self) -> Result<FlowEvent, DatapathError> {
        loop {
            let mut guard = self
                .fd
                .readable_mut()
                .await
                .map_err(DatapathError::EventsPoll)?;
            while let Some(item) = guard.get_inner_mut().next() {
                match flow_event_from_bytes(&item) {
                    Some(event) => return Ok(event),
                    None => {
                        tracing::warn!(len = item.len(), "skipping flow event of unexpected size")
                    }
                }
            }
            guard.clear_ready();
        }
    }
}
