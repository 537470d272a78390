//! Coalescing and segmenting allocate nothing: a batch of two TCP flows' segments is merged
//! into super-packets, each assembled and cut back into segments, a hundred times over, while
//! the counting allocator ([`braid_sys::allocations`]) watches.

use braid_core::flow::tcp_flags::ACK;
use braid_sys::allocations::allocations_during;

use super::testutil::{tcp_v4, TcpSpec};
use super::{Coalescer, Emit, Segmenter, VnetHeader, MAX_SUPER_PACKET, VNET_HEADER_LEN};

/// `count` back-to-back full segments of one flow (source port `port`), then one short one.
fn run(port: u16, count: usize) -> Vec<Vec<u8>> {
    (0..=count)
        .map(|i| {
            let size = if i == count { 300 } else { 1400 };
            tcp_v4(&TcpSpec {
                src_port: port,
                seq: 1_000 + (i * 1400) as u32,
                flags: ACK,
                ip_id: i as u16,
                payload: vec![i as u8; size],
                ..TcpSpec::default()
            })
        })
        .collect()
}

#[test]
fn coalescing_and_segmenting_allocate_nothing() {
    let mut batch = run(40_000, 30);
    batch.extend(run(40_001, 20));
    let mut coalescer = Coalescer::new(batch.len());
    let mut super_packet = vec![0u8; VNET_HEADER_LEN + MAX_SUPER_PACKET];
    let mut segment = [0u8; 2048];
    // (segments that came back, super-packets they came back from)
    let mut one_round = || {
        let (mut segments, mut supers) = (0, 0);
        coalescer.start_batch(batch.len());
        for (i, packet) in batch.iter().enumerate() {
            coalescer.push(i, packet);
        }
        for emit in coalescer.emits() {
            let Emit::SuperPacket { run, .. } = emit else {
                segments += 1;
                continue;
            };
            supers += 1;
            let len = coalescer.assemble(run, |i| &batch[i][..], &mut super_packet);
            let header = VnetHeader::parse(&super_packet[..len]).unwrap();
            let mut segmenter = Segmenter::new(&header, &super_packet[VNET_HEADER_LEN..len]).unwrap();
            while segmenter.next_into(&mut segment).unwrap().is_some() {
                segments += 1;
            }
        }
        (segments, supers)
    };
    assert_eq!(
        one_round(),
        (31 + 21, 2),
        "warm-up: each flow's run is one super-packet"
    );
    let (segments, allocations) = allocations_during(|| (0..100).map(|_| one_round().0).sum::<usize>());
    assert_eq!(segments, 100 * 52);
    assert_eq!(
        allocations, 0,
        "{segments} segments cost {allocations} heap allocations"
    );
}
