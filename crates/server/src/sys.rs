//! The only module with platform system calls: batched UDP receive/send (`recvmmsg` /
//! `sendmmsg` with `IP_PKTINFO` / `IPV6_PKTINFO` on Linux, plain `recv_from` / `send_to`
//! elsewhere), the socket options that enable packet info, and privilege dropping.
//!
//! Every libc call that returns -1 on error goes through [`syscall!`], which turns -1 into
//! `io::Error::last_os_error()`. Every `unsafe` block says why it is sound.
//!
//! Packet info: a socket bound to a wildcard address (`0.0.0.0`, `::`) learns, for each
//! datagram, the local address it was sent to, and puts that address back as the source of the
//! reply. Without it a multi-homed host answers from whatever address the routing table picks,
//! and clients (which match replies by address) drop the answer.

use std::io;
use std::net::{IpAddr, SocketAddr};

/// Largest datagram read in full; longer ones are truncated (no valid request is longer than
/// 16 + 74·20 = 1,496 bytes of scrape, or an announce with ~1,900 bytes of BEP 41 options).
pub const MAX_DATAGRAM: usize = 2048;

/// Room for one reply: the largest is 1,220 bytes (200 IPv4 peers).
pub const MAX_REPLY: usize = 1280;

/// Where a datagram was addressed to (from packet info).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalAddr {
    /// The local address the client sent to; the reply's source.
    pub ip: IpAddr,
    /// Interface it arrived on (used for IPv6 replies, so link-local addresses work).
    pub ifindex: u32,
}

/// `syscall!(f(args))`: calls `libc::f(args)` (the caller provides the `unsafe` block and its
/// justification) and maps a -1 result to the last OS error.
#[cfg(unix)]
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        let res = libc::$fn($($arg),*);
        if res == -1 { Err(std::io::Error::last_os_error()) } else { Ok(res) }
    }};
}

/// What one [`SendBatch::flush`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SendReport {
    /// Datagrams handed to the kernel.
    pub sent: usize,
    /// Their payload bytes.
    pub sent_bytes: usize,
    /// Replies dropped because the send buffer was full (EAGAIN).
    pub would_block: usize,
    /// Replies dropped for another error.
    pub errors: usize,
    /// Send system calls made (one per batch on Linux).
    pub calls: usize,
}

#[cfg(target_os = "linux")]
pub use linux::{RecvBatch, SendBatch, enable_packet_info};

#[cfg(not(target_os = "linux"))]
pub use portable::{RecvBatch, SendBatch, enable_packet_info};

#[cfg(target_os = "linux")]
mod linux {
    use super::*;
    use std::mem::{size_of, zeroed};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::AsRawFd;

    /// Control-message buffer, aligned for `cmsghdr`; large enough for one `in6_pktinfo`
    /// (CMSG_SPACE(20) = 40 on 64-bit Linux) or one `in_pktinfo` (32).
    #[derive(Clone, Copy)]
    #[repr(C, align(8))]
    struct Control([u8; 64]);

