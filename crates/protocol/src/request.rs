//! Client → tracker messages: connect, announce (with BEP 41 options) and scrape.

use core::iter::FusedIterator;

use crate::codec::{Reader, Writer};
use crate::{
    Action, AnnounceEvent, BufferTooSmall, ConnectionId, InfoHash, PROTOCOL_ID, PeerId,
    TransactionId,
};

/// Length of a connect request. Longer packets are accepted; the excess is ignored.
pub const CONNECT_REQUEST_LEN: usize = 16;
/// Length of an announce request without BEP 41 options (the options start at this offset).
pub const ANNOUNCE_REQUEST_LEN: usize = 98;
/// Length of the scrape request header; 20-byte info hashes follow it.
pub const SCRAPE_REQUEST_HEADER_LEN: usize = 16;

/// A connect request: `protocol id · action 0 · transaction id` (16 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnectRequest {
    /// Echoed in the connect response.
    pub transaction_id: TransactionId,
}

impl ConnectRequest {
    /// Writes the 16-byte request (with [`PROTOCOL_ID`]) and returns its length.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut w = Writer::new(out);
        w.u64(PROTOCOL_ID)?;
        w.u32(Action::Connect.to_wire())?;
        w.u32(self.transaction_id.0)?;
        Ok(w.finish())
    }
}

/// An announce request (98 bytes, then BEP 41 options).
///
/// Every field is reported as sent; nothing is validated beyond the length, because what
/// is acceptable (port 0, a negative `left`, `num_want` of -1 or 0, an unknown event) is
/// the server's policy. In particular:
/// - `left` may be `i64::MAX` (Transmission) or negative (-1); `downloaded` and `uploaded`
///   may be negative too.
/// - `ip_address` lets anyone claim any IPv4 address; a tracker should ignore it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AnnounceRequest<'a> {
    /// Must be validated by the server before anything is answered.
    pub connection_id: ConnectionId,
    /// Echoed in the reply.
    pub transaction_id: TransactionId,
    /// The swarm.
    pub info_hash: InfoHash,
    /// The client's self-chosen id.
    pub peer_id: PeerId,
    /// Bytes downloaded so far (client-reported, unchecked).
    pub downloaded: i64,
    /// Bytes left; 0 means seeder (BEP 3). Can be negative or `i64::MAX`.
    pub left: i64,
    /// Bytes uploaded so far (client-reported, unchecked).
    pub uploaded: i64,
    /// The event; unknown codes are kept.
    pub event: AnnounceEvent,
    /// The raw IPv4 field (offset 84); 0 means "use the source address".
    pub ip_address: u32,
    /// A client-chosen key (stable per torrent in libtorrent, random in Transmission).
    pub key: u32,
    /// Peers wanted; negative means the tracker's default, 0 means none.
    pub num_want: i32,
    /// The client's listen port; 0 is possible and useless.
    pub port: u16,
    /// The raw bytes after offset 98 (BEP 41 options), possibly malformed.
    pub options: AnnounceOptions<'a>,
}

impl AnnounceRequest<'_> {
    /// Length of this request on the wire: 98 plus the option bytes.
    pub fn encoded_len(&self) -> usize {
        ANNOUNCE_REQUEST_LEN.saturating_add(self.options.as_bytes().len())
    }

    /// Writes the request, options copied verbatim, and returns its length.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut w = Writer::new(out);
        w.u64(self.connection_id.0)?;
        w.u32(Action::Announce.to_wire())?;
        w.u32(self.transaction_id.0)?;
        w.array(self.info_hash.0)?;
        w.array(self.peer_id.0)?;
        w.i64(self.downloaded)?;
        w.i64(self.left)?;
        w.i64(self.uploaded)?;
        w.u32(self.event.to_wire())?;
        w.u32(self.ip_address)?;
        w.u32(self.key)?;
        w.i32(self.num_want)?;
        w.u16(self.port)?;
        w.bytes(self.options.as_bytes())?;
        Ok(w.finish())
    }

    fn read<'a>(
        connection_id: ConnectionId,
        transaction_id: TransactionId,
        r: &mut Reader<'a>,
    ) -> Option<AnnounceRequest<'a>> {
        Some(AnnounceRequest {
            connection_id,
            transaction_id,
            info_hash: InfoHash(*r.array()?),
            peer_id: PeerId(*r.array()?),
            downloaded: r.i64()?,
            left: r.i64()?,
            uploaded: r.i64()?,
            event: AnnounceEvent::from_wire(r.u32()?),
            ip_address: r.u32()?,
            key: r.u32()?,
            num_want: r.i32()?,
            port: r.u16()?,
            options: AnnounceOptions::new(r.rest()),
        })
    }
}

