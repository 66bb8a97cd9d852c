//! EtherType values the data plane looks at.

pub const IPV4: u16 = 0x0800;
pub const ARP: u16 = 0x0806;
/// 802.1Q customer tag.
pub const VLAN: u16 = 0x8100;
/// 802.1ad service tag (QinQ's outer tag).
pub const QINQ: u16 = 0x88a8;
pub const IPV6: u16 = 0x86dd;
/// IEEE 802 local experimental EtherType 1: what `tapnet trace` probes carry without addresses.
pub const EXPERIMENTAL: u16 = 0x88b5;

/// An EtherType that announces a VLAN tag.
pub fn is_vlan_tag(ethertype: u16) -> bool {
    ethertype == VLAN || ethertype == QINQ
}