    /// Asks the kernel to report each datagram's destination address (IP_PKTINFO /
    /// IPV6_RECVPKTINFO). Call for sockets bound to a wildcard address.
    pub fn enable_packet_info(socket: &impl AsRawFd, ipv6: bool) -> io::Result<()> {
        let on: libc::c_int = 1;
        let (level, name) = if ipv6 {
            (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)
        } else {
            (libc::IPPROTO_IP, libc::IP_PKTINFO)
        };
        // SAFETY: the fd is an open socket owned by `socket`; the option value points to a live
        // c_int and its exact size is passed.
        unsafe {
            syscall!(setsockopt(
                socket.as_raw_fd(),
                level,
                name,
                (&on as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            ))?;
        }
        Ok(())
    }

    fn to_sockaddr(addr: &SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
        match addr {
            SocketAddr::V4(a) => {
                // SAFETY: sockaddr_storage is large enough and suitably aligned for sockaddr_in.
                let sin = unsafe {
                    &mut *(storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
                };
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = a.port().to_be();
                sin.sin_addr = libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                };
                sin.sin_zero = [0; 8];
                size_of::<libc::sockaddr_in>() as libc::socklen_t
            }
            SocketAddr::V6(a) => {
                // SAFETY: sockaddr_storage is large enough and suitably aligned for sockaddr_in6.
                let sin6 = unsafe {
                    &mut *(storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
                };
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_flowinfo = a.flowinfo();
                sin6.sin6_addr = libc::in6_addr {
                    s6_addr: a.ip().octets(),
                };
                sin6.sin6_scope_id = a.scope_id();
                size_of::<libc::sockaddr_in6>() as libc::socklen_t
            }
        }
    }

    fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
        match storage.ss_family as libc::c_int {
            libc::AF_INET => {
                // SAFETY: the family says the kernel wrote a sockaddr_in, which fits in storage.
                let sin = unsafe {
                    &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>()
                };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says the kernel wrote a sockaddr_in6, which fits in storage.
                let sin6 = unsafe {
                    &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
                };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    /// Buffers for receiving up to `batch` datagrams with one `recvmmsg`.
    pub struct RecvBatch {
        bufs: Vec<[u8; MAX_DATAGRAM]>,
        addrs: Vec<libc::sockaddr_storage>,
        controls: Vec<Control>,
        iovs: Vec<libc::iovec>,
        hdrs: Vec<libc::mmsghdr>,
        /// Per received datagram: (buffer slot, source, local address). The length is kept in
        /// the slot's iovec.
        meta: Vec<(usize, SocketAddr, Option<LocalAddr>)>,
    }

    // SAFETY: the raw pointers inside `iovs`/`hdrs` only ever point into this struct's own heap
    // buffers and are rewritten before each use; nothing is shared between threads.
    unsafe impl Send for RecvBatch {}

    impl RecvBatch {
        /// Room for `batch` datagrams.
        pub fn new(batch: usize) -> Self {
            let batch = batch.max(1);
            RecvBatch {
                bufs: vec![[0; MAX_DATAGRAM]; batch],
                // SAFETY: all-zero bytes are a valid sockaddr_storage.
                addrs: vec![unsafe { zeroed() }; batch],
                controls: vec![Control([0; 64]); batch],
                iovs: Vec::with_capacity(batch),
                hdrs: Vec::with_capacity(batch),
                meta: Vec::with_capacity(batch),
            }
        }

        /// Receives up to `batch` datagrams without blocking. `Err(WouldBlock)` when none is
        /// waiting. Datagrams with an unknown address family are skipped.
        pub fn recv(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
            let n = self.bufs.len();
            self.iovs.clear();
            self.hdrs.clear();
            self.meta.clear();
            for i in 0..n {
                self.iovs.push(libc::iovec {
                    iov_base: self.bufs[i].as_mut_ptr().cast(),
                    iov_len: MAX_DATAGRAM,
                });
            }
            for i in 0..n {
                // SAFETY: all-zero bytes are a valid mmsghdr (null pointers, zero lengths).
                let mut h: libc::mmsghdr = unsafe { zeroed() };
                h.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
                h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                h.msg_hdr.msg_iov = &mut self.iovs[i];
                h.msg_hdr.msg_iovlen = 1;
                h.msg_hdr.msg_control = self.controls[i].0.as_mut_ptr().cast();
                h.msg_hdr.msg_controllen = 64;
                self.hdrs.push(h);
            }
            // SAFETY: `hdrs` holds `n` initialised mmsghdr whose name, iovec and control pointers
            // point into `addrs`, `bufs` and `controls`, which live (unmoved) for the whole call
            // and have the lengths given. MSG_DONTWAIT makes the call non-blocking; a null timeout
            // is allowed.
            let got = unsafe {
                syscall!(recvmmsg(
                    socket.as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT as _,
                    std::ptr::null_mut(),
                ))?
            } as usize;
            for i in 0..got {
                let h = &self.hdrs[i];
                let Some(src) = from_sockaddr(&self.addrs[i]) else {
                    continue;
                };
                let len = (h.msg_len as usize).min(MAX_DATAGRAM);
                let local = parse_packet_info(&h.msg_hdr);
                self.meta.push((i, src, local));
                self.iovs[i].iov_len = len;
            }
            Ok(self.meta.len())
        }

        /// The `i`-th datagram of the last `recv`: payload, source, local address.
        pub fn get(&self, i: usize) -> (&[u8], SocketAddr, Option<LocalAddr>) {
            let (slot, src, local) = self.meta[i];
            (&self.bufs[slot][..self.iovs[slot].iov_len], src, local)
        }
    }

    fn parse_packet_info(msg: &libc::msghdr) -> Option<LocalAddr> {
        // SAFETY: `msg` was filled by recvmmsg: msg_control/msg_controllen describe the control
        // bytes the kernel wrote into our aligned buffer, which CMSG_FIRSTHDR/NXTHDR walk
        // without leaving it.
        let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(msg) };
        while !cmsg.is_null() {
            // SAFETY: non-null cmsg pointers from CMSG_FIRSTHDR/NXTHDR point to a complete
            // cmsghdr inside the control buffer.
            let c = unsafe { &*cmsg };
            if c.cmsg_level == libc::IPPROTO_IP && c.cmsg_type == libc::IP_PKTINFO {
                // SAFETY: an IP_PKTINFO message carries one in_pktinfo; read_unaligned because
                // CMSG_DATA gives no alignment guarantee for the payload type.
                let info: libc::in_pktinfo =
                    unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast()) };
                // ipi_spec_dst is the local address to answer from: the destination for
                // unicast, the interface's address for a broadcast destination (which could not
                // be a reply's source).
                return Some(LocalAddr {
                    ip: IpAddr::V4(Ipv4Addr::from(info.ipi_spec_dst.s_addr.to_ne_bytes())),
                    ifindex: info.ipi_ifindex as u32,
                });
            }
            if c.cmsg_level == libc::IPPROTO_IPV6 && c.cmsg_type == libc::IPV6_PKTINFO {
                // SAFETY: an IPV6_PKTINFO message carries one in6_pktinfo (see above).
                let info: libc::in6_pktinfo =
                    unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast()) };
                return Some(LocalAddr {
                    ip: IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)),
                    ifindex: info.ipi6_ifindex,
                });
            }
            // SAFETY: as for CMSG_FIRSTHDR; returns null after the last message.
            cmsg = unsafe { libc::CMSG_NXTHDR(msg, cmsg) };
        }
        None
    }

    /// Replies queued for one `sendmmsg`.
    pub struct SendBatch {
        bufs: Vec<[u8; MAX_REPLY]>,
        lens: Vec<usize>,
        dsts: Vec<SocketAddr>,
        locals: Vec<Option<LocalAddr>>,
        addrs: Vec<libc::sockaddr_storage>,
        controls: Vec<Control>,
        iovs: Vec<libc::iovec>,
        hdrs: Vec<libc::mmsghdr>,
    }

    // SAFETY: as for RecvBatch: internal pointers only, rewritten before each use.
    unsafe impl Send for SendBatch {}

    impl SendBatch {
        /// Room for `batch` replies.
        pub fn new(batch: usize) -> Self {
            let batch = batch.max(1);
            SendBatch {
                bufs: vec![[0; MAX_REPLY]; batch],
                lens: Vec::with_capacity(batch),
                dsts: Vec::with_capacity(batch),
                locals: Vec::with_capacity(batch),
                // SAFETY: all-zero bytes are a valid sockaddr_storage.
                addrs: vec![unsafe { zeroed() }; batch],
                controls: vec![Control([0; 64]); batch],
                iovs: Vec::with_capacity(batch),
                hdrs: Vec::with_capacity(batch),
            }
        }

        /// Buffer for the next reply, or None when the batch is full (flush first).
        pub fn next_buf(&mut self) -> Option<&mut [u8]> {
            let i = self.lens.len();
            self.bufs.get_mut(i).map(|b| &mut b[..])
        }

        /// Queues the reply written into the last `next_buf`.
        pub fn push(&mut self, len: usize, dst: SocketAddr, local: Option<LocalAddr>) {
            debug_assert!(self.lens.len() < self.bufs.len() && len <= MAX_REPLY);
            self.lens.push(len);
            self.dsts.push(dst);
            self.locals.push(local);
        }

        /// Replies queued.
        pub fn len(&self) -> usize {
            self.lens.len()
        }

        /// Whether nothing is queued.
        pub fn is_empty(&self) -> bool {
            self.lens.is_empty()
        }

        /// Sends everything queued, never blocking: on EAGAIN the rest is dropped and counted.
        pub fn flush(&mut self, socket: &impl AsRawFd) -> SendReport {
            let n = self.lens.len();
            let mut report = SendReport::default();
            if n == 0 {
                return report;
            }
            self.iovs.clear();
            self.hdrs.clear();
            for i in 0..n {
                self.iovs.push(libc::iovec {
                    iov_base: self.bufs[i].as_mut_ptr().cast(),
                    iov_len: self.lens[i],
                });
            }
            for i in 0..n {
                let namelen = to_sockaddr(&self.dsts[i], &mut self.addrs[i]);
                // SAFETY: all-zero bytes are a valid mmsghdr.
                let mut h: libc::mmsghdr = unsafe { zeroed() };
                h.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
                h.msg_hdr.msg_namelen = namelen;
                h.msg_hdr.msg_iov = &mut self.iovs[i];
                h.msg_hdr.msg_iovlen = 1;
                if let Some(local) = self.locals[i] {
                    let len = write_packet_info(&mut self.controls[i], local);
                    h.msg_hdr.msg_control = self.controls[i].0.as_mut_ptr().cast();
                    h.msg_hdr.msg_controllen = len as _;
                }
                self.hdrs.push(h);
            }
            let mut done = 0;
            while done < n {
                report.calls += 1;
                // SAFETY: hdrs[done..n] are initialised mmsghdr whose pointers point into
                // `addrs`, `iovs`/`bufs` and `controls`, alive and unmoved during the call.
                let res = unsafe {
                    syscall!(sendmmsg(
                        socket.as_raw_fd(),
                        self.hdrs.as_mut_ptr().add(done),
                        (n - done) as libc::c_uint,
                        libc::MSG_DONTWAIT as _,
                    ))
                };
                match res {
                    Ok(0) => {
                        report.errors += n - done;
                        break;
                    }
                    Ok(k) => {
                        let k = k as usize;
                        report.sent += k;
                        report.sent_bytes += self.lens[done..done + k].iter().sum::<usize>();
                        done += k;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        report.would_block += n - done;
                        break;
                    }
                    Err(_) => {
                        // The first remaining datagram failed (e.g. no route): skip it.
                        report.errors += 1;
                        done += 1;
                    }
                }
            }
            self.lens.clear();
            self.dsts.clear();
            self.locals.clear();
            report
        }
    }

    fn write_packet_info(control: &mut Control, local: LocalAddr) -> usize {
        control.0 = [0; 64];
        let mut msg: libc::msghdr =
            // SAFETY: all-zero bytes are a valid msghdr.
            unsafe { zeroed() };
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = 64;
        // SAFETY: msg_control points to our 64-byte aligned buffer, which has room for one
        // cmsghdr and the pktinfo payload (CMSG_SPACE ≤ 40 checked below); CMSG_DATA is written
        // with write_unaligned.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            debug_assert!(!cmsg.is_null());
            match local.ip {
                IpAddr::V4(ip) => {
                    let size = size_of::<libc::in_pktinfo>() as u32;
                    debug_assert!(libc::CMSG_SPACE(size) as usize <= 64);
                    (*cmsg).cmsg_level = libc::IPPROTO_IP;
                    (*cmsg).cmsg_type = libc::IP_PKTINFO;
                    (*cmsg).cmsg_len = libc::CMSG_LEN(size) as _;
                    let info = libc::in_pktinfo {
                        ipi_ifindex: 0,
                        ipi_spec_dst: libc::in_addr {
                            s_addr: u32::from_ne_bytes(ip.octets()),
                        },
                        ipi_addr: libc::in_addr { s_addr: 0 },
                    };
                    std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast(), info);
                    libc::CMSG_SPACE(size) as usize
                }
                IpAddr::V6(ip) => {
                    let size = size_of::<libc::in6_pktinfo>() as u32;
                    debug_assert!(libc::CMSG_SPACE(size) as usize <= 64);
                    (*cmsg).cmsg_level = libc::IPPROTO_IPV6;
                    (*cmsg).cmsg_type = libc::IPV6_PKTINFO;
                    (*cmsg).cmsg_len = libc::CMSG_LEN(size) as _;
                    let info = libc::in6_pktinfo {
                        ipi6_addr: libc::in6_addr {
                            s6_addr: ip.octets(),
                        },
                        ipi6_ifindex: local.ifindex,
                    };
                    std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast(), info);
                    libc::CMSG_SPACE(size) as usize
                }
            }
        }
    }
}

