//! `InboundSa::open` with a fixed key, never panicking, with checks of what it promises.
//!
//! The first byte picks the cipher (bit 0), ESN (bit 1), the mode (bits 2–3) and the replay
//! window (bits 4–5); see `braid_fuzz::esp::Setup`. Modes:
//!
//! * Raw: the rest is one datagram, opened with an output buffer as long as it. Reaches the
//!   length, SPI, replay and ICV checks (a seed sealed with the fixed key opens, so mutations
//!   of real packets are explored too). A packet that opened must not open again.
//! * Sealed: a script of packets sealed by a real `OutboundSa` (same key) and delivered in a
//!   fuzzer-chosen order, some with one byte flipped: intact fresh packets must open to the
//!   sealed inner packet, flipped ones must be refused without moving the window, and no
//!   sequence number is ever accepted twice.
//! * Crafted: packets with a fuzzer-chosen 64-bit sequence number and a fuzzer-chosen padding
//!   length, whose padding / pad length / next-header bytes are mutated *before* encryption by
//!   an independent reference sealer, so they authenticate and reach the trailer and padding
//!   checks. The outcome must match an RFC 4303 §2.4–2.6 oracle; a refused-but-authentic packet
//!   must still be marked as seen; with ESN, a fresh number less than 2^31 right of the window
//!   must be inferred correctly. The reference sealer is itself checked byte for byte against
//!   `OutboundSa::seal` on the first packet.

#![no_main]

use std::collections::HashSet;

use braid_fuzz::esp::{
    expected_trailer, keys, minimal_pad, next_header_for, plaintext, reference_seal, Mode, Setup, SPI,
};
use braid_fuzz::Bytes;
use braid_ipsec::esp::{EspError, InboundSa, OutboundSa, ESP_MAX_OVERHEAD};
use libfuzzer_sys::fuzz_target;

/// Packets per Sealed or Crafted input, at most.
const MAX_PACKETS: usize = 16;
/// Inner packets are at most this long (inputs are at most 2048 bytes anyway).
const MAX_INNER: usize = 2048;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let setup = Setup::from_byte(first);
    let mut sa = InboundSa::new(SPI, setup.cipher, keys(setup.cipher), setup.esn, setup.window);
    match setup.mode {
        Mode::Raw => raw(&mut sa, rest),
        Mode::Sealed => sealed(&mut sa, setup, rest),
        Mode::Crafted => crafted(&mut sa, setup, rest),
    }
});

fn raw(sa: &mut InboundSa, datagram: &[u8]) {
    let mut out = vec![0u8; datagram.len()];
    match sa.open(datagram, &mut out) {
        Ok(o) => {
            assert!(o.len > 0 && o.len <= datagram.len());
            assert_eq!(sa.packets(), 1);
            assert_eq!(sa.open(datagram, &mut out), Err(EspError::Replayed));
        }
        Err(EspError::BadPadding | EspError::BadNextHeader | EspError::InvalidInnerPacket) => {
            // Authentic: marked even though refused.
            assert_eq!(sa.open(datagram, &mut out), Err(EspError::Replayed));
        }
        Err(_) => {
            assert_eq!(sa.packets(), 0);
            assert_eq!(sa.replay_window().highest(), 0, "a refused packet moved the window");
        }
    }
}

struct Sent {
    packet: Vec<u8>,
    inner: Vec<u8>,
    seq: u64,
}

fn sealed(sa: &mut InboundSa, setup: Setup, data: &[u8]) {
    let mut r = Bytes::new(data);
    let mut outbound = OutboundSa::new(SPI, setup.cipher, keys(setup.cipher), setup.esn);
    let mut sent: Vec<Sent> = Vec::new();
    let mut marked: HashSet<u64> = HashSet::new();
    let mut ops = 0;
    while !r.is_empty() && ops < 4 * MAX_PACKETS {
        ops += 1;
        match r.u8() % 3 {
            0 if sent.len() < MAX_PACKETS => {
                let inner = r.bytes(MAX_INNER);
                let mut out = vec![0u8; inner.len() + ESP_MAX_OVERHEAD];
                let seq = outbound.next_seq();
                let valid = matches!(inner.first().map(|b| b >> 4), Some(4 | 6));
                match outbound.seal(inner, &mut out) {
                    Ok(n) => {
                        assert!(valid, "sealed a packet that is not IPv4 or IPv6");
                        assert_eq!(n % 4, 0, "ESP packet not 4-byte aligned");
                        out.truncate(n);
                        sent.push(Sent {
                            packet: out,
                            inner: inner.to_vec(),
                            seq,
                        });
                    }
                    Err(e) => {
                        assert!(!valid, "refused to seal a valid packet: {e:?}");
                        assert_eq!(e, EspError::InvalidInnerPacket);
                        assert_eq!(outbound.next_seq(), seq, "a refused packet spent a number");
                    }
                }
            }
            0 => {}
            op => {
                let pick = r.u8();
                let (pos, xor) = (r.u16(), r.u8());
                if sent.is_empty() {
                    continue;
                }
                let s = &sent[usize::from(pick) % sent.len()];
                let mut packet = s.packet.clone();
                let flip = op == 2 && xor != 0;
                if flip {
                    let i = usize::from(pos) % packet.len();
                    packet[i] ^= xor;
                }
                let before = (sa.replay_window().highest(), sa.packets());
                let mut out = vec![0u8; packet.len()];
                let result = sa.open(&packet, &mut out);
                if flip {
                    assert!(result.is_err(), "a packet with a flipped byte opened: {result:?}");
                    assert_eq!((sa.replay_window().highest(), sa.packets()), before);
                    continue;
                }
                match result {
                    Ok(o) => {
                        assert!(marked.insert(s.seq), "sequence number {} accepted twice", s.seq);
                        assert_eq!(o.seq, s.seq);
                        assert_eq!(&out[..o.len], &s.inner[..]);
                        assert_eq!(o.next_header, next_header_for(&s.inner));
                    }
                    Err(EspError::Replayed) | Err(EspError::TooOld) => {
                        assert!(
                            marked.contains(&s.seq) || s.seq <= before.0,
                            "fresh packet {} refused as old (highest {})",
                            s.seq,
                            before.0
                        );
                    }
                    Err(e) => panic!("an intact sealed packet was refused: {e:?}"),
                }
            }
        }
    }
}

