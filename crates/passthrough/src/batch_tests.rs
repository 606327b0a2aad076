use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use super::*;

#[test]
fn gather_takes_equal_sizes_and_one_shorter_last() {
    let mut g = Gather::default();
    assert!(g.push(&[1; 10], 64));
    assert!(g.push(&[2; 10], 64));
    // Longer than the segment: must start a new batch.
    assert!(!g.push(&[3; 11], 64));
    assert!(g.push(&[4; 4], 64));
    // After a shorter one the batch is closed, whatever the size.
    assert!(!g.push(&[5; 4], 64));
    assert!(!g.push(&[5; 10], 64));
    let (contents, segment) = g.pending().expect("a batch");
    assert_eq!(segment, 10);
    assert_eq!(contents.len(), 24);
    g.clear();
    assert!(g.pending().is_none());
    assert!(g.push(&[6; 11], 64));
}

#[test]
fn gather_keeps_segment_and_byte_bounds() {
    let mut g = Gather::default();
    assert!(g.push(&[0; 100], 2));
    assert!(g.push(&[0; 100], 2));
    assert!(!g.push(&[0; 100], 2), "max_segments");
    g.clear();
    let big = vec![0; 40_000];
    assert!(g.push(&big, 64));
    assert!(!g.push(&big, 64), "MAX_GSO_BYTES");
    g.clear();
    // An empty datagram is never a segment of a batch.
    assert!(g.push(&[], 64));
    assert!(!g.push(&[], 64));
    assert_eq!(g.pending().map(|(c, _)| c.len()), Some(0));
}

#[test]
fn slot_splits_by_stride_and_counts_empty() {
    let from: SocketAddr = "127.0.0.1:1".parse().expect("addr");
    let data = [7u8; 25];
    let slot = Slot {
        from,
        stride: 10,
        data: &data,
    };
    assert_eq!(slot.count(), 3);
    let lens: Vec<usize> = slot.datagrams().map(<[u8]>::len).collect();
    assert_eq!(lens, [10, 10, 5]);
    let empty = Slot {
        from,
        stride: 1,
        data: &[],
    };
    assert_eq!(empty.count(), 1);
    assert_eq!(empty.datagrams().count(), 1);
}

/// Real sockets on loopback: a GSO send of unequal last size arrives as
/// the same datagrams (split by GRO stride or one per buffer), in order.
#[test]
fn send_segments_then_recv_batch_round_trip() {
    let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let rx_state = UdpSocketState::new((&rx).into()).expect("state");
    let tx_state = UdpSocketState::new((&tx).into()).expect("state");
    let to = rx.local_addr().expect("addr");
    let mut contents = Vec::new();
    let mut want = Vec::new();
    for i in 0..20u8 {
        let len = if i == 19 { 300 } else { 1200 };
        let d = vec![i; len];
        contents.extend_from_slice(&d);
        want.push(d);
    }
    let (sent, lost) = send_segments(&tx_state, &tx, to, &contents, 1200);
    assert_eq!((sent, lost), (20, 0));

    let mut batch = RecvBatch::default();
    let mut got: Vec<Vec<u8>> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while got.len() < want.len() && std::time::Instant::now() < deadline {
        match batch.recv(&rx_state, &rx) {
            Ok(n) => {
                for slot in (0..n).filter_map(|i| batch.slot(i)) {
                    assert_eq!(slot.from, tx.local_addr().expect("addr"));
                    got.extend(slot.datagrams().map(<[u8]>::to_vec));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("recv: {e}"),
        }
    }
    assert_eq!(got, want);
}
