//! TCP headers. [`TcpSegment::new_checked`] guarantees the fixed 20 bytes; the options come
//! from [`TcpSegment::checked_header_len`], which checks the data offset.

/// The fixed header, without options.
pub const MIN_HEADER_LEN: usize = 20;
/// Offset of the checksum field.
pub const CHECKSUM_OFFSET: usize = 16;
pub const FLAG_FIN: u8 = 0x01;
pub const FLAG_SYN: u8 = 0x02;
pub const FLAG_RST: u8 = 0x04;
pub const FLAG_PSH: u8 = 0x08;
pub const FLAG_ACK: u8 = 0x10;
pub const FLAG_CWR: u8 = 0x80;
const OPTION_END: u8 = 0;
const OPTION_NOP: u8 = 1;
pub const OPTION_MSS: u8 = 2;

/// Which check a TCP header failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpError {
    /// Shorter than the fixed header.
    Truncated,
    /// Data offset below 5.
    DataOffset,
    /// The options run past the end of the segment.
    OptionsTruncated,
}

/// A view of a TCP segment over `T` (`&[u8]`, or `&mut [u8]` for edits in place).
#[derive(Clone, Copy, Debug)]
pub struct TcpSegment<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> TcpSegment<T> {
    pub fn new_checked(buf: T) -> Result<Self, TcpError> {
        if buf.as_ref().len() < MIN_HEADER_LEN {
            return Err(TcpError::Truncated);
        }
        Ok(TcpSegment { buf })
    }

