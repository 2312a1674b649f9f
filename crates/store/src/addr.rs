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

use crate::sync::{AtomicU64, Ordering};

const FROZEN: u64 = 1;
const SEEDER: u64 = 1 << 1;
const REMOVED: u64 = 1 << 2;
pub(crate) const STAMP_SHIFT: u32 = 3;
const STAMP_BITS: u32 = 13;
pub(crate) const STAMP_MASK: u64 = (1 << STAMP_BITS) - 1;
const PORT_SHIFT: u32 = 16;
/// Identity of a peer inside the meta word: port and address (v4) or port, state and tag (v6).
const KEY_MASK: u64 = !0xFFFF;
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
        let key = (u64::from(ip) << 32) | (u64::from(port) << PORT_SHIFT);
        PeerKey {
            hash: mix(key ^ seed),
            key,
            addr: [0; 2],
        }
    }
    pub(crate) fn v6(hi: u64, lo: u64, port: u16, seed: u64) -> Self {
        let hash = mix(hi ^ seed) ^ mix(lo.wrapping_add(seed) ^ u64::from(port).rotate_left(40));
        let tag = hash >> 34; // 30 bits
        let key = (tag << 34) | V6_PUBLISHED | (u64::from(port) << PORT_SHIFT);
        PeerKey {
            hash,
            key,
            addr: [hi, lo],
        }
    }
    /// Rebuilds the key of a stored (published or removed) slot.
    pub(crate) fn from_slot(fam: IpFamily, meta: Meta, addr: [u64; 2], seed: u64) -> Self {
        match fam {
            IpFamily::V4 => PeerKey::v4(meta.ipv4(), meta.port(), seed),
            IpFamily::V6 => PeerKey::v6(addr[0], addr[1], meta.port(), seed),
        }
    }
    /// The meta word an inserter CASes into an EMPTY v6 slot before writing the address.
    #[inline]
    pub(crate) fn reserved_meta(&self) -> Meta {
        Meta((self.key & !V6_STATE_MASK) | V6_RESERVED)
    }
}

/// A block slot's first word (layout in the module documentation). [`Meta::EMPTY`] is an EMPTY
/// slot; a stored peer is [`Meta::live`]; [`Meta::tombstone`] keeps a departed peer's key. Any
/// of them may carry the FROZEN bit of a migration. (`pub` only because the sealed
/// [`PeerAddress`] decodes it; nothing outside the crate can name it.)
#[doc(hidden)]
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Meta(u64);

impl Meta {
    /// An EMPTY slot (no real peer has port 0, so no stored value is 0).
    pub(crate) const EMPTY: Meta = Meta(0);

    /// A stored peer: its key bits, the stamp of its last announce and its seeder flag.
    #[inline]
    pub(crate) fn live(key: u64, now_stamp: u64, seeder: bool) -> Meta {
        Meta(key | (now_stamp << STAMP_SHIFT) | if seeder { SEEDER } else { 0 })
    }
    /// Set by a migration: the slot never changes again.
    #[inline]
    pub(crate) fn is_frozen(self) -> bool {
        self.0 & FROZEN != 0
    }
    /// The value without its FROZEN bit (what a copy into the successor stores).
    #[inline]
    pub(crate) fn unfrozen(self) -> Meta {
        Meta(self.0 & !FROZEN)
    }
    /// The value with its FROZEN bit.
    #[inline]
    pub(crate) fn frozen(self) -> Meta {
        Meta(self.0 | FROZEN)
    }
    /// EMPTY, frozen or not: the slot never held a peer.
    #[inline]
    pub(crate) fn is_empty(self) -> bool {
        self.unfrozen() == Meta::EMPTY
    }
    /// A keyed tombstone: the peer left, its key stays.
    #[inline]
    pub(crate) fn is_removed(self) -> bool {
        self.0 & REMOVED != 0
    }
    /// `left == 0` at the peer's last announce.
    #[inline]
    pub(crate) fn is_seeder(self) -> bool {
        self.0 & SEEDER != 0
    }
    /// An IPv6 slot claimed by an inserter (or copier) whose address words and publication
    /// are still to come. Never true for IPv4, whose bits 32..34 are address bits.
    #[inline]
    pub(crate) fn is_reserved(self, fam: IpFamily) -> bool {
        fam == IpFamily::V6 && !self.is_removed() && self.0 & V6_STATE_MASK == V6_RESERVED
    }
    /// A peer that is stored (maybe expired): not empty, not removed, not a pending reservation.
    #[inline]
    pub(crate) fn is_live(self, fam: IpFamily) -> bool {
        !self.is_empty() && !self.is_removed() && !self.is_reserved(fam)
    }
    /// The peer's identity bits (compare with [`PeerKey::key`]): equal for its live value, its
    /// tombstone and (with the state bits) its reservation.
    #[inline]
    pub(crate) fn key_bits(self) -> u64 {
        self.0 & KEY_MASK
    }
    /// The keyed tombstone that a stop or an expiry leaves of this peer.
    #[inline]
    pub(crate) fn tombstone(self) -> Meta {
        Meta(self.key_bits() | REMOVED)
    }
    /// The stamp of the peer's last announce (see [`stamp_of`]).
    #[inline]
    pub(crate) fn stamp(self) -> u64 {
        (self.0 >> STAMP_SHIFT) & STAMP_MASK
    }
    /// Expired iff older than `timeout_units` stamps. Ages are taken modulo [`STAMP_RANGE`], so
    /// a peer must be removed before its age wraps: `clean` bounds its cycle for that (see
    /// `PeerStore::clean`), and the largest timeout leaves that cycle ~9 h.
    #[inline]
    pub(crate) fn is_expired(self, now_stamp: u64, timeout_units: u64) -> bool {
        let age = now_stamp.wrapping_sub(self.stamp()) & STAMP_MASK;
        age > timeout_units && age < STAMP_RANGE - FUTURE_UNITS
    }