/// Portable fallback: one `recv_from` / `send_to` per datagram, no packet info (replies on a
/// wildcard bind leave from the address the routing table picks). Also compiled (and tested) on
/// Linux under `cfg(test)` so that it cannot rot.
#[cfg(any(not(target_os = "linux"), test))]
#[cfg_attr(target_os = "linux", allow(dead_code))]
pub(crate) mod portable {
    use super::*;

    /// Packet info is not supported by the portable fallback.
    pub fn enable_packet_info<T: ?Sized>(_socket: &T, _ipv6: bool) -> io::Result<()> {
        Ok(())
    }

    /// Buffers for up to `batch` datagrams.
    pub struct RecvBatch {
        bufs: Vec<[u8; MAX_DATAGRAM]>,
        meta: Vec<(usize, SocketAddr)>,
    }

    impl RecvBatch {
        /// Room for `batch` datagrams.
        pub fn new(batch: usize) -> Self {
            RecvBatch {
                bufs: vec![[0; MAX_DATAGRAM]; batch.max(1)],
                meta: Vec::new(),
            }
        }
        /// Receives until `batch` datagrams or WouldBlock; `Err(WouldBlock)` if none.
        pub fn recv(&mut self, socket: &mio::net::UdpSocket) -> io::Result<usize> {
            self.meta.clear();
            for i in 0..self.bufs.len() {
                match socket.recv_from(&mut self.bufs[i]) {
                    Ok((len, src)) => self.meta.push((len, src)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock && i > 0 => break,
                    Err(e) => return Err(e),
                }
            }
            Ok(self.meta.len())
        }
        /// The `i`-th datagram of the last `recv`.
        pub fn get(&self, i: usize) -> (&[u8], SocketAddr, Option<LocalAddr>) {
            let (len, src) = self.meta[i];
            (&self.bufs[i][..len], src, None)
        }
    }