/// The BEP 41 option bytes of an announce (everything after offset 98), parsed lazily.
///
/// Layout: `0x00` ends the options, `0x01` is a one-byte no-op, any other type byte is
/// followed by a length byte and that many bytes of data; type `0x02` is URL data (path
/// and query of the announce URL; several are concatenated). Only a length running past the
/// end of the packet is malformed, and a malformed option list does not make the announce
/// invalid: [`Request::parse`] still succeeds, and [`AnnounceOptions::is_malformed`] tells.
/// Bytes after an end-of-options marker are ignored (but kept in [`as_bytes`](Self::as_bytes)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct AnnounceOptions<'a> {
    bytes: &'a [u8],
}

impl<'a> AnnounceOptions<'a> {
    /// Wraps raw option bytes (may be empty, may be malformed).
    pub const fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    /// The raw bytes, exactly as received.
    pub const fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Iterates over the options in order. The iterator yields `Ok(EndOfOptions)` and stops
    /// at an end-of-options byte, stops at the end of the bytes, and yields one
    /// `Err(MalformedOptions)` and stops when an option runs past the end.
    pub fn iter(&self) -> AnnounceOptionsIter<'a> {
        AnnounceOptionsIter {
            rest: self.bytes,
            offset: 0,
            done: false,
        }
    }

    /// The payloads of all URL-data options, in order; their concatenation is the path and
    /// query of the announce URL (e.g. `/announce?auth=abc`). Options before a malformed one
    /// are still yielded; check [`is_malformed`](Self::is_malformed) if that matters.
    pub fn url_data(&self) -> impl Iterator<Item = &'a [u8]> + use<'a> {
        self.iter().filter_map(|option| match option {
            Ok(AnnounceOption::UrlData(data)) => Some(data),
            _ => None,
        })
    }

    /// True if an option's length runs past the end of the packet.
    pub fn is_malformed(&self) -> bool {
        self.iter().any(|option| option.is_err())
    }
}

impl<'a> IntoIterator for AnnounceOptions<'a> {
    type Item = Result<AnnounceOption<'a>, MalformedOptions>;
    type IntoIter = AnnounceOptionsIter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// One BEP 41 option, borrowing its data from the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AnnounceOption<'a> {
    /// Type 0x00: no more options follow.
    EndOfOptions,
    /// Type 0x01: a one-byte no-op.
    Nop,
    /// Type 0x02: a piece of the announce URL's path and query.
    UrlData(&'a [u8]),
    /// Any other type, skipped by its length.
    Unknown {
        /// The type byte.
        kind: u8,
        /// The option's data (without type and length bytes).
        data: &'a [u8],
    },
}

/// A BEP 41 option whose length byte is missing or runs past the end of the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[error("BEP 41 option at offset {offset} runs past the end of the packet")]
pub struct MalformedOptions {
    /// Offset of the bad option's type byte within the option bytes (packet offset - 98).
    pub offset: usize,
}

/// Iterator returned by [`AnnounceOptions::iter`].
#[derive(Clone, Debug)]
pub struct AnnounceOptionsIter<'a> {
    rest: &'a [u8],
    offset: usize,
    done: bool,
}

