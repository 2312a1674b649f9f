//! Client software from an announce's peer id (BEP 20 and the conventions that preceded it).
//!
//! A peer id is 20 bytes the client picks; most clients start it with a fixed prefix naming
//! the software and its version. [`identify`] decodes the three common layouts:
//!
//! - **Azureus style** `-XXvvvv-` (qBittorrent `-qB4630-`, Transmission `-TR3000-`, libtorrent
//!   `-LT2080-`, µTorrent `-UT355W-`, …): a dash, a two-character client code, four version
//!   characters, a dash (µTorrent and BitTorrent put a fifth version character where the
//!   closing dash goes);
//! - **Shadow style** `Tvvvvv---` (BitTornado, ABC, Shad0w, …): a client letter, up to five
//!   version characters padded with dashes, then `---`;
//! - **Mainline style** `M7-2-2--` (BitTorrent's original client): a letter, then
//!   `major-minor-patch-` in decimal;
//!
//! plus the few clients with a layout of their own that are still seen on public trackers
//! (Tixati `TIX0289-`, aria2 `A2-1-35-0-`, BitComet's old `exbc`).
//!
//! The result is a [`Client`] from a small fixed set (every label a metric may carry is in
//! [`Client::ALL`]) and, where the layout says, a [`Version`] (major and minor only). Anything
//! else, garbage included, is [`Client::Other`]. Decoding never panics and never allocates.
//!
//! [`Identified::fixed_prefix`] says whether the answer depends on the first eight bytes
//! alone (true for every Azureus-style id, Tixati, aria2 and Mainline ids that fit). A caller
//! on a hot path may then cache the answer keyed by those bytes: see fjord-server's client
//! counters, which decode each distinct prefix once.
#![forbid(unsafe_code)]

use core::fmt;

/// Client software, as counted by the tracker. A fixed set: a peer id fjord does not know is
/// [`Client::Other`], never a new value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(u8)]
pub enum Client {
    /// Anything not listed below, garbage included.
    #[default]
    Other = 0,
    /// qBittorrent (`-qB`), built on libtorrent.
    QBittorrent,
    /// Transmission (`-TR`).
    Transmission,
    /// libtorrent (Rasterbar, `-LT`), also the default id of applications built on it.
    Libtorrent,
    /// Deluge (`-DE`), built on libtorrent.
    Deluge,
    /// rTorrent: Rakshasa's libTorrent (`-lt`), not Rasterbar's libtorrent.
    RTorrent,
    /// µTorrent (`-UT`, Mac `-UM`, Embedded `-UE`, Web `-UW`).
    UTorrent,
    /// BitTorrent (`-BT`, and the original Mainline client `M…`).
    BitTorrent,
    /// BitComet (`-BC`, old versions `exbc`).
    BitComet,
    /// Vuze, formerly Azureus (`-AZ`).
    Vuze,
    /// BiglyBT (`-BI`), Vuze's successor.
    BiglyBt,
    /// aria2 (`A2-…`).
    Aria2,
    /// WebTorrent (`-WW`).
    WebTorrent,
    /// Tixati (`TIX`).
    Tixati,
    /// Xunlei / Thunder (`-XL`, `-SD`).
    Xunlei,
    /// KTorrent (`-KT`).
    KTorrent,
    /// Free Download Manager (`-FD`).
    FreeDownloadManager,
    /// BitTornado (Shadow style `T…---`).
    BitTornado,
}

impl Client {
    /// Every client, in index order (`Client::ALL[c as usize] == c`).
    pub const ALL: [Client; 18] = [
        Client::Other,
        Client::QBittorrent,
        Client::Transmission,
        Client::Libtorrent,
        Client::Deluge,
        Client::RTorrent,
        Client::UTorrent,
        Client::BitTorrent,
        Client::BitComet,
        Client::Vuze,
        Client::BiglyBt,
        Client::Aria2,
        Client::WebTorrent,
        Client::Tixati,
        Client::Xunlei,
        Client::KTorrent,
        Client::FreeDownloadManager,
        Client::BitTornado,
    ];

