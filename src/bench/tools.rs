//! Small servers and clients the benchmark suite runs inside lab namespaces, as hidden
//! subcommands of the carpio binary (`carpio bench udp-echo|tcp-echo|connrate|bulk`), so the
//! lab needs no extra packages and every one is a process the lab kills by PID. Each one is
//! bounded in time.

use serde::Serialize;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Prints an error and turns a result into an exit code.
pub fn exit(r: io::Result<()>) -> u8 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("carpio: bench: {e}");
            1
        }
    }
}

/// Echoes every datagram back to its sender until `secs` have passed.
pub fn udp_echo(addr: SocketAddr, secs: u64) -> io::Result<()> {
    let s = UdpSocket::bind(addr)?;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    let end = Instant::now() + Duration::from_secs(secs);
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        match s.recv_from(&mut buf) {
            Ok((n, from)) => {
                let _ = s.send_to(&buf[..n], from);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Echoes what every connection sends (four accepting threads) until `secs` have passed. A
/// bulk sender gets its bytes back only as fast as it reads them; `bulk` below never reads, so
/// the server discards whatever it cannot write back at once.
pub fn tcp_echo(addr: SocketAddr, secs: u64) -> io::Result<()> {
    let l = Arc::new(TcpListener::bind(addr)?);
    let end = Instant::now() + Duration::from_secs(secs);
    let mut hs = Vec::new();
    for _ in 0..4 {
        let l = l.clone();
        hs.push(std::thread::spawn(move || {
            while Instant::now() < end {
                let Ok((mut c, _)) = l.accept() else { continue };
                let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = c.set_nodelay(true);
                let mut buf = vec![0u8; 1 << 16];
                let mut echo = true;
                loop {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            // Small requests are echoed; bulk data is drained (a sink).
                            if echo && n <= 64 {
                                if c.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            } else {
                                echo = false;
                            }
                        }
                    }
                }
            }
        }));
    }
    // The process is killed by the lab (or ends at `secs`): the threads block in accept.
    std::thread::sleep(end.saturating_duration_since(Instant::now()));
    Ok(())
}

#[derive(Serialize)]
struct ConnRate {
    conns: u64,
    errors: u64,
    per_s: f64,
}

/// Connect, send one byte, read it back, close (RST, so no TIME_WAIT piles up in the client),
/// on `threads` threads for `secs`; prints `{"conns":..,"errors":..,"per_s":..}`.
pub fn connrate(addr: SocketAddr, secs: f64, threads: u32) -> io::Result<()> {
    let ok = Arc::new(AtomicU64::new(0));
    let err = Arc::new(AtomicU64::new(0));
    let dur = Duration::from_secs_f64(secs.clamp(0.1, 600.0));
    let start = Instant::now();
    let mut hs = Vec::new();
    for _ in 0..threads.clamp(1, 64) {
        let (ok, err) = (ok.clone(), err.clone());
        hs.push(std::thread::spawn(move || {
            let mut b = [0u8; 1];
            while start.elapsed() < dur {
                let r = (|| -> io::Result<()> {
                    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
                    c.set_nodelay(true)?;
                    c.set_read_timeout(Some(Duration::from_secs(1)))?;
                    c.write_all(b"x")?;
                    c.read_exact(&mut b)?;
                    socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO))?;
                    Ok(())
                })();
                match r {
                    Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => err.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for h in hs {
        let _ = h.join();
    }
    let el = start.elapsed().as_secs_f64();
    let n = ok.load(Ordering::Relaxed);
    let r = ConnRate {
        conns: n,
        errors: err.load(Ordering::Relaxed),
        per_s: n as f64 / el,
    };
    println!("{}", serde_json::to_string(&r).map_err(io::Error::other)?);
    Ok(())
}

#[derive(Serialize)]
struct Bulk {
    bytes: u64,
    gbit_per_s: f64,
}

/// Writes as fast as possible to `addr` for `secs`; prints `{"bytes":..,"gbit_per_s":..}`.
pub fn bulk(addr: SocketAddr, secs: f64) -> io::Result<()> {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    c.set_write_timeout(Some(Duration::from_secs(2)))?;
    let buf = vec![0x5au8; 1 << 16];
    let dur = Duration::from_secs_f64(secs.clamp(0.1, 600.0));
    let start = Instant::now();
    let mut bytes = 0u64;
    while start.elapsed() < dur {
        match c.write(&buf) {
            Ok(n) => bytes += n as u64,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    let el = start.elapsed().as_secs_f64();
    let r = Bulk {
        bytes,
        gbit_per_s: bytes as f64 * 8.0 / el / 1e9,
    };
    println!("{}", serde_json::to_string(&r).map_err(io::Error::other)?);
    Ok(())
}

/// One carp node (carpio's carp shell, macvlan VIP) on `eth0` of the current namespace until
/// killed or `secs` have passed: the failover scenario's carpio side.
pub fn carp_node(vip: std::net::Ipv4Addr, advbase: u8, skew: u8, secs: u64) -> io::Result<()> {
    use crate::carp::shell::{self, ShellConfig, VipMode};
    use crate::carp::{InterfaceConfig, NodeConfig};
    let cfg = ShellConfig {
        name: "carp0".into(),
        carpdev: "eth0".into(),
        netns: None,
        iface: InterfaceConfig {
            nodes: vec![NodeConfig {
                vhid: 1,
                advskew: skew,
            }],
            advbase,
            passphrase: b"secret".to_vec(),
            v4: vec![vip],
            ..Default::default()
        },
        prefix_len: vec![24],
        vip_mode: VipMode::Macvlan,
        group_demote: Vec::new(),
    };
    let h = shell::spawn(cfg)?;
    std::thread::sleep(Duration::from_secs(secs));
    drop(h);
    Ok(())
}
