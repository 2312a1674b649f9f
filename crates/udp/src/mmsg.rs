//! The Linux backend: `recvmmsg`/`sendmmsg` with `IP_PKTINFO`/`IPV6_PKTINFO` control messages,
//! and the socket's drop counter (`SO_MEMINFO`). The only module of fjord-udp with `unsafe` code.
//!
//! Every libc call that returns -1 on error goes through [`syscall!`]; each `unsafe` block says
//! why its pointers are valid. The message headers are rebuilt before every call from the
//! batch's own buffers (a few stores per datagram), so no pointer outlives the borrow it was
//! made from.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::batch::{LocalAddr, RecvMeta, SendMeta, SendReport, Unsent, drop_rest, os_code};

/// `syscall!(f(args))`: calls `libc::f(args)` (the caller writes the `unsafe` block and its
/// justification) and maps a -1 result to the thread's last OS error.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        let res = libc::$fn($($arg),*);
        if res == -1 { Err(std::io::Error::last_os_error()) } else { Ok(res) }
    }};
}

/// Room for the control message of one datagram: an `in6_pktinfo` (CMSG_SPACE(20) = 40 on
/// 64-bit Linux) or an `in_pktinfo` (32).
const CONTROL_LEN: usize = 40;

/// Control-message buffer, aligned for `cmsghdr`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Control([u8; CONTROL_LEN]);

fn zeroed_slice<T: Copy>(n: usize, zero: T) -> Box<[T]> {
    vec![zero; n].into_boxed_slice()
}

/// The per-datagram kernel structures of a batch (receive or send): one address, control
/// buffer, iovec and header per slot.
pub(crate) struct Headers {
    names: Box<[libc::sockaddr_storage]>,
    controls: Box<[Control]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
}

// SAFETY: the raw pointers inside `iovs` and `hdrs` are only ever written (from borrows of the
// owning batch) and read during one system call made by the thread that owns the batch; they
// are rewritten before each use and never dereferenced otherwise, so moving the headers to
// another thread cannot create shared access.
unsafe impl Send for Headers {}

impl Headers {
    pub(crate) fn new(n: usize) -> Self {
        // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs of integers and raw
        // pointers, for which all-zero bytes are valid values (null pointers, zero lengths).
        let (name, iov, hdr) = unsafe { (zeroed(), zeroed(), zeroed()) };
        Headers {
            names: zeroed_slice(n, name),
            controls: zeroed_slice(n, Control([0; CONTROL_LEN])),
            iovs: zeroed_slice(n, iov),
            hdrs: zeroed_slice(n, hdr),
        }
    }
}

/// Receives up to `meta.len()` datagrams into the `slot_len`-byte slots of `data`.
pub(crate) fn recv(
    fd: BorrowedFd<'_>,
    data: &mut [u8],
    slot_len: usize,
    h: &mut Headers,
    meta: &mut [RecvMeta],
) -> io::Result<usize> {
    let n = meta.len();
    debug_assert!(data.len() >= n * slot_len && h.hdrs.len() == n);
    let slots = data.chunks_exact_mut(slot_len);
    for (((slot, iov), (name, control)), hdr) in slots
        .zip(h.iovs.iter_mut())
        .zip(h.names.iter_mut().zip(h.controls.iter_mut()))
        .zip(h.hdrs.iter_mut())
    {
        *iov = libc::iovec {
            iov_base: slot.as_mut_ptr().cast(),
            iov_len: slot_len,
        };
        let m = &mut hdr.msg_hdr;
        m.msg_name = (name as *mut libc::sockaddr_storage).cast();
        m.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        m.msg_iov = iov;
        m.msg_iovlen = 1;
        m.msg_control = control.0.as_mut_ptr().cast();
        m.msg_controllen = CONTROL_LEN as _;
        m.msg_flags = 0;
        hdr.msg_len = 0;
    }
    // SAFETY: `hdrs` holds `n` initialised mmsghdr whose name, iovec and control pointers point
    // into `names`, `data` (one `slot_len` slot each) and `controls`, which are exclusively
    // borrowed and not moved for the whole call, with the lengths given. MSG_DONTWAIT makes the
    // call non-blocking; a null timeout is allowed. The fd is open while `fd` borrows it.
    let got = unsafe {
        syscall!(recvmmsg(
            fd.as_raw_fd(),
            h.hdrs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT as _,
            std::ptr::null_mut(),
        ))?
    } as usize;
    let mut kept = 0;
    for i in 0..got.min(n) {
        let hdr = &h.hdrs[i];
        // A socket of another family never delivers here; skip rather than guess.
        let Some(src) = from_sockaddr(&h.names[i]) else {
            continue;
        };
        let dst = parse_control(&hdr.msg_hdr);
        meta[kept] = RecvMeta {
            slot: i,
            len: (hdr.msg_len as usize).min(slot_len),
            src,
            dst,
            truncated: hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
        };
        kept += 1;
    }
    Ok(kept)
}

