//! UDP headers. [`UdpDatagram::new_checked`] guarantees the 8-byte header; the payload comes
//! from [`UdpDatagram::payload_range`], which checks the length field.

pub const HEADER_LEN: usize = 8;
/// Offset of the checksum field.
pub const CHECKSUM_OFFSET: usize = 6;

/// Which check a UDP header failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpError {
    /// Shorter than the header.
    Truncated,
    /// The length field is below 8 or beyond the buffer.
    Length,
}

/// A view of a UDP datagram over `T` (`&[u8]`, or `&mut [u8]` for edits in place).
#[derive(Clone, Copy, Debug)]
pub struct UdpDatagram<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> UdpDatagram<T> {
    pub fn new_checked(buf: T) -> Result<Self, UdpError> {
        if buf.as_ref().len() < HEADER_LEN {
            return Err(UdpError::Truncated);
        }
        Ok(UdpDatagram { buf })
    }

    fn fixed(&self) -> &[u8; HEADER_LEN] {
        match self.buf.as_ref().first_chunk::<HEADER_LEN>() {
            Some(h) => h,
            None => unreachable!("UdpDatagram shorter than its header"),
        }
    }

    pub fn src_port(&self) -> u16 {
        let b = self.fixed();
        u16::from_be_bytes([b[0], b[1]])
    }
    pub fn dst_port(&self) -> u16 {
        let b = self.fixed();
        u16::from_be_bytes([b[2], b[3]])
    }
    /// The length field: header and payload.
    pub fn len_field(&self) -> usize {
        let b = self.fixed();
        usize::from(u16::from_be_bytes([b[4], b[5]]))
    }
    pub fn checksum(&self) -> u16 {
        let b = self.fixed();
        u16::from_be_bytes([b[6], b[7]])
    }
    /// The payload's range in the buffer, when the length field covers the header and fits.
    pub fn payload_range(&self) -> Result<(usize, usize), UdpError> {
        let len = self.len_field();
        if len < HEADER_LEN || len > self.buf.as_ref().len() {
            return Err(UdpError::Length);
        }
        Ok((HEADER_LEN, len))
    }
    pub fn payload(&self) -> Result<&[u8], UdpError> {
        let (start, end) = self.payload_range()?;
        Ok(&self.buf.as_ref()[start..end])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpDatagram<T> {
    pub fn set_len_field(&mut self, len: u16) {
        self.buf.as_mut()[4..6].copy_from_slice(&len.to_be_bytes());
    }
    pub fn set_checksum(&mut self, c: u16) {
        self.buf.as_mut()[6..8].copy_from_slice(&c.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{UdpHeader, UdpHeaderSlice};

    fn datagram(payload: &[u8]) -> Vec<u8> {
        let h = UdpHeader {
            source_port: 5353,
            destination_port: 53,
            length: (HEADER_LEN + payload.len()) as u16,
            checksum: 0x1234,
        };
        let mut out = h.to_bytes().to_vec();
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn fields_match_etherparse() {
        let d = datagram(b"query");
        let v = UdpDatagram::new_checked(&d[..]).unwrap();
        let e = UdpHeaderSlice::from_slice(&d).unwrap();
        assert_eq!(
            (v.src_port(), v.dst_port()),
            (e.source_port(), e.destination_port())
        );
        assert_eq!(
            (v.len_field(), v.checksum()),
            (usize::from(e.length()), e.checksum())
        );
        assert_eq!(v.payload().unwrap(), b"query");
    }

    #[test]
    fn truncated_and_bad_lengths() {
        let d = datagram(b"q");
        for len in 0..HEADER_LEN {
            assert_eq!(
                UdpDatagram::new_checked(&d[..len]).err(),
                Some(UdpError::Truncated)
            );
        }
        for bad in [0u16, 7, 10] {
            let mut b = d.clone();
            b[4..6].copy_from_slice(&bad.to_be_bytes());
            let v = UdpDatagram::new_checked(&b[..]).unwrap();
            assert_eq!(v.payload().err(), Some(UdpError::Length), "length {bad}");
        }
        // Padding after the datagram is not payload.
        let mut padded = d.clone();
        padded.extend_from_slice(&[0; 4]);
        let v = UdpDatagram::new_checked(&padded[..]).unwrap();
        assert_eq!(v.payload_range(), Ok((8, 9)));
    }

    #[test]
    fn edits_in_place() {
        let mut d = datagram(b"abc");
        let mut v = UdpDatagram::new_checked(&mut d[..]).unwrap();
        v.set_len_field(9);
        v.set_checksum(0xffff);
        assert_eq!(&d[4..8], &[0, 9, 0xff, 0xff]);
    }
}
