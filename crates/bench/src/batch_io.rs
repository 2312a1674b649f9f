//! Batched datagram I/O on connected, non-blocking UDP sockets.
//!
//! On Linux one `sendmmsg(2)` / `recvmmsg(2)` call moves up to [`MAX_BATCH`] datagrams; this
//! is the only module of fjord-bench with `unsafe` code. Elsewhere (or with `use_mmsg` off)
//! the same functions loop over `send(2)` / `recv(2)` through std.
//!
//! Buffers are caller-owned fixed-size arrays, so nothing is allocated per call.

use std::io;
use std::net::UdpSocket;

/// Most datagrams moved by one call.
pub const MAX_BATCH: usize = 64;

/// Sends `bufs[i][..lens[i]]` for every `i` on the connected socket `sock`, in order.
///
/// Returns how many were sent: fewer than asked when the socket's send buffer filled up.
/// `Err(WouldBlock)` means none was sent.
pub fn send_batch<const N: usize>(
    sock: &UdpSocket,
    bufs: &[[u8; N]],
    lens: &[usize],
    use_mmsg: bool,
) -> io::Result<usize> {
    let n = lens.len().min(bufs.len()).min(MAX_BATCH);
    if n == 0 {
        return Ok(0);
    }
    #[cfg(target_os = "linux")]
    if use_mmsg {
        return linux::sendmmsg(sock, &bufs[..n], &lens[..n]);
    }
    let _ = use_mmsg;
    for i in 0..n {
        if let Err(e) = sock.send(&bufs[i][..lens[i]]) {
            return if i == 0 { Err(e) } else { Ok(i) };
        }
    }
    Ok(n)
}

/// Receives up to `bufs.len()` datagrams (at most [`MAX_BATCH`]) from `sock` without blocking.
///
/// For each datagram `i`, `lens[i]` is its length (capped at `N`) and `truncated[i]` says it
/// was longer than `N`. Returns the count; `Err(WouldBlock)` means nothing was waiting.
pub fn recv_batch<const N: usize>(
    sock: &UdpSocket,
    bufs: &mut [[u8; N]],
    lens: &mut [usize],
    truncated: &mut [bool],
    use_mmsg: bool,
) -> io::Result<usize> {
    let n = bufs
        .len()
        .min(lens.len())
        .min(truncated.len())
        .min(MAX_BATCH);
    if n == 0 {
        return Ok(0);
    }
    #[cfg(target_os = "linux")]
    if use_mmsg {
        return linux::recvmmsg(sock, &mut bufs[..n], &mut lens[..n], &mut truncated[..n]);
    }
    let _ = use_mmsg;
    for i in 0..n {
        // A buffer one byte short of N detects datagrams that did not fit.
        match sock.recv(&mut bufs[i]) {
            Ok(len) => {
                lens[i] = len;
                truncated[i] = len == N;
            }
            Err(e) => return if i == 0 { Err(e) } else { Ok(i) },
        }
    }
    Ok(n)
}

#[cfg(target_os = "linux")]
mod linux {
    use super::MAX_BATCH;
    use std::io;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    /// Calls a libc function and turns a `-1` result into the thread's `errno` as `io::Error`.
    macro_rules! syscall {
        ($fn:ident ( $($arg:expr),* $(,)? )) => {{
            // SAFETY: every use states, in the comment just before it, why the pointers and
            // lengths it passes satisfy the contract of `libc::$fn`.
            let res = unsafe { libc::$fn($($arg),*) };
            if res == -1 {
                Err(io::Error::last_os_error())
            } else {
                Ok(res)
            }
        }};
    }

    fn empty_headers() -> ([libc::iovec; MAX_BATCH], [libc::mmsghdr; MAX_BATCH]) {
        // SAFETY: `iovec` and `mmsghdr` are plain C structs of integers and raw pointers, for
        // which all-zero bytes are a valid value (null pointers, zero lengths).
        unsafe { (std::mem::zeroed(), std::mem::zeroed()) }
    }

