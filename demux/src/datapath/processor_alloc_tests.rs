//! Per-packet work allocates nothing: a site's two threads, warmed up, take thousands of
//! packets through every verdict (forwarded, handed over through the [`Mesh`], delivered,
//! learnt, refused, canary probes written, new flows inserted, the table swept) while
//! the counting allocator ([`braid_sys::allocations`]) watches the test's thread.

use braid_sys::allocations::allocations_during;

use super::*;
use crate::datapath::handoff::{Direction, Mesh, MeshSizes};

/// Every packet shape the data path meets, built before anything is counted.
struct Traffic {
    outgoing: Vec<Vec<u8>>,
    /// Replies of the same flows, through pair 1 and pair 2.
    returning: Vec<Vec<u8>>,
    /// Flows no thread has seen yet.
    fresh: Vec<Vec<u8>>,
    refused: Vec<(Vec<u8>, SocketAddr)>,
}

fn traffic() -> Traffic {
    let flows = 0..256u16;
    Traffic {
        outgoing: flows.clone().map(outgoing).collect(),
        returning: flows.map(|n| returning(n, 1 + n % 2)).collect(),
        fresh: (1_000..1_512u16).map(outgoing).collect(),
        refused: vec![
            (returning(1, 1), "198.18.1.99:6081".parse().unwrap()),
            (returning(1, 1), gateway(1, 2)),
            (in_geneve(1, &tcp(HOST_A, HOST_A, 1, 2, tcp_flags::ACK)), gateway(1, 1)),
            (in_geneve(1, &[0x45, 0, 0]), gateway(1, 1)),
        ],
    }
}

/// One pass of `traffic` through both threads of `a`, the way two data threads would run it;
/// returns how many packets reached the TUN or a gateway.
fn pass(a: &mut Site, mesh: &Mesh, traffic: &Traffic, fresh: &[Vec<u8>], now: u64) -> usize {
    let mut scratch = [0u8; 2048];
    let mut reply = [0u8; HEADROOM + 128];
    let mut moved = 0;
    for (reader, packet) in traffic.outgoing.iter().chain(fresh).enumerate() {
        let reader = reader % 2;
        let bytes = &mut scratch[..packet.len()];
        bytes.copy_from_slice(packet);
        match a.threads[reader].outbound(bytes, true, now) {
            OutboundVerdict::Forward(_) => moved += 1,
            OutboundVerdict::HandOff(owner) => {
                mesh.send(reader, owner, Direction::Outbound, bytes).unwrap();
                let mut parcel = mesh.receive(owner).unwrap();
                if let OutboundVerdict::Forward(_) = a.threads[owner].outbound(parcel.bytes_mut(), false, now) {
                    moved += 1;
                }
                mesh.recycle(parcel);
            }
            OutboundVerdict::Dropped => {}
        }
    }
    for (i, datagram) in traffic.returning.iter().enumerate() {
        let pair = 1 + (i % 2) as PairId;
        let bytes = &mut scratch[..datagram.len()];
        bytes.copy_from_slice(datagram);
        match a.threads[0].inbound(bytes, gateway(1, pair), now, now * 1_000, true, &mut reply) {
            InboundVerdict::Deliver { .. } => moved += 1,
            InboundVerdict::HandOff {
                owner,
                pair,
                inner_at,
                claimed,
            } => {
                let direction = Direction::Inbound {
                    pair,
                    from: gateway(1, pair),
                    claimed,
                };
                mesh.send(0, owner, direction, &bytes[inner_at..]).unwrap();
                let mut parcel = mesh.receive(owner).unwrap();
                let verdict =
                    a.threads[owner].inbound_inner(parcel.bytes_mut(), &claimed, pair, now, now * 1_000, &mut reply);
                if let InboundVerdict::Deliver { .. } = verdict {
                    moved += 1;
                }
                mesh.recycle(parcel);
            }
            _ => {}
        }
    }
    for (datagram, from) in &traffic.refused {
        let bytes = &mut scratch[..datagram.len()];
        bytes.copy_from_slice(datagram);
        assert_eq!(
            a.threads[0].inbound(bytes, *from, now, now * 1_000, true, &mut reply),
            InboundVerdict::Consumed
        );
    }
    for thread in &mut a.threads {
        for pair in [1, 2] {
            thread.probe(pair, now, &mut scratch);
        }
        thread.steering.sweep(now);
        thread.publish_counts();
    }
    moved
}

#[test]
fn per_packet_work_allocates_nothing_once_warm() {
    let mut a = site(1, &[1, 2], 2);
    let mesh = Mesh::new(
        2,
        MeshSizes {
            small_bytes: 2048,
            small_per_thread: 8,
            large_bytes: 4096,
            large_per_thread: 1,
            inbox: 8,
        },
    )
    .unwrap();
    let traffic = traffic();
    // Warm up: the flows are learnt, both threads have handed over and been handed to.
    let warm = pass(&mut a, &mesh, &traffic, &[], T0);
    assert!(warm >= 500, "only {warm} of 512 packets moved while warming up");
    let (moved, allocations) = allocations_during(|| {
        let mut moved = pass(&mut a, &mesh, &traffic, &traffic.fresh, T0 + 1);
        for round in 2..20 {
            moved += pass(&mut a, &mesh, &traffic, &[], T0 + round);
        }
        moved
    });
    assert!(moved >= 19 * 500, "only {moved} packets moved");
    assert_eq!(allocations, 0, "{moved} packets cost {allocations} heap allocations");
}