    /// Replies queued for sending.
    pub struct SendBatch {
        bufs: Vec<[u8; MAX_REPLY]>,
        queued: Vec<(usize, SocketAddr)>,
    }

    impl SendBatch {
        /// Room for `batch` replies.
        pub fn new(batch: usize) -> Self {
            SendBatch {
                bufs: vec![[0; MAX_REPLY]; batch.max(1)],
                queued: Vec::new(),
            }
        }
        /// Buffer for the next reply, or None when full.
        pub fn next_buf(&mut self) -> Option<&mut [u8]> {
            let i = self.queued.len();
            self.bufs.get_mut(i).map(|b| &mut b[..])
        }
        /// Queues the reply written into the last `next_buf`.
        pub fn push(&mut self, len: usize, dst: SocketAddr, _local: Option<LocalAddr>) {
            self.queued.push((len, dst));
        }
        /// Replies queued.
        pub fn len(&self) -> usize {
            self.queued.len()
        }
        /// Whether nothing is queued.
        pub fn is_empty(&self) -> bool {
            self.queued.is_empty()
        }
        /// Sends everything queued without blocking.
        pub fn flush(&mut self, socket: &mio::net::UdpSocket) -> SendReport {
            let mut r = SendReport::default();
            let n = self.queued.len();
            for (i, &(len, dst)) in self.queued.iter().enumerate() {
                r.calls += 1;
                match socket.send_to(&self.bufs[i][..len], dst) {
                    Ok(_) => {
                        r.sent += 1;
                        r.sent_bytes += len;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        r.would_block += n - i;
                        break;
                    }
                    Err(_) => r.errors += 1,
                }
            }
            self.queued.clear();
            r
        }
    }
}

/// Switches to `user` and/or `group` (names) after the sockets are bound: supplementary groups
/// are cleared to the one group, then `setgid`, then `setuid`. An empty name leaves that id as
/// it is (an empty group with a user takes the user's primary group).
#[cfg(unix)]
pub fn drop_privileges(user: &str, group: &str) -> io::Result<()> {
    if user.is_empty() && group.is_empty() {
        return Ok(());
    }
    let user_ids = if user.is_empty() {
        None
    } else {
        Some(lookup_user(user)?)
    };
    let gid = if !group.is_empty() {
        Some(lookup_group(group)?)
    } else {
        user_ids.map(|(_, g)| g)
    };
    if let Some(gid) = gid {
        // SAFETY: setgroups reads one gid_t from a live local; setgid takes a plain value.
        unsafe {
            syscall!(setgroups(1, &gid))?;
            syscall!(setgid(gid))?;
        }
    }
    if let Some((uid, _)) = user_ids {
        // SAFETY: setuid takes a plain value. glibc applies it to every thread of the process.
        unsafe {
            syscall!(setuid(uid))?;
        }
        // SAFETY: getuid/geteuid cannot fail.
        let (now, eff) = unsafe { (libc::getuid(), libc::geteuid()) };
        if now != uid || eff != uid {
            return Err(io::Error::other("setuid did not take effect"));
        }
    }
    Ok(())
}

/// Looks `name` up with a reentrant `getpwnam_r`/`getgrnam_r`-style function `get` and
/// returns `read(entry)`, called while the string buffer the entry points into is alive.
///
/// # Safety
/// `get` must be a `get*nam_r` function for entries of type `T`: it fills `entry` (whose
/// pointers refer into the buffer), sets `*result` to `entry` or null, and returns an error
/// number. `T` must be a plain C struct for which all-zero bytes are valid (null pointers).
#[cfg(unix)]
unsafe fn lookup_entry<T, R>(
    name: &str,
    what: &str,
    buf_len: usize,
    get: unsafe extern "C" fn(
        *const libc::c_char,
        *mut T,
        *mut libc::c_char,
        libc::size_t,
        *mut *mut T,
    ) -> libc::c_int,
    read: impl FnOnce(&T) -> R,
) -> io::Result<R> {
    let cname = std::ffi::CString::new(name).map_err(io::Error::other)?;
    let mut buf = vec![0 as libc::c_char; buf_len];
    // SAFETY: per the contract, all-zero bytes are a valid `T`.
    let mut entry: T = unsafe { std::mem::zeroed() };
    let mut result: *mut T = std::ptr::null_mut();
    // SAFETY: every pointer refers to a live local; `buf.len()` is the buffer's real size; `get`
    // is a `get*nam_r` function per the contract. It returns an error number (not -1), so it
    // does not go through syscall!.
    let rc = unsafe {
        get(
            cname.as_ptr(),
            &mut entry,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    if result.is_null() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no {what} named {name:?}"),
        ));
    }
    Ok(read(&entry))
}

