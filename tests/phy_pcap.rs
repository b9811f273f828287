//! pcap writing and reading through carpio's devices: round trip of frames and timestamps,
//! link types preserved, oversize frames counted instead of truncated.

use carpio::counters::Counters;
use carpio::phy::pcap::{PcapSink, PcapSource, read_all};
use carpio::phy::{Batch, Device, FRAME_MAX};
use carpio::wire::classify::LinkType;

fn tmp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("carpio-{name}-{}.pcap", std::process::id()))
}

#[test]
fn pcap_round_trip_keeps_frames_timestamps_and_link_type() {
    for link in [LinkType::Ethernet, LinkType::RawIp, LinkType::LinuxSll] {
        let path = tmp(&format!("rt-{link:?}"));
        let frames: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 14 + usize::from(i)]).collect();
        let mut sink = PcapSink::create(&path, link).unwrap();
        for (i, f) in frames.iter().enumerate() {
            sink.write(f, 1_000_000_007 * i as u64).unwrap();
        }
        assert_eq!(sink.finish().unwrap(), 100);
        let back = read_all(&path).unwrap();
        std::fs::remove_file(&path).ok();
        assert_eq!(back.len(), 100);
        for (i, (b, f)) in back.iter().zip(&frames).enumerate() {
            assert_eq!(&b.data, f);
            assert_eq!(
                b.ts_ns,
                1_000_000_007 * i as u64,
                "nanosecond timestamps survive"
            );
            assert_eq!(b.link, Some(link));
        }
    }
}

#[test]
fn oversize_frames_are_counted_not_truncated() {
    let path = tmp("oversize");
    let mut sink = PcapSink::create(&path, LinkType::Ethernet).unwrap();
    sink.write(&[1u8; 60], 0).unwrap();
    sink.write(&vec![2u8; FRAME_MAX + 1], 1).unwrap();
    sink.write(&vec![3u8; FRAME_MAX], 2).unwrap();
    sink.finish().unwrap();
    let mut src = PcapSource::open(&path, 1).unwrap();
    let mut batch = Batch::new(8);
    let mut drops = Counters::default();
    assert_eq!(src.recv(&mut batch, &mut drops).unwrap(), 2);
    std::fs::remove_file(&path).ok();
    assert_eq!(drops.get(carpio::phy::DevDrop::Oversize.index()), 1);
    let lens: Vec<usize> = batch.iter().map(|p| p.len()).collect();
    assert_eq!(lens, vec![60, FRAME_MAX]);
    assert_eq!(src.frames, 3);
}

#[test]
fn a_file_that_is_not_a_capture_is_a_clear_error() {
    let path = tmp("garbage");
    std::fs::write(&path, b"this is not a capture file at all").unwrap();
    let e = PcapSource::open(&path, 1).err().expect("must fail");
    std::fs::remove_file(&path).ok();
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
}
