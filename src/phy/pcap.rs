//! pcap and pcapng files as a [`Device`](super::Device), through the `pcap-file` crate.
//!
//! Reading: classic pcap (micro- and nanosecond, either byte order) and pcapng (enhanced and
//! simple packet blocks; the interface description gives each packet its link type). Link types
//! carpio understands: Ethernet (1), raw IP (101, and 228/229 for IPv4/IPv6 only) and Linux
//! cooked capture v1 (113). Frames of any other link type are counted as
//! `drop_link_unsupported`, so every frame of a file is accounted for.
//! Writing: classic pcap with nanosecond timestamps.
//!
//! A malformed file is an error with a message naming the file; frames read before it stay
//! counted. Nothing here panics on a hostile file.

use super::{Batch, DevDrop, Device, Verdict};
use crate::counters::Counters;
use crate::wire::classify::LinkType;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::{DataLink, TsResolution};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Maps a pcap link type to carpio's, if supported. The upper bits of the 32-bit field carry
/// FCS-length flags (libpcap's `LT_LINKTYPE` masks them off with 0x03FFFFFF); they are ignored.
pub fn link_type(dl: DataLink) -> Option<LinkType> {
    let dl = match dl {
        DataLink::Unknown(v) => DataLink::from(v & 0x03ff_ffff),
        other => other,
    };
    match dl {
        DataLink::ETHERNET => Some(LinkType::Ethernet),
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => Some(LinkType::RawIp),
        DataLink::LINUX_SLL => Some(LinkType::LinuxSll),
        _ => None,
    }
}

/// The pcap link type carpio writes for one of its own.
pub fn data_link(link: LinkType) -> DataLink {
    match link {
        LinkType::Ethernet => DataLink::ETHERNET,
        LinkType::RawIp => DataLink::RAW,
        LinkType::LinuxSll => DataLink::LINUX_SLL,
    }
}

/// Receives a frame's bytes, timestamp (ns) and link type (`None`: unsupported).
type FrameFn<'a> = dyn FnMut(&[u8], u64, Option<LinkType>) + 'a;

enum Reader {
    Pcap(PcapReader<BufReader<File>>),
    /// The reader, and the link type of each interface of the current section in id order.
    PcapNg(Box<PcapNgReader<BufReader<File>>>, Vec<Option<LinkType>>),
}

/// Reads frames from a pcap or pcapng file, optionally several times over (`loops`).
pub struct PcapSource {
    path: PathBuf,
    reader: Reader,
    loops_left: u64,
    /// Timestamp shift added on each new loop so time keeps increasing across loops.
    ts_shift_ns: u64,
    last_ts_ns: u64,
    first_ts_ns: Option<u64>,
    done: bool,
    /// Frames read in the current pass (every frame, delivered or dropped).
    pub frames: u64,
}

fn err(path: &Path, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {e}", path.display()),
    )
}

fn open_reader(path: &Path) -> io::Result<Reader> {
    let mut f = File::open(path).map_err(|e| err(path, e))?;
    let mut magic = [0u8; 4];
    f.read_exact(&mut magic)
        .map_err(|_| err(path, "not a pcap or pcapng file (too short)"))?;
    f.seek(SeekFrom::Start(0))?;
    let r = BufReader::with_capacity(1 << 16, f);
    if magic == [0x0a, 0x0d, 0x0d, 0x0a] {
        Ok(Reader::PcapNg(
            Box::new(PcapNgReader::new(r).map_err(|e| err(path, e))?),
            Vec::new(),
        ))
    } else {
        Ok(Reader::Pcap(PcapReader::new(r).map_err(|e| err(path, e))?))
    }
}

impl PcapSource {
    /// Opens `path`; `loops` is how many times the file is read in all (at least once).
    pub fn open(path: &Path, loops: u64) -> io::Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            reader: open_reader(path)?,
            loops_left: loops.max(1) - 1,
            ts_shift_ns: 0,
            last_ts_ns: 0,
            first_ts_ns: None,
            done: false,
            frames: 0,
        })
    }

    /// The file's link type (for pcapng, the first interface's).
    pub fn file_link(&self) -> Option<DataLink> {
        match &self.reader {
            Reader::Pcap(r) => Some(r.header().datalink),
            Reader::PcapNg(r, _) => r.interfaces().first().map(|i| i.linktype),
        }
    }

    /// Reads the next frame into `f(data, ts_ns, link)`; `Ok(false)` at end of file.
    fn next_frame(&mut self, f: &mut FrameFn<'_>) -> io::Result<bool> {
        loop {
            match &mut self.reader {
                Reader::Pcap(r) => {
                    let header = r.header();
                    let link = link_type(header.datalink);
                    // Raw records: hostile captures have orig_len < incl_len or incl_len >
                    // snaplen, which tcpdump reads anyway; so does carpio (the bytes present
                    // are the frame).
                    match r.next_raw_packet() {
                        None => return Ok(false),
                        Some(Err(e)) => return Err(err(&self.path, e)),
                        Some(Ok(p)) => {
                            let frac_ns = match header.ts_resolution {
                                TsResolution::MicroSecond => {
                                    u64::from(p.ts_frac).saturating_mul(1_000)
                                }
                                TsResolution::NanoSecond => u64::from(p.ts_frac),
                            };
                            let ts = u64::from(p.ts_sec)
                                .saturating_mul(1_000_000_000)
                                .saturating_add(frac_ns);
                            f(&p.data, ts, link);
                            return Ok(true);
                        }
                    }
                }
                Reader::PcapNg(r, links) => match r.next_block() {
                    None => return Ok(false),
                    Some(Err(e)) => return Err(err(&self.path, e)),
                    Some(Ok(Block::SectionHeader(_))) => links.clear(),
                    Some(Ok(Block::InterfaceDescription(i))) => links.push(link_type(i.linktype)),
                    Some(Ok(Block::EnhancedPacket(p))) => {
                        let link = links.get(p.interface_id as usize).copied().flatten();
                        // pcap-file reads EPB timestamps as nanoseconds whatever if_tsresol says;
                        // only their differences matter to a replay.
                        f(&p.data, p.timestamp.as_nanos() as u64, link);
                        return Ok(true);
                    }
                    Some(Ok(Block::SimplePacket(p))) => {
                        let link = links.first().copied().flatten();
                        f(&p.data, 0, link);
                        return Ok(true);
                    }
                    // Section headers, interface descriptions, statistics, name resolution:
                    // not frames.
                    Some(Ok(_)) => continue,
                },
            }
        }
    }
}

