//! The pieces of scripts/bench-relay.sh that need no other tool:
//!
//! ```text
//! relay_run relay CONFIG [WORKERS]     run the relays of CONFIG until stdin closes, then print
//!                                      their counters
//! relay_run echo ADDR [THREADS]        accept; read one byte, write it back, close (for the
//!                                      connection-rate test)
//! relay_run connrate ADDR SECS [THREADS]
//!                                      connect, send a byte, read it back, close, as fast as
//!                                      possible for SECS; prints connections per second
//! relay_run hold ADDR N SECS           open N idle connections, print "held N", keep them SECS
//! ```
//!
//! Every loop is bounded by a count or a duration; the addresses are the caller's (the script
//! uses 198.18.0.0/15 inside its own network namespaces).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn usage() -> ! {
    eprintln!(
        "usage: relay_run relay CONFIG [WORKERS] | echo ADDR [THREADS] | \
         connrate ADDR SECS [THREADS] | hold ADDR N SECS"
    );
    std::process::exit(2)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| usage())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let _ = carpio::sys::splice::raise_nofile(1 << 20);
    match args.get(1).map(String::as_str) {
        Some("relay") => relay(&args),
        Some("echo") => echo(&args),
        Some("connrate") => connrate(&args),
        Some("hold") => hold(&args),
        _ => usage(),
    }
}

fn relay(args: &[String]) {
    let path: String = arg(args, 2);
    let workers: Option<usize> = args.get(3).and_then(|s| s.parse().ok());
    let config = match carpio::config::load(std::path::Path::new(&path), &[]) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1)
        }
    };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let h = match carpio::relay::spawn(&config, carpio::relay::Options { workers, seed }) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("relay: {e}");
            std::process::exit(1)
        }
    };
    println!("ready");
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    for (_, name) in h.relays() {
        for (c, v) in h.counters(&name) {
            if v != 0 {
                println!("{name} {} {v}", c.name());
            }
        }
    }
}

fn echo(args: &[String]) {
    let addr: SocketAddr = arg(args, 2);
    let threads: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(4);
    let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    println!("listening");
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let l = l.try_clone().expect("listener clone");
            std::thread::spawn(move || {
                while let Ok((mut s, _)) = l.accept() {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut b = [0u8; 1];
                    if s.read_exact(&mut b).is_ok() {
                        let _ = s.write_all(&b);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
}

fn connrate(args: &[String]) {
    let addr: SocketAddr = arg(args, 2);
    let secs: u64 = arg(args, 3);
    let threads: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(2);
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(secs);
    let t0 = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            let (done, failed) = (done.clone(), failed.clone());
            std::thread::spawn(move || {
                while Instant::now() < end {
                    let ok = (|| -> std::io::Result<()> {
                        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
                        s.set_read_timeout(Some(Duration::from_secs(2)))?;
                        s.set_nodelay(true)?;
                        s.write_all(b"x")?;
                        let mut b = [0u8; 1];
                        s.read_exact(&mut b)
                    })();
                    match ok {
                        Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for h in hs {
        let _ = h.join();
    }
    let el = t0.elapsed().as_secs_f64();
    println!(
        "{:.0} conn/s ({} ok, {} failed, {:.1} s)",
        done.load(Ordering::Relaxed) as f64 / el,
        done.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        el
    );
}

fn hold(args: &[String]) {
    let addr: SocketAddr = arg(args, 2);
    let n: usize = arg(args, 3);
    let secs: u64 = arg(args, 4);
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(s) => v.push(s),
            Err(e) => {
                eprintln!("hold: {e}");
                break;
            }
        }
    }
    println!("held {}", v.len());
    std::thread::sleep(Duration::from_secs(secs));
}
