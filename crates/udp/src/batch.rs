//! The receive and send batches: buffers allocated once, views handed out per datagram, and the
//! dispatch to the backend that moves them.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;

/// How datagrams are moved between a batch and the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `recvmmsg`/`sendmmsg` with packet info: one system call per batch (Linux only; asking
    /// for it elsewhere gives [`Backend::Portable`]).
    Mmsg,
    /// One `recvfrom`/`sendto` per datagram, no packet info.
    Portable,
}

impl Backend {
    /// The fastest backend of this platform.
    pub const fn best() -> Self {
        if cfg!(target_os = "linux") {
            Backend::Mmsg
        } else {
            Backend::Portable
        }
    }

    /// `self`, or [`Backend::Portable`] where `self` is not available.
    const fn available(self) -> Self {
        match self {
            Backend::Mmsg if cfg!(target_os = "linux") => Backend::Mmsg,
            _ => Backend::Portable,
        }
    }
}

impl Default for Backend {
    fn default() -> Self {
        Backend::best()
    }
}

/// The local address a datagram was sent to (from packet info), and so the address its reply
/// must leave from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LocalAddr {
    /// The local address the client sent to (for IPv4 the kernel's `ipi_spec_dst`: the
    /// destination for unicast, the interface's address for a broadcast destination).
    pub ip: IpAddr,
    /// Interface it arrived on (used for IPv6 replies, so link-local addresses work).
    pub ifindex: u32,
}

/// One received datagram, borrowed from its [`RecvBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// Its payload (at most the batch's slot length).
    pub data: &'a [u8],
    /// Who sent it.
    pub src: SocketAddr,
    /// Where it was sent to, when the socket has packet info enabled (Linux, [`Backend::Mmsg`]).
    pub dst: Option<LocalAddr>,
    /// It was longer than the slot and cut (see the crate docs for the portable backend).
    pub truncated: bool,
}

/// Per received datagram: its slot and what the kernel said about it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecvMeta {
    pub(crate) slot: usize,
    pub(crate) len: usize,
    pub(crate) src: SocketAddr,
    pub(crate) dst: Option<LocalAddr>,
    pub(crate) truncated: bool,
}

impl RecvMeta {
    const EMPTY: RecvMeta = RecvMeta {
        slot: 0,
        len: 0,
        src: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        dst: None,
        truncated: false,
    };
}

/// What both batches hold: `capacity` slots of `slot_len` bytes back to back, one `M` per slot,
/// how many are in use, and (Linux) the kernel headers that describe them.
struct Slots<M> {
    backend: Backend,
    slot_len: usize,
    data: Box<[u8]>,
    meta: Box<[M]>,
    len: usize,
    #[cfg(target_os = "linux")]
    headers: crate::mmsg::Headers,
}

impl<M: Copy> Slots<M> {
    fn new(capacity: usize, slot_len: usize, backend: Backend, empty: M) -> Self {
        let (capacity, slot_len) = (capacity.max(1), slot_len.max(1));
        Slots {
            backend: backend.available(),
            slot_len,
            data: vec![0; capacity * slot_len].into_boxed_slice(),
            meta: vec![empty; capacity].into_boxed_slice(),
            len: 0,
            #[cfg(target_os = "linux")]
            headers: crate::mmsg::Headers::new(capacity),
        }
    }
}

impl<M> std::fmt::Debug for Slots<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("backend", &self.backend)
            .field("capacity", &self.meta.len())
            .field("slot_len", &self.slot_len)
            .field("len", &self.len)
            .finish()
    }
}

/// Buffers for up to `capacity` datagrams of up to `slot_len` bytes each, received with one
/// system call ([`Backend::Mmsg`]) or one per datagram ([`Backend::Portable`]).
#[derive(Debug)]
pub struct RecvBatch {
    /// `meta[..len]` describe the datagrams of the last receive.
    slots: Slots<RecvMeta>,
}