    /// A label value for metrics: lower case ASCII, stable across releases.
    pub const fn label(self) -> &'static str {
        match self {
            Client::Other => "other",
            Client::QBittorrent => "qbittorrent",
            Client::Transmission => "transmission",
            Client::Libtorrent => "libtorrent",
            Client::Deluge => "deluge",
            Client::RTorrent => "rtorrent",
            Client::UTorrent => "utorrent",
            Client::BitTorrent => "bittorrent",
            Client::BitComet => "bitcomet",
            Client::Vuze => "vuze",
            Client::BiglyBt => "biglybt",
            Client::Aria2 => "aria2",
            Client::WebTorrent => "webtorrent",
            Client::Tixati => "tixati",
            Client::Xunlei => "xunlei",
            Client::KTorrent => "ktorrent",
            Client::FreeDownloadManager => "free_download_manager",
            Client::BitTornado => "bittornado",
        }
    }

    /// The name a person reads (`µTorrent`, `qBittorrent`).
    pub const fn name(self) -> &'static str {
        match self {
            Client::Other => "other",
            Client::QBittorrent => "qBittorrent",
            Client::Transmission => "Transmission",
            Client::Libtorrent => "libtorrent",
            Client::Deluge => "Deluge",
            Client::RTorrent => "rTorrent",
            Client::UTorrent => "µTorrent",
            Client::BitTorrent => "BitTorrent",
            Client::BitComet => "BitComet",
            Client::Vuze => "Vuze",
            Client::BiglyBt => "BiglyBT",
            Client::Aria2 => "aria2",
            Client::WebTorrent => "WebTorrent",
            Client::Tixati => "Tixati",
            Client::Xunlei => "Xunlei",
            Client::KTorrent => "KTorrent",
            Client::FreeDownloadManager => "Free Download Manager",
            Client::BitTornado => "BitTornado",
        }
    }

    /// The client with index `i` (`c as u8`); [`Client::Other`] for an index out of range.
    pub fn from_index(i: u8) -> Client {
        Client::ALL.get(usize::from(i)).copied().unwrap_or_default()
    }
}

/// A client version, major and minor only (`4.6` for qBittorrent 4.6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version {
    /// Major version.
    pub major: u8,
    /// Minor version.
    pub minor: u8,
    /// Whether the minor version is written with two digits (Transmission `3.00`, BitComet
    /// `2.06`, Tixati `2.89`).
    pub two_digit_minor: bool,
}

impl Version {
    const fn new(major: u8, minor: u8) -> Version {
        Version {
            major,
            minor,
            two_digit_minor: false,
        }
    }

    const fn two_digit(major: u8, minor: u8) -> Version {
        Version {
            major,
            minor,
            two_digit_minor: true,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.two_digit_minor {
            write!(f, "{}.{:02}", self.major, self.minor)
        } else {
            write!(f, "{}.{}", self.major, self.minor)
        }
    }
}

/// What [`identify`] found in a peer id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Identified {
    /// The client software ([`Client::Other`] when unknown).
    pub client: Client,
    /// Its version, when the layout carries one that decodes.
    pub version: Option<Version>,
    /// The answer depends on the first eight bytes of the peer id only (the rest is the
    /// client's random part), so it may be cached under them. False for garbage: a flood of
    /// random ids cannot fill such a cache.
    pub fixed_prefix: bool,
}

/// How the version characters of an Azureus-style id are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    /// One character each for major and minor: `0-9`, then `A-Z` = 10–35, `a-z` = 36–61
    /// (libtorrent, qBittorrent, Deluge, Vuze, …).
    Chars,
    /// Hexadecimal digits (µTorrent, BitTorrent: `-BT7a5S-` is 7.10).
    Hex,
    /// Two decimal digits each (BitComet `-BC0206-` is 2.06; WebTorrent `-WW0109-` is 1.9).
    TwoAndTwo { two_digit_minor: bool },
    /// Transmission's own history of layouts (see [`transmission_version`]).
    Transmission,
}

/// The Azureus-style client codes fjord names, and how each writes its version.
fn azureus_code(code: [u8; 2]) -> Option<(Client, Scheme)> {
    let two_two = Scheme::TwoAndTwo {
        two_digit_minor: true,
    };
    Some(match &code {
        b"qB" => (Client::QBittorrent, Scheme::Chars),
        b"TR" => (Client::Transmission, Scheme::Transmission),
        b"LT" => (Client::Libtorrent, Scheme::Chars),
        b"DE" => (Client::Deluge, Scheme::Chars),
        b"lt" => (Client::RTorrent, Scheme::Chars),
        b"UT" | b"UM" | b"UE" | b"UW" => (Client::UTorrent, Scheme::Hex),
        b"BT" => (Client::BitTorrent, Scheme::Hex),
        b"BC" => (Client::BitComet, two_two),
        b"AZ" => (Client::Vuze, Scheme::Chars),
        b"BI" => (Client::BiglyBt, Scheme::Chars),
        b"WW" => (
            Client::WebTorrent,
            Scheme::TwoAndTwo {
                two_digit_minor: false,
            },
        ),
        b"XL" | b"SD" => (Client::Xunlei, Scheme::Chars),
        b"KT" => (Client::KTorrent, Scheme::Chars),
        b"FD" => (Client::FreeDownloadManager, Scheme::Chars),
        _ => return None,
    })
}

