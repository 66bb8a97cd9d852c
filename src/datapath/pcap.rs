//! The libpcap file format (LINKTYPE_ETHERNET), written by the daemon and read by `tapnet capture`.

pub const GLOBAL_HEADER_LEN: usize = 24;
pub const RECORD_HEADER_LEN: usize = 16;
const MAGIC_MICROSECONDS: u32 = 0xa1b2_c3d4;
const LINKTYPE_ETHERNET: u32 = 1;

pub fn global_header(snaplen: u32) -> [u8; GLOBAL_HEADER_LEN] {
    let mut h = [0u8; GLOBAL_HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC_MICROSECONDS.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    // thiszone and sigfigs stay zero.
    h[16..20].copy_from_slice(&snaplen.to_le_bytes());
    h[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    h
}

/// Header of one captured frame: when, how much was kept, how long it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub ts_sec: u32,
    pub ts_usec: u32,
    pub incl_len: u32,
    pub orig_len: u32,
}

impl RecordHeader {
    pub fn to_bytes(self) -> [u8; RECORD_HEADER_LEN] {
        let mut h = [0u8; RECORD_HEADER_LEN];
        h[0..4].copy_from_slice(&self.ts_sec.to_le_bytes());
        h[4..8].copy_from_slice(&self.ts_usec.to_le_bytes());
        h[8..12].copy_from_slice(&self.incl_len.to_le_bytes());
        h[12..16].copy_from_slice(&self.orig_len.to_le_bytes());
        h
    }

    pub fn parse(b: &[u8; RECORD_HEADER_LEN]) -> Self {
        let le = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        RecordHeader {
            ts_sec: le(0),
            ts_usec: le(4),
            incl_len: le(8),
            orig_len: le(12),
        }
    }
}

/// Check a global header as written by `global_header`; returns the snaplen.
pub fn parse_global_header(b: &[u8; GLOBAL_HEADER_LEN]) -> Option<u32> {
    let le = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (le(0) == MAGIC_MICROSECONDS && le(20) == LINKTYPE_ETHERNET).then(|| le(16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        assert_eq!(parse_global_header(&global_header(1514)), Some(1514));
        let r = RecordHeader {
            ts_sec: 1_700_000_000,
            ts_usec: 999_999,
            incl_len: 60,
            orig_len: 1514,
        };
        assert_eq!(RecordHeader::parse(&r.to_bytes()), r);
        let mut bad = global_header(100);
        bad[0] = 0;
        assert_eq!(parse_global_header(&bad), None);
    }
}