impl<'a> Iterator for AnnounceOptionsIter<'a> {
    type Item = Result<AnnounceOption<'a>, MalformedOptions>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let Some((&kind, after_kind)) = self.rest.split_first() else {
            self.done = true;
            return None;
        };
        match kind {
            0x00 => {
                self.done = true;
                Some(Ok(AnnounceOption::EndOfOptions))
            }
            0x01 => {
                self.rest = after_kind;
                self.offset = self.offset.saturating_add(1);
                Some(Ok(AnnounceOption::Nop))
            }
            _ => {
                let split = after_kind
                    .split_first()
                    .and_then(|(&len, data)| data.split_at_checked(usize::from(len)));
                let Some((data, rest)) = split else {
                    self.done = true;
                    return Some(Err(MalformedOptions {
                        offset: self.offset,
                    }));
                };
                self.rest = rest;
                self.offset = self.offset.saturating_add(2).saturating_add(data.len());
                Some(Ok(if kind == 0x02 {
                    AnnounceOption::UrlData(data)
                } else {
                    AnnounceOption::Unknown { kind, data }
                }))
            }
        }
    }
}

impl FusedIterator for AnnounceOptionsIter<'_> {}

/// A scrape request: header, then 20-byte info hashes.
///
/// `info_hashes` borrows the packet without copying and is already cut to
/// [`ParseLimits::max_scrape_hashes`]; duplicates are kept in request order (the reply must
/// have one row per requested hash, duplicates included).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ScrapeRequest<'a> {
    /// Must be validated by the server before anything is answered.
    pub connection_id: ConnectionId,
    /// Echoed in the reply.
    pub transaction_id: TransactionId,
    /// The requested hashes, in order, at most the parse limit.
    pub info_hashes: &'a [[u8; 20]],
    /// True if the packet carried more hashes than the limit (the rest were dropped).
    pub truncated: bool,
}

impl ScrapeRequest<'_> {
    /// The requested hashes as [`InfoHash`] values.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = InfoHash> + '_ {
        self.info_hashes.iter().map(|hash| InfoHash(*hash))
    }

    /// Length on the wire of what [`write`](Self::write) produces: 16 + 20 per hash kept.
    /// Hashes dropped by truncation are gone and not counted.
    pub fn encoded_len(&self) -> usize {
        SCRAPE_REQUEST_HEADER_LEN.saturating_add(self.info_hashes.len().saturating_mul(20))
    }

    /// Writes the request with the hashes in `info_hashes` and returns its length.
    /// `truncated` is not representable on the wire and is ignored; an empty hash list
    /// writes a request that [`Request::parse`] rejects (as real trackers may).
    pub fn write(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut w = Writer::new(out);
        w.u64(self.connection_id.0)?;
        w.u32(Action::Scrape.to_wire())?;
        w.u32(self.transaction_id.0)?;
        for hash in self.info_hashes {
            w.array(*hash)?;
        }
        Ok(w.finish())
    }

    fn read<'a>(
        connection_id: ConnectionId,
        transaction_id: TransactionId,
        r: &mut Reader<'a>,
        limits: &ParseLimits,
    ) -> Result<ScrapeRequest<'a>, MalformedReason> {
        let body = r.rest();
        if body.is_empty() {
            return Err(MalformedReason::ScrapeNoInfoHashes);
        }
        let (hashes, tail) = body.as_chunks::<20>();
        if !tail.is_empty() {
            return Err(MalformedReason::ScrapeTrailingBytes);
        }
        let kept = hashes.get(..limits.max_scrape_hashes).unwrap_or(hashes);
        Ok(ScrapeRequest {
            connection_id,
            transaction_id,
            info_hashes: kept,
            truncated: kept.len() < hashes.len(),
        })
    }
}

/// Most scrape rows fjord answers and fjord-bench asks for: a reply of 74 rows is
/// 8 + 74·12 = 896 bytes and its request 16 + 74·20 = 1,496 bytes, both within one 1,500-byte
/// Ethernet packet's payload. The default of [`ParseLimits::max_scrape_hashes`].
pub const MAX_SCRAPE_HASHES: usize = 74;

