//! The kernel's owner program and [`super::owner_of`] agree: every packet the program places
//! is placed on the thread the demux would hand it to. Runs the program in the kernel
//! (`BPF_PROG_TEST_RUN`), which needs CAP_BPF; without it the test says so and passes.

use std::net::{Ipv4Addr, Ipv6Addr};

use braid_core::flow::proto;
use braid_core::wire::{checksum, classify};
use braid_sys::steer::OwnerProgram;

use super::owner_of;

/// A small deterministic generator (xorshift), so a failure names a reproducible packet.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn transport(proto: u8, src_port: u16, dst_port: u16) -> Vec<u8> {
    match proto {
        proto::TCP => {
            let mut tcp = vec![0u8; 20];
            tcp[..2].copy_from_slice(&src_port.to_be_bytes());
            tcp[2..4].copy_from_slice(&dst_port.to_be_bytes());
            tcp[12] = 5 << 4;
            tcp[13] = 0x10;
            tcp
        }
        proto::UDP => {
            let mut udp = vec![0u8; 8 + 12];
            udp[..2].copy_from_slice(&src_port.to_be_bytes());
            udp[2..4].copy_from_slice(&dst_port.to_be_bytes());
            let len = udp.len() as u16;
            udp[4..6].copy_from_slice(&len.to_be_bytes());
            udp
        }
        // ICMP or ICMPv6 echo request, the identifier standing in for the ports.
        proto::ICMP | proto::ICMPV6 => {
            let mut icmp = vec![0u8; 8];
            icmp[0] = if proto == proto::ICMP { 8 } else { 128 };
            icmp[4..6].copy_from_slice(&src_port.to_be_bytes());
            icmp
        }
        _ => vec![0u8; 16],
    }
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, option_words: usize, first_fragment: bool, body: &[u8]) -> Vec<u8> {
    let header_len = 20 + 4 * option_words;
    let mut p = vec![0u8; header_len + body.len()];
    p[0] = 0x40 | (header_len / 4) as u8;
    let total = p.len() as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p[4..6].copy_from_slice(&7u16.to_be_bytes());
    if first_fragment {
        p[6] = 0x20;
    }
    p[8] = 64;
    p[9] = proto;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[20..header_len].fill(1); // NOP options
    let sum = checksum::checksum(&p[..header_len]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p[header_len..].copy_from_slice(body);
    p
}

fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 40 + body.len()];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(body.len() as u16).to_be_bytes());
    p[6] = next_header;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p[40..].copy_from_slice(body);
    p
}

fn random_packet(rng: &mut Rng) -> Vec<u8> {
    let protocol = [proto::TCP, proto::UDP, proto::ICMP, 47][(rng.next() % 4) as usize];
    let (src_port, dst_port) = (rng.next() as u16, rng.next() as u16);
    if rng.next().is_multiple_of(2) {
        let (src, dst) = (Ipv4Addr::from(rng.next() as u32), Ipv4Addr::from(rng.next() as u32));
        let options = (rng.next() % 3) as usize * 2;
        let first_fragment = rng.next().is_multiple_of(5) && protocol != proto::ICMP;
        ipv4(
            src,
            dst,
            protocol,
            options,
            first_fragment,
            &transport(protocol, src_port, dst_port),
        )
    } else {
        let protocol = if protocol == proto::ICMP {
            proto::ICMPV6
        } else {
            protocol
        };
        let src = Ipv6Addr::from(u128::from(rng.next()) << 64 | u128::from(rng.next()));
        let dst = Ipv6Addr::from(u128::from(rng.next()) << 64 | u128::from(rng.next()));
        ipv6(src, dst, protocol, &transport(protocol, src_port, dst_port))
    }
}

#[test]
fn the_kernel_program_places_every_flow_on_its_owner() {
    let mut rng = Rng(0x05ee_d0fb_4a1d);
    for threads in [1usize, 2, 3, 4, 7] {
        let program = match OwnerProgram::load(threads as u32) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                eprintln!("SKIPPED the_kernel_program_places_every_flow_on_its_owner: {e} (the tests need CAP_BPF and the bpf() call: run them as root)");
                return;
            }
            Err(e) => panic!("the kernel refused the owner program: {e}"),
        };
        let mut seen = vec![0usize; threads];
        for _ in 0..2000 {
            let packet = random_packet(&mut rng);
            let class = classify(&packet).expect("a well-formed test packet");
            let tuple = class.tuple().expect("whole packets and first fragments carry a tuple");
            let expected = owner_of(tuple, threads);
            let got = program.run(&packet).expect("BPF_PROG_TEST_RUN");
            assert_eq!(
                got as usize, expected,
                "{threads} threads, {tuple:?}, packet {packet:02x?}"
            );
            // Both directions of a flow agree.
            assert_eq!(owner_of(&tuple.reversed(), threads), expected);
            seen[expected] += 1;
        }
        assert!(
            seen.iter().all(|&n| n > 2000 / threads / 2),
            "{threads} threads share the flows: {seen:?}"
        );
    }
}

#[test]
fn a_packet_the_program_cannot_parse_goes_to_thread_zero() {
    let Ok(program) = OwnerProgram::load(4) else {
        eprintln!("SKIPPED a_packet_the_program_cannot_parse_goes_to_thread_zero: cannot load BPF (the tests need CAP_BPF and the bpf() call: run them as root)");
        return;
    };
    assert_eq!(program.run(&[0x50; 40]).unwrap(), 0, "neither IPv4 nor IPv6");
    // Loads past the end of the packet end the program with 0, not with the owner its
    // addresses alone would give.
    let a = Ipv4Addr::new(198, 18, 1, 2);
    let b = (1..=255u8)
        .map(|last| Ipv4Addr::new(198, 18, 2, last))
        .find(|b| program.run(&ipv4(a, *b, 47, 0, false, &[0; 8])).unwrap() != 0)
        .expect("some address pair is not on thread 0");
    assert_eq!(
        program.run(&ipv4(a, b, proto::UDP, 0, false, &[])).unwrap(),
        0,
        "IPv4: no UDP header"
    );
    let short_v6 = ipv6(Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED, proto::TCP, &[]);
    assert_eq!(program.run(&short_v6).unwrap(), 0, "IPv6: no TCP header");
}