/// The local address (packet info) a received datagram carries.
fn parse_control(msg: &libc::msghdr) -> Option<LocalAddr> {
    let mut local = None;
    // SAFETY: `msg` was filled by recvmmsg: msg_control/msg_controllen describe the control
    // bytes the kernel wrote into our aligned buffer, which CMSG_FIRSTHDR/NXTHDR walk without
    // leaving it.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !cmsg.is_null() {
        // SAFETY: non-null cmsg pointers from CMSG_FIRSTHDR/NXTHDR point to a complete cmsghdr
        // inside the control buffer.
        let c = unsafe { &*cmsg };
        match (c.cmsg_level, c.cmsg_type) {
            (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                // SAFETY: an IP_PKTINFO message carries one in_pktinfo; read_unaligned because
                // CMSG_DATA gives no alignment guarantee for the payload type.
                let info: libc::in_pktinfo =
                    unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast()) };
                local = Some(LocalAddr {
                    ip: IpAddr::V4(Ipv4Addr::from(info.ipi_spec_dst.s_addr.to_ne_bytes())),
                    ifindex: info.ipi_ifindex as u32,
                });
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                // SAFETY: an IPV6_PKTINFO message carries one in6_pktinfo (see above).
                let info: libc::in6_pktinfo =
                    unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast()) };
                local = Some(LocalAddr {
                    ip: IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)),
                    ifindex: info.ipi6_ifindex,
                });
            }
            _ => {}
        }
        // SAFETY: as for CMSG_FIRSTHDR; returns null after the last message.
        cmsg = unsafe { libc::CMSG_NXTHDR(msg, cmsg) };
    }
    local
}

/// The socket's count of datagrams the kernel dropped before they reached it (receive buffer
/// full, memory pressure): `SO_MEMINFO`'s `SK_MEMINFO_DROPS`, the counter `SO_RXQ_OVFL` would
/// attach to every datagram, read once instead of per datagram. It wraps at `u32::MAX`.
pub(crate) fn socket_drops(fd: BorrowedFd<'_>) -> io::Result<u32> {
    // The kernel copies min(len, its table) bytes: room up to the drop counter is enough.
    let mut info = [0u32; libc::SK_MEMINFO_DROPS as usize + 1];
    let mut len = size_of_val(&info) as libc::socklen_t;
    // SAFETY: `info` is a writable buffer of `len` bytes that outlives the call, and `len` is a
    // valid socklen_t the kernel updates to the bytes written (at most `len`). The fd is open
    // while `fd` borrows it.
    unsafe {
        syscall!(getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        ))?;
    }
    let i = libc::SK_MEMINFO_DROPS as usize;
    if (len as usize) < (i + 1) * size_of::<u32>() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "SO_MEMINFO reported no drop counter",
        ));
    }
    Ok(info[i])
}