impl RecvBatch {
    /// Room for `capacity` datagrams (at least 1) of `slot_len` bytes (at least 1), with the
    /// platform's best backend.
    pub fn new(capacity: usize, slot_len: usize) -> Self {
        Self::with_backend(capacity, slot_len, Backend::best())
    }

    /// As [`RecvBatch::new`], with the given backend (see [`Backend`]).
    pub fn with_backend(capacity: usize, slot_len: usize, backend: Backend) -> Self {
        RecvBatch {
            slots: Slots::new(capacity, slot_len, backend, RecvMeta::EMPTY),
        }
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.slots.backend
    }

    /// Most datagrams one [`RecvBatch::recv`] returns.
    pub fn capacity(&self) -> usize {
        self.slots.meta.len()
    }

    /// Receives up to [`RecvBatch::capacity`] datagrams without blocking and returns how many;
    /// `Err(WouldBlock)` when none is waiting. The previous batch's views are gone.
    pub fn recv(&mut self, socket: &impl AsFd) -> io::Result<usize> {
        let s = &mut self.slots;
        s.len = 0;
        let fd = socket.as_fd();
        let n = match s.backend {
            #[cfg(target_os = "linux")]
            Backend::Mmsg => {
                crate::mmsg::recv(fd, &mut s.data, s.slot_len, &mut s.headers, &mut s.meta)?
            }
            _ => crate::portable::recv(fd, &mut s.data, s.slot_len, &mut s.meta)?,
        };
        s.len = n;
        Ok(n)
    }

    /// Datagrams of the last [`RecvBatch::recv`].
    pub fn len(&self) -> usize {
        self.slots.len
    }

    /// Whether the last receive returned nothing (or none was made).
    pub fn is_empty(&self) -> bool {
        self.slots.len == 0
    }

    /// The `i`-th datagram of the last receive. Panics if `i >= self.len()`.
    #[inline]
    pub fn get(&self, i: usize) -> Datagram<'_> {
        let s = &self.slots;
        let m = &s.meta[..s.len][i];
        let start = m.slot * s.slot_len;
        Datagram {
            data: &s.data[start..start + m.len],
            src: m.src,
            dst: m.dst,
            truncated: m.truncated,
        }
    }

    /// The datagrams of the last receive, in arrival order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Datagram<'_>> + '_ {
        (0..self.slots.len).map(|i| self.get(i))
    }
}

/// What one [`SendBatch::send`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SendReport {
    /// Datagrams handed to the kernel.
    pub sent: usize,
    /// Their payload bytes.
    pub sent_bytes: usize,
    /// Datagrams dropped because the send buffer was full (EAGAIN).
    pub would_block: usize,
    /// Datagrams dropped for another error (e.g. no route, connection refused).
    pub errors: usize,
    /// Send system calls made (one per batch with [`Backend::Mmsg`] when nothing fails).
    pub calls: usize,
}

/// Why a queued datagram was not sent (see [`SendBatch::send`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsent {
    /// The socket's send buffer was full; this and every later datagram of the batch.
    WouldBlock,
    /// The kernel refused this datagram (the OS error code); the next ones were still tried.
    Error(i32),
}

/// Per queued datagram: its length, where it goes and where it leaves from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SendMeta {
    pub(crate) len: usize,
    /// `None` on a connected socket.
    pub(crate) dst: Option<SocketAddr>,
    pub(crate) src: Option<LocalAddr>,
}

/// Datagrams queued for one send: written in place with [`SendBatch::next_buf`], queued with
/// [`SendBatch::push`] (or [`SendBatch::push_connected`]) and sent with [`SendBatch::send`].
#[derive(Debug)]
pub struct SendBatch {
    /// `meta[..len]` describe the queued datagrams.
    slots: Slots<SendMeta>,
}

impl SendBatch {
    /// Room for `capacity` datagrams (at least 1) of up to `slot_len` bytes (at least 1), with
    /// the platform's best backend.
    pub fn new(capacity: usize, slot_len: usize) -> Self {
        Self::with_backend(capacity, slot_len, Backend::best())
    }