    /// [`Meta::is_expired`] for many slots at one `now_stamp`: see [`Expiry`].
    #[inline(always)]
    pub(crate) fn is_expired_at(self, e: &Expiry) -> bool {
        // `now | 7` minus the word cannot borrow out of bits 0..3 (flags, at most 7), so bits
        // 3..16 of the difference are (now - stamp) mod STAMP_RANGE, shifted; the bits above
        // (port, address) only absorb borrows. One subtraction then tests the age's range.
        let age = e.now.wrapping_sub(self.0) & (STAMP_MASK << STAMP_SHIFT);
        age.wrapping_sub(e.low) < e.span
    }

    /// The bits [`Meta::is_candidate`] rejects: REMOVED, and SEEDER if `no_seeders`.
    #[inline]
    pub(crate) fn excluded_bits(no_seeders: bool) -> u64 {
        REMOVED | if no_seeders { SEEDER } else { 0 }
    }
    /// A live peer (not EMPTY, REMOVED or reserved) none of whose bits are in `excluded`
    /// (from [`Meta::excluded_bits`]): the same as `is_live(fam) && !(no_seeders &&
    /// is_seeder())`, but without a branch. A selection walk tests every slot, and in a swarm
    /// of seeders and leechers whether a seeder's walk takes a slot is a coin toss that the
    /// branch predictor loses.
    #[inline(always)]
    pub(crate) fn is_candidate(self, fam: IpFamily, excluded: u64) -> bool {
        let filled = match fam {
            // EMPTY is 0 and a frozen EMPTY 1; every stored v4 value has a port bit set.
            IpFamily::V4 => self.0 > FROZEN,
            // A reservation's state is RESERVED, a tombstone's PUBLISHED (with REMOVED).
            IpFamily::V6 => self.0 & V6_STATE_MASK == V6_PUBLISHED,
        };
        filled & (self.0 & excluded == 0)
    }