/// Limits applied while parsing, so that no reply can outgrow one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParseLimits {
    /// Hashes kept from one scrape request; the rest are dropped and
    /// [`ScrapeRequest::truncated`] is set. Default [`MAX_SCRAPE_HASHES`] (74 rows of 12 bytes
    /// plus the 8-byte header is 896 bytes). With 0 every scrape comes back empty and truncated.
    pub max_scrape_hashes: usize,
}

impl ParseLimits {
    /// The default limits ([`MAX_SCRAPE_HASHES`] scrape hashes).
    pub const DEFAULT: Self = Self {
        max_scrape_hashes: MAX_SCRAPE_HASHES,
    };
}

impl Default for ParseLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Any client → tracker message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Request<'a> {
    /// Action 0.
    Connect(ConnectRequest),
    /// Action 1.
    Announce(AnnounceRequest<'a>),
    /// Action 2.
    Scrape(ScrapeRequest<'a>),
}

impl<'a> Request<'a> {
    /// Parses one datagram. Never panics and never allocates; the result borrows `bytes`.
    ///
    /// Accepted: connect of ≥ 16 bytes with [`PROTOCOL_ID`] (trailing bytes ignored);
    /// announce of ≥ 98 bytes (bytes after 98 are BEP 41 options, parsed lazily and possibly
    /// malformed); scrape of exactly 16 + 20·n bytes with n ≥ 1 (cut to the limit).
    /// Everything else is a [`RequestError`], which says whether an error reply may be sent.
    pub fn parse(bytes: &'a [u8], limits: &ParseLimits) -> Result<Self, RequestError> {
        let mut r = Reader::new(bytes);
        let (Some(first), Some(action), Some(transaction_id)) = (r.u64(), r.u32(), r.u32()) else {
            return Err(RequestError::TooShort);
        };
        let transaction_id = TransactionId(transaction_id);
        let connection_id = ConnectionId(first);
        let action = Action::from_wire(action);
        let malformed = |reason| RequestError::Malformed {
            connection_id,
            transaction_id,
            action,
            reason,
        };
        match action {
            Action::Connect if first == PROTOCOL_ID => {
                Ok(Request::Connect(ConnectRequest { transaction_id }))
            }
            Action::Connect => Err(RequestError::BadProtocolId),
            Action::Announce => AnnounceRequest::read(connection_id, transaction_id, &mut r)
                .map(Request::Announce)
                .ok_or_else(|| malformed(MalformedReason::AnnounceTooShort)),
            Action::Scrape => ScrapeRequest::read(connection_id, transaction_id, &mut r, limits)
                .map(Request::Scrape)
                .map_err(malformed),
            Action::Error => Err(RequestError::ClientSentError),
            Action::Unknown(action) => Err(RequestError::UnknownAction { action }),
        }
    }

    /// Writes the request (as a client would) and returns its length. A connect request is
    /// written with [`PROTOCOL_ID`]; see [`ScrapeRequest::write`] for truncated scrapes.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        match self {
            Request::Connect(request) => request.write(out),
            Request::Announce(request) => request.write(out),
            Request::Scrape(request) => request.write(out),
        }
    }

    /// Length of what [`write`](Self::write) produces. For a parsed request this is the
    /// prefix of the datagram that was used: all of an announce, 16 bytes of a connect (the
    /// rest is ignored), and the header plus the kept hashes of a scrape.
    pub fn encoded_len(&self) -> usize {
        match self {
            Request::Connect(_) => CONNECT_REQUEST_LEN,
            Request::Announce(request) => request.encoded_len(),
            Request::Scrape(request) => request.encoded_len(),
        }
    }

    /// The transaction id to echo.
    pub fn transaction_id(&self) -> TransactionId {
        match self {
            Request::Connect(request) => request.transaction_id,
            Request::Announce(request) => request.transaction_id,
            Request::Scrape(request) => request.transaction_id,
        }
    }

    /// The action code of this request.
    pub fn action(&self) -> Action {
        match self {
            Request::Connect(_) => Action::Connect,
            Request::Announce(_) => Action::Announce,
            Request::Scrape(_) => Action::Scrape,
        }
    }
}