/// Sends `meta.len()` datagrams from the slots of `data`; see [`crate::SendBatch::send`].
pub(crate) fn send(
    fd: BorrowedFd<'_>,
    data: &[u8],
    slot_len: usize,
    meta: &[SendMeta],
    h: &mut Headers,
    mut unsent: impl FnMut(usize, Unsent),
) -> SendReport {
    let n = meta.len();
    debug_assert!(n <= h.hdrs.len() && data.len() >= n * slot_len);
    for (i, m) in meta.iter().enumerate() {
        h.iovs[i] = libc::iovec {
            // The kernel only reads through this pointer (sendmmsg's iovecs are not written).
            iov_base: data[i * slot_len..].as_ptr() as *mut libc::c_void,
            iov_len: m.len,
        };
        let hdr = &mut h.hdrs[i];
        hdr.msg_len = 0;
        let msg = &mut hdr.msg_hdr;
        msg.msg_iov = &mut h.iovs[i];
        msg.msg_iovlen = 1;
        msg.msg_flags = 0;
        match m.dst {
            Some(dst) => {
                msg.msg_namelen = to_sockaddr(&dst, &mut h.names[i]);
                msg.msg_name = (&mut h.names[i] as *mut libc::sockaddr_storage).cast();
            }
            None => {
                msg.msg_name = std::ptr::null_mut();
                msg.msg_namelen = 0;
            }
        }
        match m.src {
            Some(local) => {
                msg.msg_control = h.controls[i].0.as_mut_ptr().cast();
                msg.msg_controllen = write_packet_info(&mut h.controls[i], local) as _;
            }
            None => {
                msg.msg_control = std::ptr::null_mut();
                msg.msg_controllen = 0;
            }
        }
    }
    let mut report = SendReport::default();
    let mut done = 0;
    while done < n {
        report.calls += 1;
        // SAFETY: `hdrs[done..n]` are initialised mmsghdr whose name, iovec and control
        // pointers point into `names`, `iovs`, `controls` (borrowed exclusively) and `data`
        // (borrowed), all alive and unmoved during the call, with the lengths given. The kernel
        // only reads them, apart from each header's msg_len. MSG_DONTWAIT: never blocks.
        let res = unsafe {
            syscall!(sendmmsg(
                fd.as_raw_fd(),
                h.hdrs[done..n].as_mut_ptr(),
                (n - done) as libc::c_uint,
                libc::MSG_DONTWAIT,
            ))
        };
        match res {
            Ok(k) => {
                let k = (k as usize).clamp(1, n - done);
                report.sent += k;
                report.sent_bytes += meta[done..done + k].iter().map(|m| m.len).sum::<usize>();
                done += k;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                report.would_block += drop_rest(done, n, &mut unsent);
                break;
            }
            Err(e) => {
                // The first remaining datagram failed (e.g. no route): skip it.
                unsent(done, Unsent::Error(os_code(&e)));
                report.errors += 1;
                done += 1;
            }
        }
    }
    report
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
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
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

/// Writes one packet-info control message choosing `local` as the source; returns its length.
fn write_packet_info(control: &mut Control, local: LocalAddr) -> usize {
    control.0 = [0; CONTROL_LEN];
    // SAFETY: all-zero bytes are a valid msghdr.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = CONTROL_LEN as _;
    // SAFETY: msg_control points to our aligned CONTROL_LEN-byte buffer, which has room for one
    // cmsghdr and either pktinfo payload (CMSG_SPACE ≤ 40 < CONTROL_LEN, checked in the tests),
    // so CMSG_FIRSTHDR is non-null and CMSG_DATA stays inside it; the payload is written with
    // write_unaligned.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        match local.ip {
            IpAddr::V4(ip) => {
                let size = size_of::<libc::in_pktinfo>() as u32;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_buffer_fits_every_message_we_read_or_write() {
        // SAFETY: CMSG_SPACE only does arithmetic.
        let space = |n: usize| unsafe { libc::CMSG_SPACE(n as u32) } as usize;
        let v6 = space(size_of::<libc::in6_pktinfo>());
        let v4 = space(size_of::<libc::in_pktinfo>());
        assert!(v6.max(v4) <= CONTROL_LEN, "{v4} {v6}");
    }

    #[test]
    fn socket_addresses_round_trip_through_sockaddr_storage() {
        // SAFETY: all-zero bytes are a valid sockaddr_storage.
        let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
        for addr in [
            "192.0.2.7:6969".parse::<SocketAddr>().unwrap(),
            "[2001:db8::1]:51413".parse().unwrap(),
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 1, 7, 3)),
        ] {
            to_sockaddr(&addr, &mut storage);
            assert_eq!(from_sockaddr(&storage), Some(addr));
        }
        storage.ss_family = libc::AF_UNIX as _;
        assert_eq!(from_sockaddr(&storage), None);
    }
}
