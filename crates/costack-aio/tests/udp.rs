//! `net::UdpSocket`: round trips on loopback (IPv4, and IPv6 where the machine has `::1`),
//! truncation, the errors of a connected socket, many datagrams between two tasks with exact
//! counts, a receive cut by `timeout`, plain-thread use, and option round trips.

#[path = "../../costack/tests/common/require.rs"]
mod require;
#[path = "common/threads.rs"]
mod threads;

use costack_aio::net::UdpSocket;
use costack_aio::{spawn, timeout, EventLoop};
use std::cell::Cell;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};
use threads::bounded;

/// An address of 127.0.0.1 on which nothing listens (the port of a socket just closed).
fn closed_port() -> SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap()
}

/// A socket bound to `::1`, or `None` (after `skip_or_fail`) if the machine has no IPv6
/// loopback.
fn bind_v6() -> Option<UdpSocket> {
    match UdpSocket::bind("[::1]:0") {
        Ok(s) => Some(s),
        Err(e) => {
            require::skip_or_fail(&format!("cannot bind UDP to [::1]: {e}"));
            None
        }
    }
}

/// A request from one task, echoed by a task on the other socket; checks bytes and addresses.
fn round_trip(server: UdpSocket, client: UdpSocket) {
    let server_addr = server.local_addr().unwrap();
    let client_addr = client.local_addr().unwrap();
    let echo = spawn(move || {
        let mut buf = [0u8; 2048];
        let (n, peer) = server.recv_from(&mut buf).unwrap();
        server.send_to(&buf[..n], peer).unwrap();
        (n, peer)
    });
    let msg: Vec<u8> = (0..1200u32).map(|i| (i * 7) as u8).collect();
    assert_eq!(client.send_to(&msg, server_addr).unwrap(), msg.len());
    let mut buf = [0u8; 2048];
    let (n, from) = client.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], &msg[..]);
    assert_eq!(from, server_addr);
    assert_eq!(echo.join(), (msg.len(), client_addr));
}

#[test]
fn round_trip_ipv4() {
    EventLoop::new().block_on(|| {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        round_trip(server, client);
    });
}

#[test]
fn round_trip_ipv6() {
    EventLoop::new().block_on(|| {
        let Some(server) = bind_v6() else { return };
        let client = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
        round_trip(server, client);
    });
}

#[test]
fn a_datagram_longer_than_the_buffer_is_truncated_and_its_tail_lost() {
    EventLoop::new().block_on(|| {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = b.local_addr().unwrap();
        let long: Vec<u8> = (0..100u8).collect();
        a.send_to(&long, to).unwrap();
        a.send_to(b"second", to).unwrap();
        let mut small = [0u8; 10];
        // Peeking truncates too, and leaves the datagram queued.
        assert_eq!(b.peek_from(&mut small).unwrap().0, 10);
        assert_eq!(small, long[..10]);
        let (n, from) = b.recv_from(&mut small).unwrap();
        assert_eq!((n, from), (10, a.local_addr().unwrap()));
        assert_eq!(small, long[..10]);
        // The tail of the first datagram is gone: the next receive is the second datagram.
        let mut buf = [0u8; 100];
        let (n, _) = b.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"second");
    });
}

#[test]
fn connected_socket_reports_refusal_and_filters_peers() {
    EventLoop::new().block_on(|| {
        let closed = closed_port();
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(s.peer_addr().unwrap_err().kind(), ErrorKind::NotConnected);
        // Not connected: `send` has no destination.
        let e = s.send(b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EDESTADDRREQ));
        s.connect(closed).unwrap();
        assert_eq!(s.peer_addr().unwrap(), closed);
        assert_eq!(s.send(b"x").unwrap(), 1);
        // The ICMP port unreachable arrives as an error event: the waiting recv wakes with it.
        let mut buf = [0u8; 8];
        let r = timeout(Duration::from_secs(5), || s.recv(&mut buf)).expect("recv hung");
        assert_eq!(r.unwrap_err().kind(), ErrorKind::ConnectionRefused);
        // Reported once: the socket is usable afterwards.
        assert!(s.take_error().unwrap().is_none());
        // A connected socket only receives from its peer.
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let other = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.connect(peer.local_addr().unwrap()).unwrap();
        other.send_to(b"stranger", s.local_addr().unwrap()).unwrap();
        peer.send_to(b"peer", s.local_addr().unwrap()).unwrap();
        let n = s.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"peer");
        // peek leaves the datagram for the next recv.
        peer.send_to(b"twice", s.local_addr().unwrap()).unwrap();
        let mut peeked = [0u8; 8];
        let n = s.peek(&mut peeked).unwrap();
        assert_eq!(&peeked[..n], b"twice");
        let n = s.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"twice");
    });
}

