//! Identifiers and wire codes shared by requests and responses.

/// The magic constant a connect request starts with (BEP 15).
pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;

/// A connection id: the 64-bit token a tracker issues in a connect response and a client
/// echoes at the start of every announce and scrape.
///
/// This crate only carries it; issuing and validating ids (binding them to the client's
/// address, expiring them) is the server's job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnectionId(pub u64);

/// A transaction id: chosen by the client, echoed verbatim in every reply, errors included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct TransactionId(pub u32);

/// A 20-byte info hash. BEP 52 (v2) hashes are truncated to their first 20 bytes by
/// clients, so a hybrid torrent shows up as two unrelated info hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InfoHash(pub [u8; 20]);

/// A 20-byte peer id as sent by the client. Not authenticated and not unique in practice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerId(pub [u8; 20]);

/// The action code at the start of every message (offset 8 of a request, 0 of a response).
///
/// Open enum: a code this crate does not know is kept as [`Action::Unknown`]. `from_wire`
/// never produces `Unknown(0..=3)`, so values it returns compare equal exactly when their
/// wire codes are equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// 0: connect.
    Connect,
    /// 1: announce (IPv4 and IPv6 alike; the peer entry size follows the address family).
    Announce,
    /// 2: scrape.
    Scrape,
    /// 3: error (only ever valid from a tracker).
    Error,
    /// Any other code, kept as sent.
    Unknown(u32),
}

impl Action {
    /// The four actions BEP 15 defines, in wire-code order (`to_wire()` is the index).
    pub const KNOWN: [Action; 4] = [Self::Connect, Self::Announce, Self::Scrape, Self::Error];

    /// Decodes a wire code; never fails.
    pub const fn from_wire(code: u32) -> Self {
        match code {
            0 => Self::Connect,
            1 => Self::Announce,
            2 => Self::Scrape,
            3 => Self::Error,
            n => Self::Unknown(n),
        }
    }

    /// The wire code; `to_wire(from_wire(n)) == n` for every `n`.
    pub const fn to_wire(self) -> u32 {
        match self {
            Self::Connect => 0,
            Self::Announce => 1,
            Self::Scrape => 2,
            Self::Error => 3,
            Self::Unknown(n) => n,
        }
    }
}

/// The event field of an announce (offset 80).
///
/// Open enum: unknown codes are kept as [`AnnounceEvent::Unknown`] rather than rejected;
/// what to do with them is the server's decision (treating them as `None` is common).
/// Note the wire order: 1 is `Completed`, 2 is `Started`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AnnounceEvent {
    /// 0: a regular periodic announce.
    None,
    /// 1: the download has just finished (sent once).
    Completed,
    /// 2: the client starts participating in the swarm.
    Started,
    /// 3: the client leaves the swarm. May arrive for a peer the tracker never saw.
    Stopped,
    /// Any other code, kept as sent.
    Unknown(u32),
}

impl AnnounceEvent {
    /// Decodes a wire code; never fails and never produces `Unknown(0..=3)`.
    pub const fn from_wire(code: u32) -> Self {
        match code {
            0 => Self::None,
            1 => Self::Completed,
            2 => Self::Started,
            3 => Self::Stopped,
            n => Self::Unknown(n),
        }
    }

    /// The wire code; `to_wire(from_wire(n)) == n` for every `n`.
    pub const fn to_wire(self) -> u32 {
        match self {
            Self::None => 0,
            Self::Completed => 1,
            Self::Started => 2,
            Self::Stopped => 3,
            Self::Unknown(n) => n,
        }
    }
}

/// The caller's output buffer is too small for the message being written.
///
/// Nothing is allocated to recover; the bytes already copied into the buffer are
/// unspecified and must not be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("output buffer too small for the message")]
pub struct BufferTooSmall;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_id_is_the_bep15_magic() {
        assert_eq!(
            PROTOCOL_ID.to_be_bytes(),
            [0x00, 0x00, 0x04, 0x17, 0x27, 0x10, 0x19, 0x80]
        );
    }

    #[test]
    fn wire_codes_round_trip() {
        for code in [0, 1, 2, 3, 4, 5, 255, u32::MAX] {
            assert_eq!(Action::from_wire(code).to_wire(), code);
            assert_eq!(AnnounceEvent::from_wire(code).to_wire(), code);
        }
        assert_eq!(AnnounceEvent::from_wire(1), AnnounceEvent::Completed);
        assert_eq!(AnnounceEvent::from_wire(2), AnnounceEvent::Started);
        assert_eq!(AnnounceEvent::from_wire(4), AnnounceEvent::Unknown(4));
        assert_eq!(Action::from_wire(3), Action::Error);
        assert_eq!(Action::from_wire(7), Action::Unknown(7));
        for (i, a) in Action::KNOWN.iter().enumerate() {
            assert_eq!(a.to_wire() as usize, i);
        }
    }
}