/// `0-9` → 0–9, `A-Z` → 10–35, `a-z` → 36–61 (libtorrent's and Transmission's reading).
fn char_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'Z' => Some(c - b'A' + 10),
        b'a'..=b'z' => Some(c - b'a' + 36),
        _ => None,
    }
}

fn digit(c: u8) -> Option<u8> {
    c.is_ascii_digit().then(|| c - b'0')
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn two_digits(hi: u8, lo: u8) -> Option<u8> {
    Some(digit(hi)? * 10 + digit(lo)?)
}

/// Transmission: `-TR0006-` is 0.6, `-TR0072-` 0.72, `-TR2940-` 2.94, `-TR3000-` 3.00,
/// `-TR4060-` 4.0 (4.0.6: from 4.0 on the minor version is one digit).
fn transmission_version([a, b, c, d]: [u8; 4]) -> Option<Version> {
    match (a, b, c) {
        (b'0', b'0', b'0') => Some(Version::new(0, digit(d)?)),
        (b'0', b'0', _) => Some(Version::two_digit(0, two_digits(c, d)?)),
        _ => {
            let major = digit(a)?;
            if major >= 4 {
                Some(Version::new(major, char_value(b)?))
            } else {
                Some(Version::two_digit(major, two_digits(b, c)?))
            }
        }
    }
}

fn scheme_version(scheme: Scheme, v: [u8; 4]) -> Option<Version> {
    let [a, b, c, d] = v;
    match scheme {
        Scheme::Chars => Some(Version::new(char_value(a)?, char_value(b)?)),
        Scheme::Hex => Some(Version::new(hex_digit(a)?, hex_digit(b)?)),
        Scheme::TwoAndTwo { two_digit_minor } => Some(Version {
            major: two_digits(a, b)?,
            minor: two_digits(c, d)?,
            two_digit_minor,
        }),
        Scheme::Transmission => transmission_version(v),
    }
}

/// An Azureus-style id: `-`, a printable two-character code, four version characters, `-`
/// (or, for the hexadecimal clients, a fifth version character).
fn azureus(id: &[u8; 20]) -> Option<Identified> {
    let [b'-', c1, c2, v0, v1, v2, v3, end, ..] = *id else {
        return None;
    };
    let code_ok = |c: u8| c.is_ascii_alphanumeric() || c == b'~';
    let version_ok = [v0, v1, v2, v3].iter().all(u8::is_ascii_alphanumeric);
    if !code_ok(c1) || !code_ok(c2) || !version_ok {
        return None;
    }
    let known = azureus_code([c1, c2]);
    let closed =
        end == b'-' || (matches!(known, Some((_, Scheme::Hex))) && end.is_ascii_alphanumeric());
    if !closed {
        return None;
    }
    Some(match known {
        Some((client, scheme)) => Identified {
            client,
            version: scheme_version(scheme, [v0, v1, v2, v3]),
            fixed_prefix: true,
        },
        // A well-formed id of a client fjord does not name: still a stable prefix.
        None => Identified {
            client: Client::Other,
            version: None,
            fixed_prefix: true,
        },
    })
}

/// Shadow style (BitTornado and its relatives): a client letter, up to five version
/// characters from `0-9A-Za-z.`, padded with dashes, then `---` at bytes 6–8. Only
/// BitTornado (`T`) is named; the others are [`Client::Other`]. Byte 8 takes part, so the
/// prefix is not fixed in eight bytes.
fn shadow(id: &[u8; 20]) -> Option<Identified> {
    let [
        letter,
        v @ ..,
        b'-',
        b'-',
        b'-',
        _,
        _,
        _,
        _,
        _,
        _,
        _,
        _,
        _,
        _,
        _,
    ] = *id
    else {
        return None;
    };
    let shadow_value = |c: u8| match c {
        b'.' => Some(62),
        _ => char_value(c),
    };
    let [v0, v1, v2, v3, v4] = v;
    // Version characters, then only dashes.
    let mut seen_dash = false;
    for c in [v0, v1, v2, v3, v4] {
        match c {
            b'-' => seen_dash = true,
            _ if seen_dash || shadow_value(c).is_none() => return None,
            _ => {}
        }
    }
    let client = match letter {
        b'T' => Client::BitTornado,
        b'A' | b'O' | b'Q' | b'R' | b'S' | b'U' => Client::Other,
        _ => return None,
    };
    let version = match (shadow_value(v0), shadow_value(v1)) {
        (Some(major), Some(minor)) => Some(Version::new(major, minor)),
        _ => None,
    };
    Some(Identified {
        client,
        version,
        fixed_prefix: false,
    })
}

/// Reads 1–3 decimal digits at `at`, then a `-`; returns the number and the index after the
/// dash.
fn number_then_dash(id: &[u8; 20], at: usize) -> Option<(u16, usize)> {
    let mut value: u16 = 0;
    let mut i = at;
    while let Some(&c) = id.get(i) {
        match c {
            b'0'..=b'9' if i - at < 3 => value = value * 10 + u16::from(c - b'0'),
            b'-' if i > at => return Some((value, i + 1)),
            _ => return None,
        }
        i += 1;
    }
    None
}

/// Mainline style: `M` then `major-minor-patch-` in decimal (`M7-2-2--`, `M4-20-8-`).
fn mainline(id: &[u8; 20]) -> Option<Identified> {
    let [b'M', ..] = *id else {
        return None;
    };
    let (major, i) = number_then_dash(id, 1)?;
    let (minor, i) = number_then_dash(id, i)?;
    let (_patch, end) = number_then_dash(id, i)?;
    Some(Identified {
        client: Client::BitTorrent,
        version: Some(Version::new(
            u8::try_from(major).ok()?,
            u8::try_from(minor).ok()?,
        )),
        fixed_prefix: end <= 8,
    })
}

/// Tixati `TIX0289-` (2.89), aria2 `A2-1-35-0-` (1.35) and `A2-1-3-0-`, BitComet before
/// 0.59 `exbc` + two version bytes.
fn special(id: &[u8; 20]) -> Option<Identified> {
    match *id {
        [b'T', b'I', b'X', a, b, c, d, b'-', ..] => Some(Identified {
            client: Client::Tixati,
            version: scheme_version(
                Scheme::TwoAndTwo {
                    two_digit_minor: true,
                },
                [a, b, c, d],
            ),
            fixed_prefix: true,
        }),
        [b'A', b'2', b'-', major, b'-', m1, m2, m3, ..] => {
            let minor = match (m2, m3) {
                (b'-', _) => digit(m1),
                (_, b'-') => two_digits(m1, m2),
                _ => return None,
            };
            let version = match (digit(major), minor) {
                (Some(major), Some(minor)) => Some(Version::new(major, minor)),
                _ => return None,
            };
            Some(Identified {
                client: Client::Aria2,
                version,
                fixed_prefix: true,
            })
        }
        [b'a', b'r', b'i', b'a', b'2', b'-', ..] => Some(Identified {
            client: Client::Aria2,
            version: None,
            fixed_prefix: true,
        }),
        [b'e', b'x', b'b', b'c', major, minor, ..] => Some(Identified {
            client: Client::BitComet,
            version: (minor < 100).then_some(Version::two_digit(major, minor)),
            // Bytes 6 and 7 are random (or BitLord's "LORD").
            fixed_prefix: false,
        }),
        _ => None,
    }
}

/// The client software and version a peer id names; [`Client::Other`] for anything else.
/// Never panics, for any 20 bytes.
///
/// ```
/// use fjord_protocol::client::{Client, identify};
/// let lt = identify(b"-LT2080-IFHTjbbnqKnV");
/// assert_eq!((lt.client, lt.version.map(|v| v.to_string())), (Client::Libtorrent, Some("2.0".into())));
/// let tr = identify(b"-TR3000-ttxd4s4cypsd");
/// assert_eq!((tr.client, tr.version.map(|v| v.to_string())), (Client::Transmission, Some("3.00".into())));
/// assert_eq!(identify(&[0xff; 20]).client, Client::Other);
/// ```
pub fn identify(peer_id: &[u8; 20]) -> Identified {
    azureus(peer_id)
        .or_else(|| special(peer_id))
        .or_else(|| mainline(peer_id))
        .or_else(|| shadow(peer_id))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(prefix: &[u8]) -> [u8; 20] {
        let mut out = *b"0123456789abcdefghij";
        out[..prefix.len()].copy_from_slice(prefix);
        out
    }

    fn seen(prefix: &[u8]) -> (Client, Option<String>) {
        let i = identify(&id(prefix));
        (i.client, i.version.map(|v| v.to_string()))
    }

    #[test]
    fn real_prefixes_decode_to_their_client_and_version() {
        let cases: &[(&[u8], Client, Option<&str>)] = &[
            // Captured in crates/protocol/testdata/captured (libtorrent 2.0.8, Transmission 3.00).
            (b"-LT2080-", Client::Libtorrent, Some("2.0")),
            (b"-TR3000-", Client::Transmission, Some("3.00")),
            (b"-TR2940-", Client::Transmission, Some("2.94")),
            (b"-TR4060-", Client::Transmission, Some("4.0")),
            (b"-TR0072-", Client::Transmission, Some("0.72")),
            (b"-TR0006-", Client::Transmission, Some("0.6")),
            (b"-qB4630-", Client::QBittorrent, Some("4.6")),
            (b"-qB5010-", Client::QBittorrent, Some("5.0")),
            (b"-DE211s-", Client::Deluge, Some("2.1")),
            (b"-lt0D80-", Client::RTorrent, Some("0.13")),
            (b"-UT355W-", Client::UTorrent, Some("3.5")),
            (b"-UM1870-", Client::UTorrent, Some("1.8")),
            (b"-UT3550", Client::UTorrent, Some("3.5")), // a fifth version character
            (b"-BT7a5S-", Client::BitTorrent, Some("7.10")),
            (b"-BC0206-", Client::BitComet, Some("2.06")),
            (b"-AZ5770-", Client::Vuze, Some("5.7")),
            (b"-BI3600-", Client::BiglyBt, Some("3.6")),
            (b"-WW0109-", Client::WebTorrent, Some("1.9")),
            (b"-XL0012-", Client::Xunlei, Some("0.0")),
            (b"-SD0100-", Client::Xunlei, Some("0.1")),
            (b"-KT5200-", Client::KTorrent, Some("5.2")),
            (b"-FD6100-", Client::FreeDownloadManager, Some("6.1")),
            (b"TIX0289-", Client::Tixati, Some("2.89")),
            (b"A2-1-35-0-", Client::Aria2, Some("1.35")),
            (b"A2-1-3-0-", Client::Aria2, Some("1.3")),
            (b"aria2-", Client::Aria2, None),
            (b"M7-2-2--", Client::BitTorrent, Some("7.2")),
            (b"M4-20-8-", Client::BitTorrent, Some("4.20")),
            (b"T03I-----", Client::BitTornado, Some("0.3")),
            (b"S58B-----", Client::Other, Some("5.8")),
            (b"exbc\x00\x59LORD", Client::BitComet, Some("0.89")),
            // Well-formed, but not a client fjord names.
            (b"-FB0100-", Client::Other, None),
            (b"-ZZ9999-", Client::Other, None),
        ];
        for &(prefix, client, version) in cases {
            assert_eq!(
                seen(prefix),
                (client, version.map(String::from)),
                "{}",
                String::from_utf8_lossy(prefix)
            );
        }
    }

    #[test]
    fn malformed_prefixes_are_other() {
        for prefix in [
            &b"-qB46"[..],   // no closing dash (random bytes follow)
            b"-q\x004630-",  // unprintable code
            b"-TR30 0-",     // space in the version
            b"A2-x-35-0-",   // aria2 with a letter for the major version
            b"M7-2-2222222", // mainline digits without an end
            b"Mx-2-2--",
            b"T03I--X--", // shadow: a version character after the padding
            b"\0\0\0\0\0\0\0\0",
        ] {
            let i = identify(&id(prefix));
            assert_eq!(
                i.client,
                Client::Other,
                "{}",
                String::from_utf8_lossy(prefix)
            );
            // Not even a stable prefix: a cache may never keep it.
            assert!(!i.fixed_prefix, "{}", String::from_utf8_lossy(prefix));
        }
        // Azureus structure but an unknown code is a fixed prefix; garbage is not.
        assert!(identify(&id(b"-ZZ0000-")).fixed_prefix);
        assert!(!identify(&[0xa5; 20]).fixed_prefix);
    }

    #[test]
    fn labels_are_unique_lower_case_and_index_their_client() {
        for (i, c) in Client::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
            assert_eq!(Client::from_index(i as u8), *c);
            let l = c.label();
            assert!(
                l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())
            );
            assert_eq!(Client::ALL.iter().filter(|o| o.label() == l).count(), 1);
        }
        assert_eq!(Client::from_index(200), Client::Other);
    }
}