    pub(super) fn sendmmsg<const N: usize>(
        sock: &UdpSocket,
        bufs: &[[u8; N]],
        lens: &[usize],
    ) -> io::Result<usize> {
        let n = bufs.len();
        debug_assert!(n <= MAX_BATCH && lens.len() == n);
        let (mut iov, mut msgs) = empty_headers();
        for i in 0..n {
            iov[i].iov_base = bufs[i].as_ptr() as *mut libc::c_void;
            iov[i].iov_len = lens[i].min(N);
            // Connected socket: no destination address (msg_name stays null).
            msgs[i].msg_hdr.msg_iov = &mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        // Contract of this sendmmsg call: `msgs[..n]` are initialised headers whose single
        // iovec points into `bufs[i]`, valid for `lens[i].min(N)` bytes; the kernel only reads
        // them (and writes `msg_len`) during the call, while `bufs`, `iov` and `msgs` are
        // borrowed or owned by this frame. The fd stays open because `sock` is borrowed.
        let sent = syscall!(sendmmsg(
            sock.as_raw_fd(),
            msgs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
        ))?;
        Ok(sent as usize)
    }

    pub(super) fn recvmmsg<const N: usize>(
        sock: &UdpSocket,
        bufs: &mut [[u8; N]],
        lens: &mut [usize],
        truncated: &mut [bool],
    ) -> io::Result<usize> {
        let n = bufs.len();
        debug_assert!(n <= MAX_BATCH && lens.len() == n && truncated.len() == n);
        let (mut iov, mut msgs) = empty_headers();
        for i in 0..n {
            iov[i].iov_base = bufs[i].as_mut_ptr() as *mut libc::c_void;
            iov[i].iov_len = N;
            msgs[i].msg_hdr.msg_iov = &mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        // Contract of this recvmmsg call: each header's iovec points at `bufs[i]`, writable
        // for `N` bytes and exclusively borrowed by this function; no source address or
        // control buffer is requested (null, length 0); a null timeout is allowed. The kernel
        // writes at most `N` bytes per datagram and fills `msg_len` / `msg_flags` of the
        // first `got` headers only.
        let got = syscall!(recvmmsg(
            sock.as_raw_fd(),
            msgs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        ))?;
        let got = got as usize;
        for i in 0..got {
            lens[i] = (msgs[i].msg_len as usize).min(N);
            truncated[i] = msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        }
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.connect(b.local_addr().unwrap()).unwrap();
        b.connect(a.local_addr().unwrap()).unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    fn round_trip(use_mmsg: bool) {
        let (a, b) = pair();
        let mut out = [[0u8; 32]; 3];
        out[0][..3].copy_from_slice(b"one");
        out[1][..5].copy_from_slice(b"three");
        out[2] = [7u8; 32];
        assert_eq!(send_batch(&a, &out, &[3, 5, 32], use_mmsg).unwrap(), 3);
        let mut bufs = [[0u8; 16]; 8];
        let mut lens = [0usize; 8];
        let mut trunc = [false; 8];
        let mut got = 0;
        for _ in 0..100 {
            match recv_batch(
                &b,
                &mut bufs[got..],
                &mut lens[got..],
                &mut trunc[got..],
                use_mmsg,
            ) {
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            if got == 3 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(got, 3);
        assert_eq!(&bufs[0][..lens[0]], b"one");
        assert_eq!(&bufs[1][..lens[1]], b"three");
        assert!(!trunc[0] && !trunc[1]);
        assert!(trunc[2], "a 32-byte datagram does not fit 16 bytes");
        let e = recv_batch(&b, &mut bufs, &mut lens, &mut trunc, use_mmsg).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn batched_round_trip() {
        round_trip(true);
    }

    #[test]
    fn portable_round_trip() {
        round_trip(false);
    }
}