#[cfg(unix)]
fn lookup_user(name: &str) -> io::Result<(libc::uid_t, libc::gid_t)> {
    // SAFETY: getpwnam_r fills a `passwd`, for which all-zero bytes are valid.
    unsafe {
        lookup_entry(
            name,
            "user",
            16 * 1024,
            libc::getpwnam_r,
            |p: &libc::passwd| (p.pw_uid, p.pw_gid),
        )
    }
}

#[cfg(unix)]
fn lookup_group(name: &str) -> io::Result<libc::gid_t> {
    // SAFETY: getgrnam_r fills a `group`, for which all-zero bytes are valid.
    unsafe {
        lookup_entry(
            name,
            "group",
            64 * 1024,
            libc::getgrnam_r,
            |g: &libc::group| g.gr_gid,
        )
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn user_and_group_lookups() {
        assert_eq!(lookup_user("root").unwrap(), (0, 0));
        assert_eq!(lookup_group("root").unwrap(), 0);
        for e in [
            lookup_user("no-such-user-fjord").unwrap_err(),
            lookup_group("no-such-group-fjord").unwrap_err(),
        ] {
            assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        }
        assert!(lookup_user("nul\0inside").is_err());
    }

    #[test]
    fn batch_round_trip_with_packet_info() {
        let server = UdpSocket::bind("0.0.0.0:0").unwrap();
        server.set_nonblocking(true).unwrap();
        enable_packet_info(&server, false).unwrap();
        let port = server.local_addr().unwrap().port();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut rx = RecvBatch::new(8);
        assert_eq!(
            rx.recv(&server).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        for i in 0..3u8 {
            client.send_to(&[i; 20], ("127.0.0.2", port)).unwrap();
        }
        let mut got = 0;
        let mut tx = SendBatch::new(8);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got < 3 && std::time::Instant::now() < deadline {
            match rx.recv(&server) {
                Ok(n) => {
                    for i in 0..n {
                        let (data, src, local) = rx.get(i);
                        assert_eq!(data.len(), 20);
                        assert_eq!(src, client.local_addr().unwrap());
                        assert_eq!(local.unwrap().ip, "127.0.0.2".parse::<IpAddr>().unwrap());
                        let buf = tx.next_buf().unwrap();
                        buf[..5].copy_from_slice(&data[..5]);
                        tx.push(5, src, local);
                        got += 1;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, 3);
        let r = tx.flush(&server);
        assert_eq!(
            (r.sent, r.sent_bytes, r.would_block, r.errors, r.calls),
            (3, 15, 0, 0, 1)
        );
        let mut buf = [0; 64];
        for _ in 0..3 {
            let (n, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!(n, 5);
            assert_eq!(
                from,
                SocketAddr::from(([127, 0, 0, 2], port)),
                "reply from the address asked"
            );
        }
    }
}

#[cfg(test)]
mod portable_tests {
    use super::portable::{RecvBatch, SendBatch};
    use std::io;

    #[test]
    fn portable_fallback_round_trip() {
        let server = mio::net::UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = server.local_addr().unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut rx = RecvBatch::new(4);
        let mut tx = SendBatch::new(4);
        assert_eq!(
            rx.recv(&server).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        client.send_to(b"hello", addr).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let n = loop {
            match rx.recv(&server) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline);
                    std::thread::yield_now();
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(n, 1);
        let (data, src, local) = rx.get(0);
        assert_eq!(
            (data, src, local),
            (&b"hello"[..], client.local_addr().unwrap(), None)
        );
        tx.next_buf().unwrap()[..2].copy_from_slice(b"ok");
        tx.push(2, src, None);
        assert_eq!(tx.len(), 1);
        let r = tx.flush(&server);
        assert_eq!((r.sent, r.sent_bytes), (1, 2));
        let mut buf = [0; 8];
        assert_eq!(client.recv_from(&mut buf).unwrap(), (2, addr));
    }
}