    /// As [`SendBatch::new`], with the given backend (see [`Backend`]).
    pub fn with_backend(capacity: usize, slot_len: usize, backend: Backend) -> Self {
        let empty = SendMeta {
            len: 0,
            dst: None,
            src: None,
        };
        SendBatch {
            slots: Slots::new(capacity, slot_len, backend, empty),
        }
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.slots.backend
    }

    /// Most datagrams queued at once.
    pub fn capacity(&self) -> usize {
        self.slots.meta.len()
    }

    /// Datagrams queued.
    pub fn len(&self) -> usize {
        self.slots.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.slots.len == 0
    }

    /// Whether [`SendBatch::next_buf`] would return `None`.
    pub fn is_full(&self) -> bool {
        self.slots.len == self.slots.meta.len()
    }

    /// The buffer of the next datagram (`slot_len` bytes, contents unspecified), or `None` when
    /// the batch is full (send first). Writing into it queues nothing: call a `push` method.
    #[inline]
    pub fn next_buf(&mut self) -> Option<&mut [u8]> {
        if self.is_full() {
            return None;
        }
        let s = &mut self.slots;
        let start = s.len * s.slot_len;
        Some(&mut s.data[start..start + s.slot_len])
    }

    /// Queues the first `len` bytes written into the last [`SendBatch::next_buf`] for `dst`,
    /// leaving from `src` when given (packet info; ignored by [`Backend::Portable`]). A `len`
    /// beyond the slot is cut to the slot; on a full batch nothing is queued.
    #[inline]
    pub fn push(&mut self, len: usize, dst: SocketAddr, src: Option<LocalAddr>) {
        self.queue(len, Some(dst), src);
    }

    /// Queues the datagram written into the last [`SendBatch::next_buf`] for the peer of a
    /// connected socket.
    #[inline]
    pub fn push_connected(&mut self, len: usize) {
        self.queue(len, None, None);
    }

    fn queue(&mut self, len: usize, dst: Option<SocketAddr>, src: Option<LocalAddr>) {
        let s = &mut self.slots;
        debug_assert!(len <= s.slot_len, "datagram longer than its slot");
        let Some(m) = s.meta.get_mut(s.len) else {
            debug_assert!(false, "push on a full SendBatch");
            return;
        };
        *m = SendMeta {
            len: len.min(s.slot_len),
            dst,
            src,
        };
        s.len += 1;
    }

    /// Sends everything queued, in order, never blocking, and empties the batch. For each
    /// datagram not sent, `unsent(index, why)` is called (index in push order): on EAGAIN the
    /// rest of the batch is dropped, another error skips just that datagram.
    pub fn send(&mut self, socket: &impl AsFd, unsent: impl FnMut(usize, Unsent)) -> SendReport {
        let s = &mut self.slots;
        let n = std::mem::take(&mut s.len);
        if n == 0 {
            return SendReport::default();
        }
        let fd = socket.as_fd();
        let meta = &s.meta[..n];
        match s.backend {
            #[cfg(target_os = "linux")]
            Backend::Mmsg => {
                crate::mmsg::send(fd, &s.data, s.slot_len, meta, &mut s.headers, unsent)
            }
            _ => crate::portable::send(fd, &s.data, s.slot_len, meta, unsent),
        }
    }

    /// Drops everything queued without sending it.
    pub fn clear(&mut self) {
        self.slots.len = 0;
    }
}

/// Calls `unsent` for the datagrams `from..n`, all dropped for a full send buffer; returns
/// how many.
pub(crate) fn drop_rest(from: usize, n: usize, unsent: &mut impl FnMut(usize, Unsent)) -> usize {
    for i in from..n {
        unsent(i, Unsent::WouldBlock);
    }
    n - from
}

/// The error code of an `io::Error` for [`Unsent::Error`] (0 when it has none).
pub(crate) fn os_code(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}