#[test]
fn take_error_returns_a_pending_refusal() {
    EventLoop::new().block_on(|| {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.connect(closed_port()).unwrap();
        s.send(b"x").unwrap();
        // Wait for the error without consuming it: poll reports it as readiness.
        timeout(Duration::from_secs(5), || {
            costack_aio::io::wait_readable(s.as_fd()).unwrap()
        })
        .expect("no ICMP error within 5 s");
        let e = s.take_error().unwrap().expect("a pending error");
        assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
        assert!(s.take_error().unwrap().is_none());
    });
}

/// Datagrams carry their sequence number; the receiver acknowledges every `WINDOW`, and the
/// sender waits for the acknowledgement before sending more, so the receive buffer never
/// overflows (which on loopback drops datagrams).
#[test]
fn many_datagrams_between_two_tasks_arrive_in_order_exactly_once() {
    const TOTAL: u32 = 20_000;
    const WINDOW: u32 = 32;
    let lp = EventLoop::new();
    lp.block_on(|| {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.connect(tx.local_addr().unwrap()).unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        let receiver = spawn(move || {
            let (mut count, mut sum) = (0u32, 0u64);
            let mut buf = [0u8; 64];
            while count < TOTAL {
                let n = rx.recv(&mut buf).unwrap();
                assert_eq!(n, 4 + (count % 50) as usize);
                let seq = u32::from_le_bytes(buf[..4].try_into().unwrap());
                assert_eq!(seq, count, "out of order or lost");
                assert!(buf[4..n].iter().all(|&b| b == seq as u8));
                sum += u64::from(seq);
                count += 1;
                if count % WINDOW == 0 {
                    rx.send(&count.to_le_bytes()).unwrap();
                }
            }
            (count, sum)
        });
        let mut ack = [0u8; 4];
        let mut msg = [0u8; 64];
        for seq in 0..TOTAL {
            let n = 4 + (seq % 50) as usize;
            msg[..4].copy_from_slice(&seq.to_le_bytes());
            msg[4..n].fill(seq as u8);
            assert_eq!(tx.send(&msg[..n]).unwrap(), n);
            if (seq + 1) % WINDOW == 0 {
                assert_eq!(tx.recv(&mut ack).unwrap(), 4);
                assert_eq!(u32::from_le_bytes(ack), seq + 1);
            }
        }
        let expected_sum = u64::from(TOTAL) * u64::from(TOTAL - 1) / 2;
        assert_eq!(receiver.join(), (TOTAL, expected_sum));
    });
}

#[test]
fn recv_in_timeout_is_cut_cleanly_and_the_socket_still_works() {
    EventLoop::new().block_on(|| {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut buf = [0u8; 16];
        let t0 = Instant::now();
        let r = timeout(Duration::from_millis(50), || s.recv_from(&mut buf));
        let took = t0.elapsed();
        assert!(r.is_err(), "nothing was sent, yet recv returned {r:?}");
        assert!(took >= Duration::from_millis(50), "cut early: {took:?}");
        assert!(took < Duration::from_secs(2), "cut late: {took:?}");
        // Another task sends while this one waits again; the abandoned wait left nothing
        // behind.
        let addr = s.local_addr().unwrap();
        let sender = spawn(move || {
            UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .send_to(b"late", addr)
                .unwrap()
        });
        let (n, _) = s.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"late");
        assert_eq!(sender.join(), 4);
    });
}

#[test]
fn tasks_waiting_on_one_socket_each_get_a_datagram() {
    EventLoop::new().block_on(|| {
        let s = Rc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let addr = s.local_addr().unwrap();
        let got = Rc::new(Cell::new(0u32));
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let (s, got) = (s.clone(), got.clone());
                spawn(move || {
                    let mut buf = [0u8; 4];
                    let (n, _) = s.recv_from(&mut buf).unwrap();
                    got.set(got.get() + 1);
                    u32::from_le_bytes(buf[..n].try_into().unwrap())
                })
            })
            .collect();
        costack_aio::yield_now(); // all four wait now
        assert_eq!(got.get(), 0);
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 1..=4u32 {
            c.send_to(&i.to_le_bytes(), addr).unwrap();
        }
        let mut seen: Vec<u32> = waiters.into_iter().map(|w| w.join()).collect();
        seen.sort_unstable();
        assert_eq!(seen, [1, 2, 3, 4]);
    });
}

#[test]
fn close_wakes_a_waiting_recv_with_not_connected() {
    EventLoop::new().block_on(|| {
        let s = Rc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let s2 = s.clone();
        let waiter = spawn(move || {
            let mut buf = [0u8; 4];
            s2.recv_from(&mut buf).unwrap_err().kind()
        });
        costack_aio::yield_now();
        s.close();
        assert_eq!(waiter.join(), ErrorKind::NotConnected);
        assert_eq!(
            s.send_to(b"x", "127.0.0.1:9").unwrap_err().kind(),
            ErrorKind::NotConnected
        );
    });
}