impl Device for PcapSource {
    fn recv(
        &mut self,
        batch: &mut Batch,
        drops: &mut Counters<{ DevDrop::COUNT }>,
    ) -> io::Result<usize> {
        batch.clear();
        while !self.done && batch.len() < batch.capacity() {
            let shift = self.ts_shift_ns;
            let mut got: Option<(u64, Option<DevDrop>)> = None;
            let more = self.next_frame(&mut |data, ts, link| {
                let ts = ts.saturating_add(shift);
                let outcome = match link {
                    None => Some(DevDrop::LinkUnsupported),
                    Some(link) => match batch.slot() {
                        Some(p) => {
                            if p.fill(data, ts, link) {
                                batch.commit();
                                None
                            } else {
                                Some(DevDrop::Oversize)
                            }
                        }
                        None => Some(DevDrop::Oversize),
                    },
                };
                got = Some((ts, outcome));
            });
            let more = match more {
                Ok(m) => m,
                Err(e) => {
                    self.done = true;
                    return if batch.is_empty() {
                        Err(e)
                    } else {
                        Ok(batch.len())
                    };
                }
            };
            if let Some((ts, outcome)) = got {
                self.frames += 1;
                self.first_ts_ns.get_or_insert(ts);
                self.last_ts_ns = self.last_ts_ns.max(ts);
                if let Some(d) = outcome {
                    drops.add(d.index(), 1);
                }
            }
            if !more {
                if self.loops_left == 0 {
                    self.done = true;
                } else {
                    self.loops_left -= 1;
                    let span = self.last_ts_ns - self.first_ts_ns.unwrap_or(self.last_ts_ns);
                    self.ts_shift_ns = self.ts_shift_ns.saturating_add(span + 1_000);
                    self.reader = open_reader(&self.path)?;
                }
            }
        }
        Ok(batch.len())
    }

    fn send(&mut self, _batch: &Batch) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a pcap source cannot transmit",
        ))
    }

    fn exhausted(&self) -> bool {
        self.done
    }
}

/// Writes frames to a classic pcap file with nanosecond timestamps.
pub struct PcapSink {
    writer: PcapWriter<BufWriter<File>>,
    /// Write packets with verdict [`Verdict::Pass`] too (the replay's pass-through of frames that
    /// are not carpio's), not only [`Verdict::Tx`].
    pub include_pass: bool,
    pub written: u64,
}

impl PcapSink {
    pub fn create(path: &Path, link: LinkType) -> io::Result<Self> {
        let f = File::create(path).map_err(|e| err(path, e))?;
        let header = PcapHeader {
            datalink: data_link(link),
            ts_resolution: TsResolution::NanoSecond,
            snaplen: 65535,
            ..PcapHeader::default()
        };
        let writer = PcapWriter::with_header(BufWriter::with_capacity(1 << 16, f), header)
            .map_err(|e| err(path, e))?;
        Ok(Self {
            writer,
            include_pass: false,
            written: 0,
        })
    }

    /// Writes one frame.
    pub fn write(&mut self, frame: &[u8], ts_ns: u64) -> io::Result<()> {
        let pkt = PcapPacket::new(Duration::from_nanos(ts_ns), frame.len() as u32, frame);
        self.writer
            .write_packet(&pkt)
            .map_err(|e| io::Error::other(e.to_string()))?;
        self.written += 1;
        Ok(())
    }

    /// Flushes buffered frames and closes the file; returns the number of frames written.
    pub fn finish(self) -> io::Result<u64> {
        use std::io::Write;
        self.writer.into_writer().flush()?;
        Ok(self.written)
    }
}

impl Device for PcapSink {
    fn recv(
        &mut self,
        batch: &mut Batch,
        _drops: &mut Counters<{ DevDrop::COUNT }>,
    ) -> io::Result<usize> {
        batch.clear();
        Ok(0)
    }

    fn send(&mut self, batch: &Batch) -> io::Result<usize> {
        let mut n = 0;
        for p in batch.iter() {
            if p.verdict == Verdict::Tx || (self.include_pass && p.verdict == Verdict::Pass) {
                self.write(p.data(), p.ts_ns)?;
                n += 1;
            }
        }
        Ok(n)
    }

    fn exhausted(&self) -> bool {
        true
    }
}

/// A frame read from a file by [`read_all`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFrame {
    /// `None` for a link type carpio does not handle.
    pub link: Option<LinkType>,
    pub ts_ns: u64,
    pub data: Vec<u8>,
}

/// Reads every frame of a file into memory. For tests and fixtures.
pub fn read_all(path: &Path) -> io::Result<Vec<FileFrame>> {
    let mut src = PcapSource::open(path, 1)?;
    let mut out = Vec::new();
    while src.next_frame(&mut |d, ts_ns, link| {
        out.push(FileFrame {
            link,
            ts_ns,
            data: d.to_vec(),
        })
    })? {}
    Ok(out)
}
