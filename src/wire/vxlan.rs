//! The VXLAN header (RFC 7348), the UDP payload of an overlay packet.
//!
//! ```text
//!  0               1               2               3
//!  |R|R|R|R|I|R|R|R|            Reserved (24 bits)                |
//!  |                VNI (24 bits)                 | Reserved (8)  |
//! ```

/// IANA's port for VXLAN.
pub const DEFAULT_PORT: u16 = 4789;
/// Length of the VXLAN header.
pub const HEADER_LEN: usize = 8;
/// The I flag: the VNI is valid. RFC 7348 requires it.
pub const FLAG_VNI: u8 = 0x08;
/// The largest VNI (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// Shorter than the VXLAN header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Truncated;

/// A VXLAN packet of at least [`HEADER_LEN`] bytes.
#[derive(Clone, Copy, Debug)]
pub struct VxlanPacket<'a> {
    b: &'a [u8; HEADER_LEN],
    rest: &'a [u8],
}

impl<'a> VxlanPacket<'a> {
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, Truncated> {
        let (b, rest) = bytes.split_first_chunk::<HEADER_LEN>().ok_or(Truncated)?;
        Ok(VxlanPacket { b, rest })
    }
    /// The first 8 bits; the 24 after them are reserved (Linux's GBP/GPE extensions use them).
    pub fn flags(&self) -> u8 {
        self.b[0]
    }
    pub fn vni(&self) -> u32 {
        u32::from_be_bytes([0, self.b[4], self.b[5], self.b[6]])
    }
    /// The inner Ethernet frame.
    pub fn payload(&self) -> &'a [u8] {
        self.rest
    }
}

/// The header for `vni` (the low 24 bits are used; reserved fields zero).
pub fn header(vni: u32) -> [u8; HEADER_LEN] {
    let v = (vni & MAX_VNI).to_be_bytes();
    [FLAG_VNI, 0, 0, 0, v[1], v[2], v[3], 0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_through_the_view() {
        let mut p = header(0x12_3456).to_vec();
        p.extend_from_slice(b"inner");
        let v = VxlanPacket::new_checked(&p).unwrap();
        assert_eq!(
            (v.flags(), v.vni(), v.payload()),
            (FLAG_VNI, 0x12_3456, &b"inner"[..])
        );
        assert_eq!(header(MAX_VNI + 5)[4..7], [0, 0, 4], "only 24 bits");
    }

    #[test]
    fn truncated() {
        let h = header(1);
        for len in 0..HEADER_LEN {
            assert_eq!(VxlanPacket::new_checked(&h[..len]).err(), Some(Truncated));
        }
        assert_eq!(
            VxlanPacket::new_checked(&h).unwrap().payload(),
            &[] as &[u8]
        );
    }
}