#[test]
fn plain_threads_block_in_recv_until_a_datagram_comes() {
    bounded(30, || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = s.local_addr().unwrap();
        let sender = std::thread::spawn(move || {
            let c = UdpSocket::bind("127.0.0.1:0").unwrap();
            for i in 0..100u32 {
                c.send_to(&i.to_le_bytes(), addr).unwrap();
            }
        });
        let mut buf = [0u8; 8];
        for i in 0..100u32 {
            let (n, _) = s.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &i.to_le_bytes());
        }
        sender.join().unwrap();
        // A refusal, without any loop.
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.connect(closed_port()).unwrap();
        c.send(b"x").unwrap();
        assert_eq!(
            c.recv(&mut buf).unwrap_err().kind(),
            ErrorKind::ConnectionRefused
        );
    });
}

#[test]
fn try_clone_and_std_conversions_share_the_socket() {
    EventLoop::new().block_on(|| {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = a.try_clone().unwrap();
        assert_eq!(a.local_addr().unwrap(), b.local_addr().unwrap());
        let addr = a.local_addr().unwrap();
        // The clone waits in a task of its own and receives what is sent to the address.
        let waiter = spawn(move || {
            let mut buf = [0u8; 8];
            let (n, _) = b.recv_from(&mut buf).unwrap();
            buf[..n].to_vec()
        });
        costack_aio::yield_now();
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.send_to(b"clone", addr).unwrap();
        assert_eq!(waiter.join(), b"clone");
        // into_std gives the same socket back, still non-blocking.
        let std_sock = a.into_std();
        let mut buf = [0u8; 8];
        assert_eq!(
            std_sock.recv_from(&mut buf).unwrap_err().kind(),
            ErrorKind::WouldBlock
        );
        c.send_to(b"std", addr).unwrap();
        std_sock.set_nonblocking(false).unwrap();
        let (n, _) = std_sock.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"std");
        // And from_std wraps it again.
        let again = UdpSocket::from_std(std_sock).unwrap();
        c.send_to(b"again", addr).unwrap();
        let (n, _) = again.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"again");
        assert_eq!(again.as_raw_fd(), again.as_fd().as_raw_fd());
    });
}

#[test]
fn send_to_a_host_name_resolves_it() {
    EventLoop::new().block_on(|| {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = s.local_addr().unwrap().port();
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        // `localhost` may give ::1 first, which a v4 socket cannot reach: use the v4 name.
        c.send_to(b"by name", ("127.0.0.1", port)).unwrap();
        c.send_to(b"by string", format!("127.0.0.1:{port}"))
            .unwrap();
        let mut buf = [0u8; 16];
        let (n, _) = s.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"by name");
        let (n, _) = s.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"by string");
        let e = c.send_to(b"x", "nonexistent.invalid:9").unwrap_err();
        assert_ne!(e.kind(), ErrorKind::WouldBlock);
        let none: &[SocketAddr] = &[];
        assert_eq!(
            c.send_to(b"x", none).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    });
}

#[test]
fn option_round_trips() {
    EventLoop::new().block_on(|| {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        for on in [true, false] {
            s.set_broadcast(on).unwrap();
            assert_eq!(s.broadcast().unwrap(), on);
            s.set_multicast_loop_v4(on).unwrap();
            assert_eq!(s.multicast_loop_v4().unwrap(), on);
        }
        for ttl in [1, 7, 255] {
            s.set_multicast_ttl_v4(ttl).unwrap();
            assert_eq!(s.multicast_ttl_v4().unwrap(), ttl);
            s.set_ttl(ttl).unwrap();
            assert_eq!(s.ttl().unwrap(), ttl);
        }
        // Out of range: the system's error, no crash.
        assert_eq!(s.set_ttl(256).unwrap_err().kind(), ErrorKind::InvalidInput);
        let group = Ipv4Addr::new(239, 255, 42, 1);
        match s.join_multicast_v4(&group, &Ipv4Addr::LOCALHOST) {
            Ok(()) => {
                // Leaving a group twice: the second time it is not a member.
                s.leave_multicast_v4(&group, &Ipv4Addr::LOCALHOST).unwrap();
                assert!(s.leave_multicast_v4(&group, &Ipv4Addr::LOCALHOST).is_err());
            }
            Err(e) => {
                require::skip_or_fail(&format!("cannot join an IPv4 multicast group on lo: {e}"))
            }
        }
        // A unicast address is not a group.
        assert!(s
            .join_multicast_v4(&Ipv4Addr::new(10, 0, 0, 1), &Ipv4Addr::LOCALHOST)
            .is_err());
        let Some(s6) = bind_v6() else { return };
        for on in [false, true] {
            s6.set_multicast_loop_v6(on).unwrap();
            assert_eq!(s6.multicast_loop_v6().unwrap(), on);
        }
        let group6: Ipv6Addr = "ff02::1:3".parse().unwrap();
        match s6.join_multicast_v6(&group6, 0) {
            Ok(()) => s6.leave_multicast_v6(&group6, 0).unwrap(),
            Err(e) => require::skip_or_fail(&format!("cannot join an IPv6 multicast group: {e}")),
        }
    });
}
