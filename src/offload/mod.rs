//! Software offloads: what the kernel's TAP would do for us, done in userspace for the places where
//! a frame leaves the offload world (a port without offloads, the gateway's IP stack, a VXLAN
//! tunnel, a packet capture). A TAP with `IFF_VNET_HDR` hands us TCP/UDP frames whose checksum is
//! only a pseudo-header sum (`NEEDS_CSUM`) and 64 KiB GSO super-frames; those consumers need
//! wire-size frames with complete checksums.
//!
//! Nothing here allocates per frame: checksums work in place, and [`Segmenter`] owns one scratch
//! buffer, allocated once, that every segment is built in.

pub mod checksum;
pub mod segment;

use thiserror::Error;

pub use checksum::complete_checksum;
pub use segment::{MAX_SEGMENT_LEN, Segmenter};

/// Why a frame could not be completed or segmented. Small and `Copy` so the datapath can count
/// drops by reason without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum OffloadError {
    /// Shorter than a virtio-net header plus an Ethernet header.
    #[error("frame shorter than the virtio-net and Ethernet headers")]
    Runt,
    /// A header (named) does not fit in what is left of the frame.
    #[error("truncated {0} header")]
    Truncated(&'static str),
    /// `csum_start`/`csum_offset` point outside the frame, or not at the L4 checksum of a GSO frame.
    #[error(
        "checksum start {start} offset {offset} is outside the {len}-byte frame or not at its L4 checksum"
    )]
    BadChecksumOffsets { start: u16, offset: u16, len: usize },
    /// A GSO type the virtio spec does not define.
    #[error("unknown GSO type {0:#04x}")]
    UnknownGsoType(u8),
    /// GSO requested with a segment size of zero.
    #[error("GSO frame with gso_size 0")]
    ZeroGsoSize,
    /// A length field disagrees with the frame or with another header (named).
    #[error("inconsistent length: {0}")]
    BadLength(&'static str),
    /// A header field has a value no valid packet can have (named).
    #[error("malformed header: {0}")]
    Malformed(&'static str),
    /// Valid, but not something we segment (UFO, IPv6 extension headers, stacked VLANs, ...).
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// A segment, or a frame passed through, would not fit in a 64 KiB IP packet.
    #[error("frame of {0} bytes exceeds the largest segment")]
    TooLong(usize),
}
