//! The portable backend: one `recvfrom`/`sendto` (or `send` on a connected socket) per
//! datagram through `nix`, no packet info. Compiled and tested on every platform, Linux
//! included, so that it cannot rot.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    MsgFlags, SockaddrLike, SockaddrStorage, recvfrom, send as send_to_peer, sendto,
};

use crate::batch::{RecvMeta, SendMeta, SendReport, Unsent, drop_rest};

fn socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// Receives until `meta.len()` datagrams or nothing waits; `Err(WouldBlock)` when none did.
pub(crate) fn recv(
    fd: BorrowedFd<'_>,
    data: &mut [u8],
    slot_len: usize,
    meta: &mut [RecvMeta],
) -> io::Result<usize> {
    let mut got = 0;
    for (i, slot) in data.chunks_exact_mut(slot_len).take(meta.len()).enumerate() {
        let (len, src) = loop {
            match recvfrom::<SockaddrStorage>(fd.as_raw_fd(), slot) {
                Err(Errno::EINTR) => continue,
                Err(e) if got > 0 && e == Errno::EAGAIN => return Ok(got),
                // An error after some datagrams is reported by the next call.
                Err(_) if got > 0 => return Ok(got),
                Err(e) => return Err(e.into()),
                Ok((len, src)) => break (len, src),
            }
        };
        let Some(src) = src.as_ref().and_then(socket_addr) else {
            continue;
        };
        meta[got] = RecvMeta {
            slot: i,
            len,
            src,
            dst: None,
            // recvfrom does not say; no valid datagram fills a slot exactly.
            truncated: len == slot_len,
        };
        got += 1;
    }
    Ok(got)
}

/// Sends the datagrams of `meta` one by one; see [`crate::SendBatch::send`].
pub(crate) fn send(
    fd: BorrowedFd<'_>,
    data: &[u8],
    slot_len: usize,
    meta: &[SendMeta],
    mut unsent: impl FnMut(usize, Unsent),
) -> SendReport {
    let mut report = SendReport::default();
    let raw = fd.as_raw_fd();
    for (i, m) in meta.iter().enumerate() {
        let bytes = &data[i * slot_len..i * slot_len + m.len];
        let dst = m.dst.map(SockaddrStorage::from);
        let res = loop {
            report.calls += 1;
            let r = match &dst {
                Some(d) => sendto(raw, bytes, d as &dyn SockaddrLike, MsgFlags::empty()),
                None => send_to_peer(raw, bytes, MsgFlags::empty()),
            };
            if r != Err(Errno::EINTR) {
                break r;
            }
        };
        match res {
            Ok(_) => {
                report.sent += 1;
                report.sent_bytes += m.len;
            }
            Err(Errno::EAGAIN) => {
                report.would_block += drop_rest(i, meta.len(), &mut unsent);
                break;
            }
            Err(e) => {
                unsent(i, Unsent::Error(e as i32));
                report.errors += 1;
            }
        }
    }
    report
}
