//! Stateless connection ids bound to the client's IP address.
//!
//! Layout (8 bytes, big-endian): 4 bytes issue time (Unix seconds, truncated to u32) followed by
//! 4 bytes of SipHash-2-4 under a 128-bit secret key over `(issue time, family tag, IP)`. The
//! port is not covered, so a client may use several source ports. An id is accepted from
//! `issued` to `issued + 120 s + grace`; an id from the future is refused. The MAC comparison is a
//! single XOR of two u32 values tested against zero, so its timing does not depend on how many
//! bytes match. Guessing a MAC takes 2^31 tries on average per (IP, second).
//!
//! Key rotation: a validator may also hold a previous key, whose ids it accepts but never
//! issues ([`ConnectionIdValidator::with_previous`]); both MACs are always computed, so the
//! time taken does not say which key matched.

use std::hash::Hasher;
use std::net::IpAddr;

use siphasher::sip::SipHasher24;

/// BEP 15: a tracker should accept a connection id for two minutes.
pub const CONNECTION_ID_LIFETIME_SECS: u32 = 120;

/// Issues and checks connection ids. Cheap to clone; shared read-only by all workers.
#[derive(Clone)]
pub struct ConnectionIdValidator {
    key: [u8; 16],
    /// Accepted for validation only (key rotation); never issues ids.
    previous: Option<[u8; 16]>,
    max_age_secs: u32,
}

impl std::fmt::Debug for ConnectionIdValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionIdValidator")
            .field("max_age_secs", &self.max_age_secs)
            .field("previous_key", &self.previous.is_some())
            .finish()
    }
}

impl ConnectionIdValidator {
    /// A validator with `key`, accepting ids for 120 s + `grace_secs`.
    pub fn new(key: [u8; 16], grace_secs: u32) -> Self {
        ConnectionIdValidator {
            key,
            previous: None,
            max_age_secs: CONNECTION_ID_LIFETIME_SECS + grace_secs,
        }
    }

    /// This validator, also accepting (never issuing) ids made with `previous`.
    pub fn with_previous(mut self, previous: Option<[u8; 16]>) -> Self {
        self.previous = previous;
        self
    }

    /// A validator with a random key (from the OS-seeded CSPRNG).
    pub fn random(grace_secs: u32) -> Self {
        let mut key = [0u8; 16];
        rand::Rng::fill(&mut rand::rng(), &mut key);
        Self::new(key, grace_secs)
    }

    fn mac(&self, issued: u32, ip: IpAddr) -> u32 {
        mac_with(&self.key, issued, ip)
    }

    /// Whether `id` was issued by this key (or the previous one) for `ip`, not in the future
    /// and not expired.
    pub fn is_valid(&self, id: u64, ip: IpAddr, now: u32) -> bool {
        let issued = (id >> 32) as u32;
        let mac = id as u32;
        let fresh = issued <= now && now - issued <= self.max_age_secs;
        // Constant time in the MAC value: one XOR, one comparison with zero per key.
        let mac_ok = std::hint::black_box(self.mac(issued, ip) ^ mac) == 0;
        let previous_ok = match &self.previous {
            Some(k) => std::hint::black_box(mac_with(k, issued, ip) ^ mac) == 0,
            None => false,
        };
        fresh & (mac_ok | previous_ok)
    }

    /// The connection id for `ip` issued at `now` (Unix seconds). `ip` must be canonical
    /// (IPv4-mapped IPv6 addresses converted to IPv4).
    pub fn issue(&self, now: u32, ip: IpAddr) -> u64 {
        (u64::from(now) << 32) | u64::from(self.mac(now, ip))
    }
}

/// The 32-bit MAC of `(issued, family, ip)` under `key`.
fn mac_with(key: &[u8; 16], issued: u32, ip: IpAddr) -> u32 {
    let mut h = SipHasher24::new_with_key(key);
    h.write(&issued.to_be_bytes());
    match ip {
        IpAddr::V4(a) => {
            h.write_u8(4);
            h.write(&a.octets());
        }
        IpAddr::V6(a) => {
            h.write_u8(6);
            h.write(&a.octets());
        }
    }
    h.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u32 = 1_800_000_000;

    #[test]
    fn accepted_for_two_minutes_plus_grace_and_no_longer() {
        let v = ConnectionIdValidator::new([7; 16], 30);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let id = v.issue(T, ip);
        assert!(v.is_valid(id, ip, T));
        assert!(v.is_valid(id, ip, T + 150));
        assert!(!v.is_valid(id, ip, T + 151));
        assert!(!v.is_valid(id, ip, T - 1), "future id refused");
    }

    #[test]
    fn bound_to_ip_and_key() {
        let v = ConnectionIdValidator::new([7; 16], 30);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let id = v.issue(T, a);
        assert!(!v.is_valid(id, b, T));
        let mapped_family: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert!(
            !v.is_valid(id, mapped_family, T),
            "family is part of the MAC"
        );
        let other = ConnectionIdValidator::new([8; 16], 30);
        assert!(!other.is_valid(id, a, T));
        // Same key on another node (a fleet) accepts it.
        assert!(ConnectionIdValidator::new([7; 16], 0).is_valid(id, a, T + 100));
    }

    #[test]
    fn previous_key_is_accepted_but_never_issues() {
        let old = ConnectionIdValidator::new([7; 16], 30);
        let rolled = ConnectionIdValidator::new([8; 16], 30).with_previous(Some([7; 16]));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let old_id = old.issue(T, ip);
        assert!(rolled.is_valid(old_id, ip, T + 10));
        assert!(
            !rolled.is_valid(old_id, ip, T + 151),
            "still bound to the lifetime"
        );
        let new_id = rolled.issue(T, ip);
        assert_ne!(new_id, old_id, "issued with the new key");
        assert!(ConnectionIdValidator::new([8; 16], 30).is_valid(new_id, ip, T));
        assert!(!old.is_valid(new_id, ip, T));
        let done = ConnectionIdValidator::new([8; 16], 30);
        assert!(!done.is_valid(old_id, ip, T), "previous key dropped");
    }

    #[test]
    fn every_single_bit_flip_is_refused() {
        let v = ConnectionIdValidator::random(30);
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let id = v.issue(T, ip);
        for bit in 0..64 {
            let forged = id ^ (1 << bit);
            // Flipping low time bits can make a still-fresh time; the MAC must still fail.
            assert!(!v.is_valid(forged, ip, T + 10), "bit {bit}");
        }
    }
}