    /// Age in seconds at `now_stamp` (0 for a stamp from the future).
    #[inline]
    pub(crate) fn age_secs(self, now_stamp: u64) -> u32 {
        let age = now_stamp.wrapping_sub(self.stamp()) & STAMP_MASK;
        if age >= STAMP_RANGE - FUTURE_UNITS {
            0
        } else {
            (age << STAMP_SHIFT) as u32
        }
    }
    #[inline]
    fn port(self) -> u16 {
        (self.0 >> PORT_SHIFT) as u16
    }
    #[inline]
    fn ipv4(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

/// A block slot's meta word, typed: loads and CASes take and give [`Meta`]. Lives no longer
/// than the block view it came from.
#[derive(Clone, Copy)]
pub(crate) struct MetaCell<'g>(&'g AtomicU64);

impl<'g> MetaCell<'g> {
    #[inline]
    pub(crate) fn new(word: &'g AtomicU64) -> Self {
        MetaCell(word)
    }
    #[inline]
    pub(crate) fn load(self, order: Ordering) -> Meta {
        Meta(self.0.load(order))
    }
    /// The word's address, for a prefetch (never dereferenced through it).
    #[inline]
    pub(crate) fn as_ptr(self) -> *const AtomicU64 {
        self.0
    }
    #[inline]
    pub(crate) fn compare_exchange(
        self,
        current: Meta,
        new: Meta,
        success: Ordering,
        failure: Ordering,
    ) -> Result<Meta, Meta> {
        self.0
            .compare_exchange(current.0, new.0, success, failure)
            .map(Meta)
            .map_err(Meta)
    }
    #[inline]
    pub(crate) fn compare_exchange_weak(
        self,
        current: Meta,
        new: Meta,
        success: Ordering,
        failure: Ordering,
    ) -> Result<Meta, Meta> {
        self.0
            .compare_exchange_weak(current.0, new.0, success, failure)
            .map(Meta)
            .map_err(Meta)
    }
}

/// The test of [`Meta::is_expired`] at one `now_stamp`, prepared for a walk over many slots:
/// `timeout_units < age < STAMP_RANGE - FUTURE_UNITS` becomes one wrapping subtraction and one
/// comparison on the meta word's stamp bits, in place (a selection walk tests every peer it
/// takes).
#[derive(Clone, Copy)]
pub(crate) struct Expiry {
    /// `now_stamp` in the stamp's bit position, bits 0..3 set.
    now: u64,
    /// The smallest expired age (`timeout_units + 1`), in the stamp's bit position.
    low: u64,
    /// How many ages from `low` on are expired, in the stamp's bit position.
    span: u64,
}

impl Expiry {
    /// For `now_stamp` and a timeout of `timeout_units` (`1..STAMP_RANGE - FUTURE_UNITS - 1`,
    /// as the store sets it; a larger one expires nothing).
    #[inline]
    pub(crate) fn new(now_stamp: u64, timeout_units: u64) -> Self {
        let low = timeout_units.saturating_add(1);
        let span = (STAMP_RANGE - FUTURE_UNITS).saturating_sub(low);
        Expiry {
            now: ((now_stamp & STAMP_MASK) << STAMP_SHIFT) | ((1 << STAMP_SHIFT) - 1),
            low: low.min(STAMP_RANGE) << STAMP_SHIFT,
            span: span << STAMP_SHIFT,
        }
    }
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

pub(crate) mod sealed {
    use super::{IpFamily, Meta, PeerKey};
    /// Private half of [`PeerAddress`](crate::PeerAddress): how a family is keyed and decoded.
    pub trait Sealed: Sized {
        #[doc(hidden)]
        const FAM: IpFamily;
        #[doc(hidden)]
        fn port(&self) -> u16;
        #[doc(hidden)]
        fn peer_key(&self, seed: u64) -> PeerKey;
        #[doc(hidden)]
        fn decode(meta: Meta, addr: [u64; 2]) -> Self;
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
    fn decode(meta: Meta, _addr: [u64; 2]) -> Self {
        SocketAddrV4::new(Ipv4Addr::from(meta.ipv4()), meta.port())
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
    fn decode(meta: Meta, addr: [u64; 2]) -> Self {
        let a = (u128::from(addr[0]) << 64) | u128::from(addr[1]);
        SocketAddrV6::new(Ipv6Addr::from(a), meta.port(), 0, 0)
    }
}
impl PeerAddress for SocketAddrV6 {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The walk's one-comparison expiry test agrees with [`Meta::is_expired`] for every stamp,
    /// at every kind of `now` (including wrapped ones) and timeout, whatever the flag, port and
    /// address bits around the stamp.
    #[test]
    fn expiry_at_matches_is_expired_for_every_stamp() {
        let timeouts = [
            1,
            2,
            15,
            225,
            1_000,
            STAMP_RANGE - FUTURE_UNITS - 3,
            STAMP_RANGE - FUTURE_UNITS - 1,
            STAMP_RANGE,
            u64::MAX,
        ];
        let nows = [
            0,
            1,
            7,
            16,
            225,
            226,
            4_096,
            STAMP_RANGE - 17,
            STAMP_RANGE - 1,
        ];
        let mut n = 0u64;
        let mut checked = 0u64;
        for &t in &timeouts {
            for &now in &nows {
                let e = Expiry::new(now, t);
                for stamp in 0..STAMP_RANGE {
                    n += 1;
                    let around = mix(n) & !(STAMP_MASK << STAMP_SHIFT);
                    let m = Meta(around | (stamp << STAMP_SHIFT));
                    assert_eq!(
                        m.is_expired_at(&e),
                        m.is_expired(now, t),
                        "now {now}, timeout {t}, stamp {stamp}, word {:#x}",
                        m.0
                    );
                    checked += u64::from(m.is_expired(now, t));
                }
            }
        }
        // Not vacuous: most (now, timeout) pairs expire some stamps.
        assert!(checked > 100_000, "{checked}");
    }
}
