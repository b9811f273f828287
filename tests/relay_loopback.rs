//! The TCP and DNS relays on loopback (no root needed): each test uses its own 127.77.0.N
//! address, its own backends on threads, and bounded loops with timeouts.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use carpio::config;
use carpio::config::model::ProxyProtocol;
use carpio::relay::proxy::{Header, Transport};
use carpio::relay::{self, Counter, Options, RelayHandle};

const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(conf: &str) -> RelayHandle {
    let c = config::parse_str("test.conf", conf, &[]).unwrap();
    relay::spawn(
        &c,
        Options {
            workers: Some(2),
            seed: 1,
        },
    )
    .unwrap()
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// A backend that reads until EOF, then answers with the byte count (8 bytes BE) and the
/// data reversed, then closes. Serves `n` connections.
fn reversing_backend(ip: &str, n: usize) -> (SocketAddr, thread::JoinHandle<Vec<Vec<u8>>>) {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let addr = l.local_addr().unwrap();
    let h = thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..n {
            let (mut s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            let mut data = Vec::new();
            s.read_to_end(&mut data).unwrap();
            s.write_all(&(data.len() as u64).to_be_bytes()).unwrap();
            let rev: Vec<u8> = data.iter().rev().copied().collect();
            s.write_all(&rev).unwrap();
            seen.push(data);
        }
        seen
    });
    (addr, h)
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + IO_TIMEOUT;
    while Instant::now() < end {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

fn half_close_round_trip(ip: &str, splice: bool) {
    let (backend, bh) = reversing_backend(ip, 1);
    let port = free_port(ip);
    let tcp = if splice { "splice" } else { "no splice" };
    let h = start(&format!(
        "protocol p {{ tcp {{ {tcp}, nodelay }} }}\n\
         relay r {{\n listen on {ip} port {port}\n protocol p\n \
         forward to {} port {}\n}}\n",
        backend.ip(),
        backend.port()
    ));
    let data = pattern(3 << 20, 7);
    let mut c = connect(format!("{ip}:{port}").parse().unwrap());
    let writer = {
        let mut c2 = c.try_clone().unwrap();
        let d = data.clone();
        thread::spawn(move || {
            c2.write_all(&d).unwrap();
            // Half-close: the backend only answers after it sees our EOF.
            c2.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    assert_eq!(&got[..8], &(data.len() as u64).to_be_bytes());
    let rev: Vec<u8> = data.iter().rev().copied().collect();
    assert!(got[8..] == rev[..], "reply differs");
    assert_eq!(bh.join().unwrap()[0], data);
    assert!(wait_for(|| h.counter("r", Counter::SessionClosed) == 1));
    assert_eq!(h.counter("r", Counter::SessionAccepted), 1);
    assert_eq!(h.counter("r", Counter::BytesIn), data.len() as u64);
    assert_eq!(h.counter("r", Counter::BytesOut), data.len() as u64 + 8);
    assert_eq!(h.counter("r", Counter::SessionError), 0);
}

#[test]
fn splice_relays_both_directions_with_half_close() {
    half_close_round_trip("127.77.0.1", true);
}

#[test]
fn copy_relays_both_directions_with_half_close() {
    half_close_round_trip("127.77.0.2", false);
}

fn proxy_header_first(ip: &str, version: &str, v: ProxyProtocol) {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let backend = l.local_addr().unwrap();
    let port = free_port(ip);
    let h = start(&format!(
        "relay r {{\n listen on {ip} port {port}\n forward to {} port {}\n \
         proxy-protocol {version}\n}}\n",
        backend.ip(),
        backend.port()
    ));
    let relay_addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
    let mut c = connect(relay_addr);
    c.write_all(b"HELO\r\n").unwrap();
    let (mut s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let want = Header::new(v, Transport::Stream, c.local_addr().unwrap(), relay_addr);
    let mut got = vec![0u8; want.as_bytes().len() + 6];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got[..want.as_bytes().len()], want.as_bytes());
    assert_eq!(&got[want.as_bytes().len()..], b"HELO\r\n");
    // And the session shows up in the listing with the client's port.
    let rows = h.sessions();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].client_port, c.local_addr().unwrap().port());
    assert_eq!(rows[0].backend_port, backend.port());
    assert_eq!(rows[0].relay, 1);
}

#[test]
fn proxy_v2_header_precedes_client_data() {
    proxy_header_first("127.77.0.3", "v2", ProxyProtocol::V2);
}

#[test]
fn proxy_v1_header_precedes_client_data() {
    proxy_header_first("127.77.0.4", "v1", ProxyProtocol::V1);
}

#[test]
fn idle_sessions_time_out() {
    let ip = "127.77.0.5";
    let l = TcpListener::bind((ip, 0)).unwrap();
    let backend = l.local_addr().unwrap();
    let port = free_port(ip);
    let h = start(&format!(
        "relay r {{\n listen on {ip} port {port}\n forward to {} port {}\n \
         session timeout 1\n}}\n",
        backend.ip(),
        backend.port()
    ));
    let t0 = Instant::now();
    let mut c = connect(format!("{ip}:{port}").parse().unwrap());
    let (_s, _) = l.accept().unwrap();
    let mut b = [0u8; 1];
    // The relay closes the idle session: EOF (or a reset) well before our 10 s read timeout.
    let r = c.read(&mut b);
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert_eq!(h.counter("r", Counter::SessionTimeout), 1);
}

#[test]
fn connect_failures_are_retried_then_counted() {
    let ip = "127.77.0.6";
    let dead = free_port(ip); // nothing listens there any more
    let port = free_port(ip);
    let h = start(&format!(
        "relay r {{\n listen on {ip} port {port}\n forward to {ip} port {dead} retry 2\n}}\n"
    ));
    let mut c = connect(format!("{ip}:{port}").parse().unwrap());
    let mut b = [0u8; 1];
    let r = c.read(&mut b);
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    assert!(wait_for(|| h.counter("r", Counter::DropConnectFailed) == 1));
    assert_eq!(h.counter("r", Counter::ConnectRetry), 2);
}

#[test]
fn loop_guard_aborts_a_relay_to_itself() {
    let ip = "127.77.0.7";
    let port = free_port(ip);
    let h = start(&format!(
        "relay r {{\n listen on {ip} port {port}\n forward to {ip} port {port}\n}}\n"
    ));
    let mut c = connect(format!("{ip}:{port}").parse().unwrap());
    let mut b = [0u8; 1];
    let r = c.read(&mut b);
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    assert!(wait_for(|| h.counter("r", Counter::DropLoop) == 1));
    // Exactly one session: the relay did not connect to itself.
    assert_eq!(h.counter("r", Counter::SessionAccepted), 1);
}

#[test]
fn host_state_from_the_health_engine_steers_sessions() {
    let ip = "127.77.0.8";
    let (backend, bh) = reversing_backend(ip, 1);
    let port = free_port(ip);
    let h = start(&format!(
        "table <t> {{ {} }}\n\
         relay r {{\n listen on {ip} port {port}\n forward to <t> port {} mode roundrobin\n}}\n",
        backend.ip(),
        backend.port()
    ));
    let view = h.view("r").unwrap();
    let host_id = view.load().forwards[0].backends[0].host_id;
    assert!(h.set_host_state(host_id, false));
    let relay_addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
    let mut c = connect(relay_addr);
    let mut b = [0u8; 1];
    assert!(matches!(c.read(&mut b), Ok(0) | Err(_)));
    assert!(wait_for(|| h.counter("r", Counter::DropNoBackend) == 1));
    assert!(h.set_host_state(host_id, true));
    let mut c = connect(relay_addr);
    c.write_all(b"abc").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    assert_eq!(&got[8..], b"cba");
    bh.join().unwrap();
    let s = h.summary();
    assert_eq!(s.len(), 2);
}

/// A DNS backend that answers every query with its ID unchanged, QR set and the given tag
/// appended; queries whose first question byte is 0xff are ignored. Stops after `n` packets.
fn dns_backend(ip: &str, tag: u8, n: usize) -> (SocketAddr, thread::JoinHandle<Vec<u16>>) {
    let s = UdpSocket::bind((ip, 0)).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let addr = s.local_addr().unwrap();
    let h = thread::spawn(move || {
        let mut ids = Vec::new();
        let mut buf = [0u8; 512];
        for _ in 0..n {
            let Ok((len, from)) = s.recv_from(&mut buf) else {
                break;
            };
            ids.push(u16::from_be_bytes([buf[0], buf[1]]));
            if buf.get(12) == Some(&0xff) {
                continue;
            }
            let mut ans = buf[..len].to_vec();
            ans[2] |= 0x80;
            ans.push(tag);
            s.send_to(&ans, from).unwrap();
        }
        ids
    });
    (addr, h)
}

#[test]
fn dns_ids_are_remapped_restored_and_timed_out() {
    let ip = "127.77.0.9";
    let (b, bh) = dns_backend(ip, 0xab, 4);
    let port = free_port(ip);
    let h = start(&format!(
        "dns protocol d {{ }}\n\
         relay r {{\n listen on {ip} port {port}\n protocol d\n \
         forward to {} port {}\n session timeout 1\n}}\n",
        b.ip(),
        b.port()
    ));
    let c = UdpSocket::bind((ip, 0)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let relay_addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
    let mut ids_sent = Vec::new();
    for (i, id) in [0x1234u16, 0x1234, 0x0001].into_iter().enumerate() {
        let mut q = vec![0u8; 17];
        q[0..2].copy_from_slice(&id.to_be_bytes());
        q[2] = 1;
        q[5] = 1;
        q[12] = i as u8;
        c.send_to(&q, relay_addr).unwrap();
        let mut buf = [0u8; 512];
        let (n, from) = c.recv_from(&mut buf).unwrap();
        assert_eq!(from, relay_addr, "answers leave from the listener");
        assert_eq!(n, 18);
        assert_eq!(u16::from_be_bytes([buf[0], buf[1]]), id);
        assert_eq!(buf[12], i as u8);
        assert_eq!(buf[17], 0xab);
        ids_sent.push(id);
    }
    // Too short: dropped and counted, no answer.
    c.send_to(&[1, 2, 3, 4, 5], relay_addr).unwrap();
    // Ignored by the backend: times out.
    let mut q = vec![0u8; 13];
    q[12] = 0xff;
    c.send_to(&q, relay_addr).unwrap();
    let mut buf = [0u8; 512];
    assert!(c.recv_from(&mut buf).is_err(), "no answer expected");
    let seen = bh.join().unwrap();
    assert_eq!(seen.len(), 4);
    // The backend saw relay IDs: never 0, all distinct (one permutation cycle), and the two
    // identical client IDs were not passed through as one.
    assert!(seen.iter().all(|&i| i != 0));
    let mut d = seen.clone();
    d.sort();
    d.dedup();
    assert_eq!(d.len(), 4);
    assert!(wait_for(|| h.counter("r", Counter::DnsTimeout) == 1));
    assert_eq!(h.counter("r", Counter::DnsDropShort), 1);
    assert_eq!(h.counter("r", Counter::DnsQuery), 4);
    assert_eq!(h.counter("r", Counter::DnsAnswer), 3);
}

#[test]
fn short_replies_are_not_held_back_by_the_splice() {
    // With SPLICE_F_MORE on the pipe → socket splice, the kernel corks a short final segment
    // until its 200 ms timer: 20 one-byte round trips would take at least 4 s. Without it they
    // take milliseconds; the bound leaves a wide margin for a loaded machine.
    let ip = "127.77.0.10";
    let l = TcpListener::bind((ip, 0)).unwrap();
    let backend = l.local_addr().unwrap();
    let port = free_port(ip);
    let _h = start(&format!(
        "protocol p {{ tcp {{ nodelay }} }}\n\
         relay r {{\n listen on {ip} port {port}\n protocol p\n forward to {} port {}\n}}\n",
        backend.ip(),
        backend.port()
    ));
    let server = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut b = [0u8; 1];
        for _ in 0..20 {
            s.read_exact(&mut b).unwrap();
            s.write_all(&b).unwrap();
        }
    });
    let mut c = connect(format!("{ip}:{port}").parse().unwrap());
    c.set_nodelay(true).unwrap();
    let t0 = Instant::now();
    for i in 0..20u8 {
        c.write_all(&[i]).unwrap();
        let mut b = [0u8; 1];
        c.read_exact(&mut b).unwrap();
        assert_eq!(b[0], i);
    }
    let took = t0.elapsed();
    server.join().unwrap();
    assert!(
        took < Duration::from_secs(3),
        "20 round trips took {took:?}"
    );
}
