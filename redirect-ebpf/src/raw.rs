//! The crate's only `unsafe` code, kept small:
//!
//! * `aya::Pod` for the map types (the kernel copies them as bytes);
//! * reading a [`FlowEvent`] out of a ring-buffer record;
//! * registering the ring buffer's fd with tokio.

use std::io;
use std::mem::size_of;

use aya::maps::{MapData, RingBuf};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::abi::*;

// SAFETY: each type below is `#[repr(C)]`, `Copy`, built only from integers
// and byte arrays with every padding byte spelled out as a field (the size
// asserts above prove there is no implicit padding), so every bit pattern is
// a valid value and the kernel may read and write them as plain bytes.
unsafe impl aya::Pod for IpcacheKey {}
// SAFETY: as above.
unsafe impl aya::Pod for IpcacheLpmData {}
// SAFETY: as above.
unsafe impl aya::Pod for IpcacheValue {}
// SAFETY: as above.
unsafe impl aya::Pod for EndpointKey {}
// SAFETY: as above.
unsafe impl aya::Pod for EndpointInfo {}
// SAFETY: as above.
unsafe impl aya::Pod for PolicyKey {}
// SAFETY: as above.
unsafe impl aya::Pod for PolicyLpmData {}
// SAFETY: as above.
unsafe impl aya::Pod for PolicyValue {}
// SAFETY: as above.
unsafe impl aya::Pod for CtKey {}
// SAFETY: as above.
unsafe impl aya::Pod for CtEntry {}
// SAFETY: as above.
unsafe impl aya::Pod for FlowEvent {}
// SAFETY: as above.
unsafe impl aya::Pod for DatapathConfig {}

/// Reads a [`FlowEvent`] from a ring-buffer record; `None` when the record
/// is not exactly one event (a kernel/loader mismatch).
pub(crate) fn flow_event_from_bytes(bytes: &[u8]) -> Option<FlowEvent> {
    if bytes.len() != size_of::<FlowEvent>() {
        return None;
    }
    // SAFETY: the length is checked above, `read_unaligned` has no
    // alignment requirement, and every bit pattern is a valid `FlowEvent`
    // (see the `Pod` impl).
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<FlowEvent>()) })
}

/// Registers the ring buffer with the tokio reactor for readability.
pub(crate) fn register_ring(ring: RingBuf<MapData>) -> io::Result<AsyncFd<RingBuf<MapData>>> {
    // SAFETY: the `RingBuf` owns its map fd (an `OwnedFd` inside `MapData`)
    // and is moved into the `AsyncFd`, so the fd stays open, refers to the
    // same map and is returned unchanged by `as_raw_fd` for the whole
    // lifetime of the `AsyncFd`.
    unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }.map_err(io::Error::from)
}