/// Why a request could not be parsed.
///
/// Only [`RequestError::Malformed`] carries what an error reply needs; every other variant
/// must be dropped silently (answering garbage, or an error with an error, builds
/// reflection and error-loop attacks, CVE-2024-2169).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum RequestError {
    /// Fewer than 16 bytes: drop.
    #[error("packet shorter than 16 bytes")]
    TooShort,
    /// Action 0 without the protocol id: drop.
    #[error("connect request with a wrong protocol id")]
    BadProtocolId,
    /// Action 3 (error) sent by a client: drop, never answer an error with an error.
    #[error("client sent an error packet (action 3)")]
    ClientSentError,
    /// An action code this crate does not know: drop.
    #[error("unknown action {action}")]
    UnknownAction {
        /// The action code as sent.
        action: u32,
    },
    /// An announce or scrape with a bad length. An error reply may be sent, but only after
    /// the server has validated `connection_id` for the source address.
    #[error("malformed {action:?} request: {reason}")]
    Malformed {
        /// The first 8 bytes, not yet validated.
        connection_id: ConnectionId,
        /// To echo in the error reply.
        transaction_id: TransactionId,
        /// The request's action ([`Action::Announce`] or [`Action::Scrape`]).
        action: Action,
        /// What is wrong.
        reason: MalformedReason,
    },
}

impl RequestError {
    /// What an error reply needs, when one *may* be sent (only for
    /// [`RequestError::Malformed`]). The server must still validate the connection id
    /// against the source address before sending anything.
    pub fn reply_context(&self) -> Option<ErrorReplyContext> {
        match *self {
            RequestError::Malformed {
                connection_id,
                transaction_id,
                reason,
                ..
            } => Some(ErrorReplyContext {
                connection_id,
                transaction_id,
                message: reason.message(),
            }),
            _ => None,
        }
    }

    /// A small fixed label for metrics: `"short"`, `"bad_protocol_id"`, `"client_error"`,
    /// `"unknown_action"` or `"malformed"`.
    pub fn label(&self) -> &'static str {
        match self {
            RequestError::TooShort => "short",
            RequestError::BadProtocolId => "bad_protocol_id",
            RequestError::ClientSentError => "client_error",
            RequestError::UnknownAction { .. } => "unknown_action",
            RequestError::Malformed { .. } => "malformed",
        }
    }
}

/// Why an announce or scrape is malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MalformedReason {
    /// Announce shorter than 98 bytes.
    AnnounceTooShort,
    /// Scrape with no info hash at all.
    ScrapeNoInfoHashes,
    /// Scrape whose length is not 16 + 20·n (a partial hash at the end).
    ScrapeTrailingBytes,
}

impl MalformedReason {
    /// The error message for the reply: ASCII, shorter than 40 bytes, never starting with
    /// NUL (libtorrent ignores error text that starts with a NUL byte).
    pub const fn message(self) -> &'static str {
        match self {
            MalformedReason::AnnounceTooShort => "announce too short",
            MalformedReason::ScrapeNoInfoHashes => "scrape without info hashes",
            MalformedReason::ScrapeTrailingBytes => "scrape length not 16 + 20n",
        }
    }
}

impl core::fmt::Display for MalformedReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.message())
    }
}

/// Everything an error reply to a malformed request needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ErrorReplyContext {
    /// Not validated: check it against the source address before replying.
    pub connection_id: ConnectionId,
    /// To echo.
    pub transaction_id: TransactionId,
    /// Short ASCII message, see [`MalformedReason::message`].
    pub message: &'static str,
}

impl ErrorReplyContext {
    /// The error response to send (after validating the connection id).
    pub fn response(&self) -> crate::ErrorResponse<'static> {
        crate::ErrorResponse {
            transaction_id: self.transaction_id,
            message: self.message.as_bytes(),
        }
    }
}
