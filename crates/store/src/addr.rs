//! Peer addresses and their encoding into slot words.
//!
//! A slot's first word (`meta`) has the same low half for both families:
//!
//! ```text
//! bit  0      FROZEN   set by a migration; the slot is read-only from then on
//! bit  1      SEEDER   left == 0 at the last announce
//! bit  2      REMOVED  keyed tombstone: the key bits stay, the peer is gone
//! bits 3..16  STAMP    (now_secs >> 3) mod 2^13 of the last announce
//! bits 16..32 PORT     never 0 for a stored peer
//! bits 32..64 IPv4: the address | IPv6: state 2 bits (1 reserved, 2 published) + 30-bit tag
//! ```
//!
//! An IPv4 slot is that one word. An IPv6 slot is three: meta, address high and low 64 bits;
//! the address words are written once, before the meta word is published with Release.
//! `meta == 0` is EMPTY (no real peer has port 0).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

pub(crate) const FROZEN: u64 = 1;
pub(crate) const SEEDER: u64 = 1 << 1;
pub(crate) const REMOVED: u64 = 1 << 2;
pub(crate) const STAMP_SHIFT: u32 = 3;
pub(crate) const STAMP_BITS: u32 = 13;
pub(crate) const STAMP_MASK: u64 = (1 << STAMP_BITS) - 1;
/// Identity of a peer inside the meta word: port and address (v4) or port, state and tag (v6).
pub(crate) const KEY_MASK: u64 = !0xFFFF;
const V6_STATE_SHIFT: u32 = 32;
const V6_RESERVED: u64 = 1 << V6_STATE_SHIFT;
const V6_PUBLISHED: u64 = 2 << V6_STATE_SHIFT;
const V6_STATE_MASK: u64 = 3 << V6_STATE_SHIFT;

/// An address family. IPv4 and IPv6 swarms are kept apart: a torrent announced over both is
/// two swarms (a peer list must hold one family only). Same name as fjord-protocol's, which
/// the store does not depend on.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum IpFamily {
    /// IPv4 peers (one 8-byte word each).
    V4,
    /// IPv6 peers (three words each).
    V6,
}

impl IpFamily {
    /// Number of `AtomicU64` words per slot.
    #[inline]
    pub(crate) const fn words(self) -> usize {
        match self {
            IpFamily::V4 => 1,
            IpFamily::V6 => 3,
        }
    }
}

#[doc(hidden)]
/// A peer as the table code sees it: its hash, its meta key bits and (v6) its address words.
#[derive(Clone, Copy, Debug)]
pub struct PeerKey {
    pub(crate) hash: u64,
    pub(crate) key: u64,
    pub(crate) addr: [u64; 2],
}

#[inline]
pub(crate) fn mix(mut x: u64) -> u64 {
    x ^= x >> 32;
    x = x.wrapping_mul(0xd6e8_feb8_6659_fd93);
    x ^= x >> 32;
    x = x.wrapping_mul(0xd6e8_feb8_6659_fd93);
    x ^ (x >> 32)
}

impl PeerKey {
    pub(crate) fn v4(ip: u32, port: u16, seed: u64) -> Self {
        let key = (u64::from(ip) << 32) | (u64::from(port) << 16);
        PeerKey {
            hash: mix(key ^ seed),
            key,
            addr: [0; 2],
        }
    }
    pub(crate) fn v6(hi: u64, lo: u64, port: u16, seed: u64) -> Self {
        let hash = mix(hi ^ seed) ^ mix(lo.wrapping_add(seed) ^ u64::from(port).rotate_left(40));
        let tag = hash >> 34; // 30 bits
        let key = (tag << 34) | V6_PUBLISHED | (u64::from(port) << 16);
        PeerKey {
            hash,
            key,
            addr: [hi, lo],
        }
    }
    /// Rebuilds the key of a stored (published or removed) slot.
    pub(crate) fn from_slot(fam: IpFamily, meta: u64, addr: [u64; 2], seed: u64) -> Self {
        let port = ((meta >> 16) & 0xFFFF) as u16;
        match fam {
            IpFamily::V4 => PeerKey::v4((meta >> 32) as u32, port, seed),
            IpFamily::V6 => PeerKey::v6(addr[0], addr[1], port, seed),
        }
    }
    /// The meta word an inserter CASes into an EMPTY v6 slot before writing the address.
    #[inline]
    pub(crate) fn reserved_meta(&self) -> u64 {
        (self.key & !V6_STATE_MASK) | V6_RESERVED
    }
}