    fn fixed(&self) -> &[u8; MIN_HEADER_LEN] {
        match self.buf.as_ref().first_chunk::<MIN_HEADER_LEN>() {
            Some(h) => h,
            None => unreachable!("TcpSegment shorter than its fixed header"),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }
    pub fn src_port(&self) -> u16 {
        let b = self.fixed();
        u16::from_be_bytes([b[0], b[1]])
    }
    pub fn dst_port(&self) -> u16 {
        let b = self.fixed();
        u16::from_be_bytes([b[2], b[3]])
    }
    pub fn seq(&self) -> u32 {
        let b = self.fixed();
        u32::from_be_bytes([b[4], b[5], b[6], b[7]])
    }
    pub fn ack(&self) -> u32 {
        let b = self.fixed();
        u32::from_be_bytes([b[8], b[9], b[10], b[11]])
    }
    /// Data offset in bytes, as the header says (not checked).
    pub fn header_len(&self) -> usize {
        usize::from(self.fixed()[12] >> 4) * 4
    }
    /// The flags byte: CWR ECE URG ACK PSH RST SYN FIN.
    pub fn flags(&self) -> u8 {
        self.fixed()[13]
    }
    /// SYN without ACK: a connection attempt.
    pub fn is_syn_only(&self) -> bool {
        self.flags() & (FLAG_SYN | FLAG_ACK) == FLAG_SYN
    }
    pub fn checksum(&self) -> u16 {
        let b = self.fixed();
        u16::from_be_bytes([b[16], b[17]])
    }

    /// The data offset, when it is at least 5 and the options fit the segment.
    pub fn checked_header_len(&self) -> Result<usize, TcpError> {
        let doff = self.header_len();
        if doff < MIN_HEADER_LEN {
            return Err(TcpError::DataOffset);
        }
        if doff > self.buf.as_ref().len() {
            return Err(TcpError::OptionsTruncated);
        }
        Ok(doff)
    }
    pub fn options(&self) -> Result<&[u8], TcpError> {
        let doff = self.checked_header_len()?;
        Ok(&self.buf.as_ref()[MIN_HEADER_LEN..doff])
    }
    pub fn payload(&self) -> Result<&[u8], TcpError> {
        let doff = self.checked_header_len()?;
        Ok(&self.buf.as_ref()[doff..])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpSegment<T> {
    fn fixed_mut(&mut self) -> &mut [u8; MIN_HEADER_LEN] {
        match self.buf.as_mut().first_chunk_mut::<MIN_HEADER_LEN>() {
            Some(h) => h,
            None => unreachable!("TcpSegment shorter than its fixed header"),
        }
    }
    pub fn set_seq(&mut self, seq: u32) {
        self.fixed_mut()[4..8].copy_from_slice(&seq.to_be_bytes());
    }
    pub fn set_flags(&mut self, flags: u8) {
        self.fixed_mut()[13] = flags;
    }
    pub fn set_checksum(&mut self, c: u16) {
        self.fixed_mut()[16..18].copy_from_slice(&c.to_be_bytes());
    }

    /// Rewrite the MSS option of a SYN in place; whether there was one to rewrite. Stops at the
    /// end-of-options or at a malformed option (length below 2 or past the header), as the
    /// kernel's option parser does.
    pub fn set_syn_mss(&mut self, mss: u16) -> bool {
        if self.flags() & FLAG_SYN == 0 {
            return false;
        }
        let Ok(doff) = self.checked_header_len() else {
            return false;
        };
        let options = &mut self.buf.as_mut()[MIN_HEADER_LEN..doff];
        let mut at = 0;
        while at < options.len() {
            match options[at] {
                OPTION_END => return false,
                OPTION_NOP => at += 1,
                kind => {
                    let Some(&len) = options.get(at + 1) else {
                        return false;
                    };
                    let len = usize::from(len);
                    if len < 2 || at + len > options.len() {
                        return false;
                    }
                    if kind == OPTION_MSS && len == 4 {
                        options[at + 2..at + 4].copy_from_slice(&mss.to_be_bytes());
                        return true;
                    }
                    at += len;
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{TcpHeader, TcpHeaderSlice, TcpOptionElement};

    fn segment(syn: bool, options: &[TcpOptionElement], payload: &[u8]) -> Vec<u8> {
        let mut h = TcpHeader::new(40000, 80, 0x0102_0304, 65535);
        h.syn = syn;
        h.ack = !syn;
        h.acknowledgment_number = 9;
        h.set_options(options).unwrap();
        let mut out = h.to_bytes().to_vec();
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn fields_match_etherparse() {
        let s = segment(true, &[TcpOptionElement::MaximumSegmentSize(1460)], b"data");
        let v = TcpSegment::new_checked(&s[..]).unwrap();
        let e = TcpHeaderSlice::from_slice(&s).unwrap();
        assert_eq!(
            (v.src_port(), v.dst_port()),
            (e.source_port(), e.destination_port())
        );
        assert_eq!(
            (v.seq(), v.ack()),
            (e.sequence_number(), e.acknowledgment_number())
        );
        assert_eq!(v.header_len(), usize::from(e.data_offset()) * 4);
        assert_eq!(v.checksum(), e.checksum());
        assert!(v.is_syn_only());
        assert_eq!(v.options().unwrap(), e.options());
        assert_eq!(v.payload().unwrap(), b"data");
    }

    #[test]
    fn truncated_and_bad_offsets() {
        let s = segment(false, &[const { TcpOptionElement::Noop }; 4], b"");
        for len in 0..MIN_HEADER_LEN {
            assert_eq!(
                TcpSegment::new_checked(&s[..len]).err(),
                Some(TcpError::Truncated)
            );
        }
        let v = TcpSegment::new_checked(&s[..22]).unwrap();
        assert_eq!(v.checked_header_len(), Err(TcpError::OptionsTruncated));
        let mut bad = s.clone();
        bad[12] = 0x40;
        let v = TcpSegment::new_checked(&bad[..]).unwrap();
        assert_eq!(v.options().err(), Some(TcpError::DataOffset));
        assert!(TcpHeaderSlice::from_slice(&bad).is_err());
    }

    #[test]
    fn mss_is_rewritten_in_syns_only() {
        let opts = [
            TcpOptionElement::Noop,
            TcpOptionElement::WindowScale(7),
            TcpOptionElement::MaximumSegmentSize(1460),
        ];
        let mut s = segment(true, &opts, b"");
        let len = s.len();
        assert!(
            TcpSegment::new_checked(&mut s[..])
                .unwrap()
                .set_syn_mss(65495)
        );
        assert_eq!(s.len(), len);
        let e = TcpHeaderSlice::from_slice(&s).unwrap();
        let got: Vec<_> = e.options_iterator().flatten().collect();
        assert_eq!(got[2], TcpOptionElement::MaximumSegmentSize(65495));
        let mut ack = segment(false, &opts, b"");
        let before = ack.clone();
        assert!(
            !TcpSegment::new_checked(&mut ack[..])
                .unwrap()
                .set_syn_mss(1)
        );
        assert_eq!(ack, before);
        // A zero-length option ends the walk untouched.
        let mut s = segment(true, &opts, b"");
        s[MIN_HEADER_LEN + 2] = 0;
        let before = s.clone();
        assert!(!TcpSegment::new_checked(&mut s[..]).unwrap().set_syn_mss(1));
        assert_eq!(s, before);
    }

    #[test]
    fn edits_in_place() {
        let mut s = segment(false, &[], b"x");
        let mut v = TcpSegment::new_checked(&mut s[..]).unwrap();
        v.set_seq(7);
        v.set_flags(FLAG_ACK | FLAG_PSH);
        v.set_checksum(0xabcd);
        let e = TcpHeaderSlice::from_slice(&s).unwrap();
        assert_eq!(e.sequence_number(), 7);
        assert!(e.ack() && e.psh() && !e.syn());
        assert_eq!(e.checksum(), 0xabcd);
    }
}