fn crafted(sa: &mut InboundSa, setup: Setup, data: &[u8]) {
    let mut r = Bytes::new(data);
    let mut marked: HashSet<u64> = HashSet::new();
    for n in 0..MAX_PACKETS {
        if r.is_empty() {
            break;
        }
        let mut seq = r.u64();
        if !setup.esn {
            seq &= 0xffff_ffff;
        }
        let pad = r.u8();
        let mutations = r.u8() % 4;
        let edits: Vec<(u8, u8)> = (0..mutations).map(|_| (r.u8(), r.u8())).collect();
        let inner = r.bytes(MAX_INNER);

        if n == 0 && matches!(inner.first().map(|b| b >> 4), Some(4 | 6)) {
            // The reference sealer agrees with OutboundSa on a conforming packet.
            let mut outbound = OutboundSa::new(SPI, setup.cipher, keys(setup.cipher), setup.esn);
            let mut out = vec![0u8; inner.len() + ESP_MAX_OVERHEAD];
            let len = outbound.seal(inner, &mut out).expect("valid inner packet");
            let reference = plaintext(inner, minimal_pad(inner.len()) as u8, next_header_for(inner));
            assert_eq!(
                out[..len],
                reference_seal(setup.cipher, setup.esn, SPI, 1, &reference)[..],
                "reference sealer disagrees with OutboundSa"
            );
        }

        let mut body = plaintext(inner, pad, next_header_for(inner));
        // Mutate only the trailer region: the padding, the pad length and the next header.
        let trailer = usize::from(pad) + 2;
        let body_len = body.len();
        for (at, xor) in edits {
            body[body_len - 1 - usize::from(at) % trailer] ^= xor;
        }
        let packet = reference_seal(setup.cipher, setup.esn, SPI, seq, &body);
        let expected = expected_trailer(&body);

        let highest = sa.replay_window().highest();
        let mut out = vec![0u8; packet.len()];
        let result = sa.open(&packet, &mut out);
        let fresh = seq > highest && (!setup.esn || seq - highest < 1 << 31);
        match result {
            Ok(o) => {
                assert_eq!(expected, Ok((o.len, o.next_header)), "opened a packet the RFC refuses");
                assert_eq!(o.seq, seq);
                assert_eq!(&out[..o.len], &body[..o.len]);
                assert!(marked.insert(seq), "sequence number {seq} accepted twice");
            }
            Err(e @ (EspError::BadPadding | EspError::BadNextHeader | EspError::InvalidInnerPacket)) => {
                assert!(
                    expected.is_err(),
                    "refused ({e:?}) a packet the RFC accepts: {expected:?}"
                );
                assert!(marked.insert(seq), "sequence number {seq} accepted twice");
                // Authentic, so marked: the same packet again is a replay.
                assert_eq!(sa.open(&packet, &mut out), Err(EspError::Replayed));
            }
            Err(EspError::Replayed | EspError::TooOld) => {
                assert!(
                    !fresh || seq == 0,
                    "fresh sequence number {seq} refused (highest {highest})"
                );
            }
            Err(EspError::AuthenticationFailed) => {
                // Only a wrong ESN guess can fail an authentic packet, never a fresh one.
                assert!(setup.esn && !fresh, "authentic packet {seq} failed (highest {highest})");
            }
            Err(e) => panic!("unexpected refusal of a well-formed packet: {e:?}"),
        }
    }
}