/// Meta classification helpers.
#[inline]
pub(crate) fn is_empty(m: u64) -> bool {
    m & !FROZEN == 0
}
#[inline]
pub(crate) fn is_reserved(fam: IpFamily, m: u64) -> bool {
    fam == IpFamily::V6 && m & REMOVED == 0 && m & V6_STATE_MASK == V6_RESERVED
}
/// A peer that is stored (maybe expired): not empty, not removed, not a pending reservation.
#[inline]
pub(crate) fn is_live(fam: IpFamily, m: u64) -> bool {
    !is_empty(m) && m & REMOVED == 0 && !is_reserved(fam, m)
}
#[inline]
pub(crate) fn stamp_of(now_secs: u32) -> u64 {
    u64::from(now_secs >> STAMP_SHIFT) & STAMP_MASK
}
/// Stamps at most this many units ahead of `now` are "from the future" (a worker whose clock
/// reading is slightly newer than the reader's, or a `clean` call that read its clock before a
/// long walk) and count as fresh: 16 units = 128 s.
pub(crate) const FUTURE_UNITS: u64 = 16;
/// Number of distinct stamps (the stamp clock wraps every `STAMP_RANGE` units, 18.2 h).
pub(crate) const STAMP_RANGE: u64 = 1 << STAMP_BITS;

/// Expired iff older than `timeout_units` stamps. Ages are taken modulo [`STAMP_RANGE`], so a
/// peer must be removed before its age wraps: `clean` bounds its cycle for that (see
/// `PeerStore::clean`), and the largest timeout leaves that cycle ~9 h.
#[inline]
pub(crate) fn is_expired(m: u64, now_stamp: u64, timeout_units: u64) -> bool {
    let age = now_stamp.wrapping_sub((m >> STAMP_SHIFT) & STAMP_MASK) & STAMP_MASK;
    age > timeout_units && age < STAMP_RANGE - FUTURE_UNITS
}
#[inline]
pub(crate) fn live_value(key: u64, now_stamp: u64, seeder: bool) -> u64 {
    key | (now_stamp << STAMP_SHIFT) | if seeder { SEEDER } else { 0 }
}

pub(crate) mod sealed {
    use super::{IpFamily, PeerKey};
    /// Private half of [`PeerAddress`](crate::PeerAddress): how a family is keyed and decoded.
    pub trait Sealed: Sized {
        #[doc(hidden)]
        const FAM: IpFamily;
        #[doc(hidden)]
        fn port(&self) -> u16;
        #[doc(hidden)]
        fn peer_key(&self, seed: u64) -> PeerKey;
        #[doc(hidden)]
        fn decode(meta: u64, addr: [u64; 2]) -> Self;
    }
}

/// A peer address family the store keeps: [`SocketAddrV4`] or [`SocketAddrV6`] (sealed).
pub trait PeerAddress: Copy + Send + Sync + 'static + sealed::Sealed {}

impl sealed::Sealed for SocketAddrV4 {
    const FAM: IpFamily = IpFamily::V4;
    fn port(&self) -> u16 {
        SocketAddrV4::port(self)
    }
    fn peer_key(&self, seed: u64) -> PeerKey {
        PeerKey::v4(u32::from(*self.ip()), SocketAddrV4::port(self), seed)
    }
    fn decode(meta: u64, _addr: [u64; 2]) -> Self {
        SocketAddrV4::new(
            Ipv4Addr::from((meta >> 32) as u32),
            ((meta >> 16) & 0xFFFF) as u16,
        )
    }
}
impl PeerAddress for SocketAddrV4 {}

impl sealed::Sealed for SocketAddrV6 {
    const FAM: IpFamily = IpFamily::V6;
    fn port(&self) -> u16 {
        SocketAddrV6::port(self)
    }
    fn peer_key(&self, seed: u64) -> PeerKey {
        let a = u128::from(*self.ip());
        PeerKey::v6((a >> 64) as u64, a as u64, SocketAddrV6::port(self), seed)
    }
    fn decode(meta: u64, addr: [u64; 2]) -> Self {
        let a = (u128::from(addr[0]) << 64) | u128::from(addr[1]);
        SocketAddrV6::new(Ipv6Addr::from(a), ((meta >> 16) & 0xFFFF) as u16, 0, 0)
    }
}
impl PeerAddress for SocketAddrV6 {}
