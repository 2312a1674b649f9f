//! Socket tests of both backends over loopback: batches with packet info, truncation, the
//! send report, the kernel drop counter, `SO_REUSEPORT` and the exclusivity probe.

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use fjord_udp::{
    Backend, RecvBatch, SendBatch, SocketOptions, Unsent, bind, granted_buffer, probe_exclusive,
};

const BACKENDS: [Backend; 2] = [Backend::Mmsg, Backend::Portable];

fn server(addr: &str, packet_info: bool) -> UdpSocket {
    let opts = SocketOptions {
        packet_info,
        ..SocketOptions::default()
    };
    bind(addr.parse().unwrap(), &opts).unwrap().socket
}

fn client(addr: &str) -> UdpSocket {
    let c = UdpSocket::bind(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c
}

/// Receives until `want` datagrams arrived (5 s at most); calls `each` for every one.
fn recv_n(
    rx: &mut RecvBatch,
    socket: &UdpSocket,
    want: usize,
    mut each: impl FnMut(fjord_udp::Datagram<'_>),
) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = 0;
    while got < want {
        match rx.recv(socket) {
            Ok(n) => {
                assert_eq!(n, rx.len());
                rx.iter().for_each(&mut each);
                got += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "{got} of {want} datagrams arrived"
                );
                std::thread::yield_now();
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(got, want);
}

fn has_ipv6() -> bool {
    UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).is_ok()
}

/// A wildcard socket answers from the address each client asked for (127.0.0.2 here, not the
/// 127.0.0.1 the routing table would pick), all three replies in one `sendmmsg`.
#[test]
fn wildcard_replies_leave_from_the_address_asked() {
    let server = server("0.0.0.0:0", true);
    let port = server.local_addr().unwrap().port();
    let client = client("127.0.0.1:0");
    let mut rx = RecvBatch::new(8, 2048);
    let mut tx = SendBatch::new(8, 1280);
    assert_eq!(
        rx.recv(&server).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    for i in 0..3u8 {
        client.send_to(&[i; 20], ("127.0.0.2", port)).unwrap();
    }
    recv_n(&mut rx, &server, 3, |d| {
        assert_eq!(d.data.len(), 20);
        assert!(!d.truncated);
        assert_eq!(d.src, client.local_addr().unwrap());
        if cfg!(target_os = "linux") {
            assert_eq!(d.dst.unwrap().ip, "127.0.0.2".parse::<IpAddr>().unwrap());
        }
        let buf = tx.next_buf().unwrap();
        buf[..5].copy_from_slice(&d.data[..5]);
        tx.push(5, d.src, d.dst);
    });
    assert_eq!(tx.len(), 3);
    let r = tx.send(&server, |i, why| panic!("datagram {i} not sent: {why:?}"));
    assert_eq!(
        (r.sent, r.sent_bytes, r.would_block, r.errors),
        (3, 15, 0, 0)
    );
    if cfg!(target_os = "linux") {
        assert_eq!(r.calls, 1, "one sendmmsg for the batch");
    }
    assert!(tx.is_empty());
    let mut buf = [0; 64];
    let mut firsts = Vec::new();
    for _ in 0..3 {
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!(n, 5);
        firsts.push(buf[0]);
        if cfg!(target_os = "linux") {
            assert_eq!(from, SocketAddr::from(([127, 0, 0, 2], port)));
        }
    }
    firsts.sort();
    assert_eq!(firsts, [0, 1, 2]);
}

#[test]
fn ipv6_wildcard_reports_the_local_address() {
    if !has_ipv6() {
        eprintln!("SKIPPED: no IPv6 loopback");
        return;
    }
    let server = server("[::]:0", true);
    let port = server.local_addr().unwrap().port();
    let client = client("[::1]:0");
    client.send_to(b"six", ("::1", port)).unwrap();
    let mut rx = RecvBatch::new(4, 64);
    let mut tx = SendBatch::new(4, 64);
    recv_n(&mut rx, &server, 1, |d| {
        assert_eq!(d.data, b"six");
        if cfg!(target_os = "linux") {
            let local = d.dst.unwrap();
            assert_eq!(local.ip, IpAddr::V6(Ipv6Addr::LOCALHOST));
            assert_ne!(local.ifindex, 0);
        }
        tx.next_buf().unwrap()[..2].copy_from_slice(b"ok");
        tx.push(2, d.src, d.dst);
    });
    assert_eq!(tx.send(&server, |_, _| {}).sent, 1);
    let mut buf = [0; 8];
    assert_eq!(
        client.recv_from(&mut buf).unwrap(),
        (2, SocketAddr::from((Ipv6Addr::LOCALHOST, port)))
    );
}

/// Both backends, on connected sockets (fjord-bench's use): order kept, truncation reported.
#[test]
fn connected_round_trip_and_truncation_on_both_backends() {
    for backend in BACKENDS {
        let a = server("127.0.0.1:0", false);
        let b = server("127.0.0.1:0", false);
        a.connect(b.local_addr().unwrap()).unwrap();
        b.connect(a.local_addr().unwrap()).unwrap();
        let mut tx = SendBatch::with_backend(4, 32, backend);
        for payload in [&b"one"[..], b"three", &[7; 32]] {
            let buf = tx.next_buf().unwrap();
            buf[..payload.len()].copy_from_slice(payload);
            tx.push_connected(payload.len());
        }
        let r = tx.send(&a, |i, why| panic!("{backend:?}: {i} not sent: {why:?}"));
        assert_eq!((r.sent, r.sent_bytes), (3, 40), "{backend:?}");
        let mut rx = RecvBatch::with_backend(8, 16, backend);
        let mut seen = Vec::new();
        recv_n(&mut rx, &b, 3, |d| {
            seen.push((d.data.to_vec(), d.truncated, d.src))
        });
        let from = a.local_addr().unwrap();
        assert_eq!(
            seen,
            [
                (b"one".to_vec(), false, from),
                (b"three".to_vec(), false, from),
                (vec![7; 16], true, from),
            ],
            "{backend:?}: a 32-byte datagram does not fit a 16-byte slot"
        );
    }
}

/// A datagram the kernel refuses is skipped and reported; the ones after it still go out.
#[test]
fn a_refused_datagram_is_skipped_and_reported() {
    for backend in BACKENDS {
        let server = server("127.0.0.1:0", false);
        let client = client("127.0.0.1:0");
        let to = client.local_addr().unwrap();
        let mut tx = SendBatch::with_backend(4, 8, backend);
        // An IPv6 destination on an IPv4 socket: EAFNOSUPPORT or EINVAL, never sent.
        let bad: SocketAddr = "[2001:db8::1]:9".parse().unwrap();
        for (i, dst) in [to, bad, to].into_iter().enumerate() {
            tx.next_buf().unwrap()[0] = i as u8;
            tx.push(1, dst, None);
        }
        let mut unsent = Vec::new();
        let r = tx.send(&server, |i, why| unsent.push((i, why)));
        assert_eq!((r.sent, r.errors, r.would_block), (2, 1, 0), "{backend:?}");
        assert!(
            matches!(unsent[..], [(1, Unsent::Error(code))] if code != 0),
            "{backend:?}: {unsent:?}"
        );
        let mut buf = [0; 8];
        assert_eq!(client.recv(&mut buf).unwrap(), 1);
        assert_eq!(buf[0], 0);
        assert_eq!(client.recv(&mut buf).unwrap(), 1);
        assert_eq!(buf[0], 2);
    }
}

#[test]
fn full_batches_refuse_more_and_clear_empties_them() {
    let mut tx = SendBatch::new(2, 4);
    assert_eq!(tx.capacity(), 2);
    for _ in 0..2 {
        assert_eq!(tx.next_buf().unwrap().len(), 4);
        tx.push_connected(4);
    }
    assert!(tx.is_full() && tx.next_buf().is_none());
    tx.clear();
    assert!(tx.is_empty() && tx.next_buf().is_some());
    let rx = RecvBatch::new(0, 0);
    assert_eq!((rx.capacity(), rx.len()), (1, 0));
}

/// `kernel_drops` (`SO_MEMINFO`): datagrams dropped for a full receive buffer are counted by
/// the kernel, and the count is there before anything is read.
#[cfg(target_os = "linux")]
#[test]
fn kernel_drops_reports_receive_buffer_overflows() {
    let opts = SocketOptions {
        recv_buffer: Some(4096),
        ..SocketOptions::default()
    };
    let server = bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap().socket;
    let client = client("127.0.0.1:0");
    let to = server.local_addr().unwrap();
    assert_eq!(fjord_udp::kernel_drops(&server).unwrap(), 0);
    // Far more than 4 KiB of receive buffer holds; none is read meanwhile.
    for _ in 0..200 {
        let _ = client.send_to(&[0; 1000], to);
    }
    let drops = fjord_udp::kernel_drops(&server).unwrap();
    let mut rx = RecvBatch::new(64, 2048);
    let mut queued = 0;
    while let Ok(n) = rx.recv(&server) {
        queued += n;
    }
    // Loopback delivers synchronously: every datagram was either queued or dropped.
    assert!(queued > 0 && queued < 200, "{queued}");
    assert_eq!(
        drops as usize,
        200 - queued,
        "{drops} drops, {queued} queued"
    );
    // Reading changes nothing; a datagram that fits is not a drop.
    client.send_to(b"after", to).unwrap();
    recv_n(&mut rx, &server, 1, |d| assert_eq!(d.data, b"after"));
    assert_eq!(fjord_udp::kernel_drops(&server).unwrap(), drops);
}

#[cfg(target_os = "linux")]
#[test]
fn reuse_port_groups_share_and_the_probe_sees_them() {
    let opts = SocketOptions {
        reuse_port: true,
        ..SocketOptions::default()
    };
    let first = bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap().socket;
    let addr = first.local_addr().unwrap();
    let second = bind(addr, &opts).unwrap().socket;
    assert_eq!(second.local_addr().unwrap(), addr);
    let e = probe_exclusive(addr).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
    // A wildcard bind of the same port covers 127.0.0.1 too.
    let e = probe_exclusive(SocketAddr::from(([0, 0, 0, 0], addr.port()))).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
    drop((first, second));
    probe_exclusive(addr).unwrap();
    probe_exclusive("127.0.0.1:0".parse().unwrap()).unwrap();
}

#[test]
fn granted_buffers_account_for_the_kernel_doubling() {
    if cfg!(target_os = "linux") {
        // rmem_max = 4 MiB, 8 MiB requested: Linux reports 8 MiB (2 x 4 MiB), which is capped.
        assert_eq!(granted_buffer(8 << 20, 8 << 20), Some(4 << 20));
        assert_eq!(granted_buffer(1 << 20, 2 << 20), None);
    } else {
        assert_eq!(granted_buffer(8 << 20, 4 << 20), Some(4 << 20));
    }
}
