//! Writes the seed corpora of every fuzz target: `cargo run --release --bin seeds` (from
//! `fuzz/`; an optional argument names the corpus root instead of `corpus/`).
//!
//! Real IKE traffic comes from running two engines against each other exactly as the
//! `ike_engine` target does (`braid_fuzz::engine::Sim`), with recording on: every message
//! they exchange seeds `ike_message` (and, behind the non-ESP marker, `port_classify`); the
//! plaintext chains of IKE_SA_INIT and hand-built inner chains of every decoded payload type
//! seed `ike_payloads`; the scripts themselves (and scripts that replay recorded messages into
//! a live engine) seed `ike_engine`. ESP seeds are packets sealed with the fixed key of
//! `esp_open`, one set per mode, cipher and ESN setting.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Instant;

use braid_fuzz::corpus::Corpus;
use braid_fuzz::engine::{encode_script, Op, Sim};
use braid_fuzz::esp::{
    ipv4_packet, ipv6_packet, keys, minimal_pad, next_header_for, plaintext, reference_seal, Mode, Setup, SPI,
};
use braid_fuzz::Bytes;
use braid_ipsec::esp::{EspCipher, OutboundSa, ESP_MAX_OVERHEAD};
use braid_ipsec::ike::negotiate::{esp_offer, ike_offer, selector_for_prefix, ChildExchange};
use braid_ipsec::ike::wire::{
    encode_payloads, exchange, notify_type, payload_type, protocol, Delete, Identification, Notify, Payload,
    TrafficSelector,
};
use braid_ipsec::port::NON_ESP_MARKER;
use braid_ipsec::proposal::{default_esp_proposals, default_ike_proposals};

fn main() -> std::io::Result<()> {
    let root = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("corpus"), PathBuf::from);
    let mut port = Corpus::new(&root, "port_classify", 4096);
    let mut esp = Corpus::new(&root, "esp_open", 2048);
    let mut message = Corpus::new(&root, "ike_message", 4096);
    let mut payloads = Corpus::new(&root, "ike_payloads", 4096);
    let mut engine = Corpus::new(&root, "ike_engine", 4096);

    let recorded = engine_seeds(&mut engine);
    for m in &recorded {
        message.add(m.clone());
        let mut d = NON_ESP_MARKER.to_vec();
        d.extend_from_slice(m);
        port.add(d);
        if m.len() > 28 && m[18] == exchange::IKE_SA_INIT {
            let mut chain = vec![m[16]];
            chain.extend_from_slice(&m[28..]);
            payloads.add(chain);
        }
    }
    payload_seeds(&mut payloads);
    esp_seeds(&mut esp, &mut port);
    port.add(vec![0xff]);
    port.add(vec![0, 0, 0, 0]);
    port.add(vec![1, 2, 3]);

    for c in [&port, &esp, &message, &payloads, &engine] {
        c.write()?;
    }
    Ok(())
}

/// Runs scripts on engine pairs; adds each script to `corpus` and returns every message the
/// engines exchanged.
fn engine_seeds(corpus: &mut Corpus) -> Vec<Vec<u8>> {
    use Op::*;
    let pump = |n: usize| -> Vec<Op> { (0..n).flat_map(|_| [Tick { steps: 0 }, Pump]).collect() };
    // Long enough for liveness checks (5 s), CHILD rekeys (20 s) and IKE rekeys (60 s).
    let long: Vec<Op> = std::iter::once(Pump)
        .chain((0..40).flat_map(|i| {
            [
                Tick { steps: 24 },
                Pump,
                Esp {
                    on_a: i % 2 == 0,
                    len: 8,
                },
            ]
        }))
        .collect();
    let mut scripts: Vec<(u8, Vec<Op>, bool)> = Vec::new();
    // (setup, script, whether both sides must end with a CHILD SA)
    for setup in [0x00, 0x10, 0x02, 0x04, 0x08, 0x40, 0x50] {
        scripts.push((setup, pump(3), true));
    }
    scripts.push((0x00, long.clone(), true));
    scripts.push((0x18, long, true));
    scripts.push((0x01, pump(4), true)); // INVALID_KE_PAYLOAD, then P-256
    for setup in [0x03, 0x0c, 0x20, 0x80] {
        scripts.push((setup, pump(4), false)); // refused: NO_PROPOSAL_CHOSEN, AUTH failures
    }
    // Lost and duplicated messages, retransmissions.
    scripts.push((
        0x00,
        vec![
            Drop { to_a: false },
            Tick { steps: 5 },
            Replay { to_a: false },
            Deliver { to_a: false },
            Deliver { to_a: true },
            Replay { to_a: true },
            Deliver { to_a: true },
            Tick { steps: 5 },
            Pump,
            Deliver { to_a: false },
            Drop { to_a: true },
            Tick { steps: 10 },
            Pump,
            Tick { steps: 10 },
            Pump,
        ],
        true,
    ));
    // Rekeys on demand, a restart, liveness with data-path hints.
    scripts.push((
        0x10,
        vec![
            Pump,
            Esp { on_a: true, len: 1 },
            RekeyChild { on_a: true },
            Pump,
            Esp { on_a: false, len: 2 },
            RekeyChild { on_a: false },
            Pump,
            Tick { steps: 40 },
            Pump,
            Restart { on_a: false },
            Tick { steps: 2 },
            Pump,
            PeerAlive { on_a: true },
            Tick { steps: 60 },
            Pump,
            Esp { on_a: true, len: 3 },
        ],
        true,
    ));
    // A dead peer: nothing from b for a while, then it answers again.
    scripts.push((
        0x00,
        [Pump]
            .into_iter()
            .chain((0..12).flat_map(|_| [Tick { steps: 30 }, Drop { to_a: false }, Drop { to_a: false }]))
            .chain(pump(4))
            .chain((0..3).flat_map(|_| [Tick { steps: 20 }, Pump]))
            .collect(),
        true,
    ));
    // Damaged messages.
    scripts.push((
        0x00,
        vec![
            Mutate {
                to_a: false,
                pos: 40,
                xor: 1,
            },
            Tick { steps: 5 },
            Truncate { to_a: false, len: 100 },
            Tick { steps: 10 },
            Pump,
            Mutate {
                to_a: true,
                pos: 60,
                xor: 0x80,
            },
            Tick { steps: 10 },
            Pump,
        ],
        false,
    ));

    let mut recorded = Vec::new();
    for (setup, ops, must_establish) in &scripts {
        let bytes = encode_script(*setup, ops);
        let mut sim = Sim::new(*setup, Instant::now(), true);
        sim.run_script(&mut Bytes::new(&bytes[1..]));
        let log = sim.log.take().unwrap_or_default();
        println!(
            "script setup {setup:#04x}: {} ops, {} bytes, {} messages, established {}, a: {:?}",
            ops.len(),
            bytes.len(),
            log.len(),
            sim.established(),
            sim.a.stats()
        );
        if *must_establish {
            assert!(
                sim.established(),
                "seed script with setup {setup:#04x} did not establish"
            );
        }
        corpus.add(bytes);
        recorded.extend(log);
    }

    // Replays of recorded messages: IKE_SA_INIT requests from other addresses, and every other
    // message behind the SPIs of a live IKE SA (so it reaches message-ID and SK checks).
    let mut replays = BTreeSet::new();
    for (to_a, m) in &recorded {
        if m.len() < 28 {
            continue;
        }
        let op = if m[18] == exchange::IKE_SA_INIT {
            Inject {
                to_a: *to_a,
                from: 2,
                bytes: m.clone(),
            }
        } else {
            InjectOnSa {
                to_a: *to_a,
                next_payload: m[16],
                exchange: m[18],
                flags: m[19],
                message_id: u32::from_be_bytes([m[20], m[21], m[22], m[23]]),
                body: m[28..].to_vec(),
            }
        };
        let script = encode_script(0, &[Pump, op]);
        if replays.len() < 64 && replays.insert(script.clone()) {
            corpus.add(script);
        }
    }
    recorded.into_iter().map(|(_, m)| m).collect()
}

/// Chains of every payload type braid decodes, as IKE_AUTH, CREATE_CHILD_SA and
/// INFORMATIONAL carry them inside SK, plus each payload alone.
fn payload_seeds(corpus: &mut Corpus) {
    let site_a = selector_for_prefix(Ipv4Addr::new(198, 18, 1, 0).into(), 24);
    let site_b = selector_for_prefix(Ipv4Addr::new(198, 18, 2, 0).into(), 24);
    let v6: IpAddr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0).into();
    let v6_ts = TrafficSelector::from_cidr(v6, 48).expect("/48");
    let mut opaque = TrafficSelector::host(Ipv4Addr::new(198, 18, 1, 7).into());
    opaque.ip_protocol = 6;
    opaque.start_port = 0xffff;
    opaque.end_port = 0;
    let mut tcp = TrafficSelector::any_for(Ipv4Addr::new(198, 18, 1, 5).into(), Ipv4Addr::new(198, 18, 1, 9).into());
    tcp.ip_protocol = 6;
    tcp.start_port = 443;
    tcp.end_port = 443;
    let all: Vec<Payload> = vec![
        Payload::Sa(ike_offer(&default_ike_proposals(), &[])),
        Payload::Sa(ike_offer(&default_ike_proposals(), &7u64.to_be_bytes())),
        Payload::Sa(esp_offer(&default_esp_proposals(), 0x1234_5678, ChildExchange::IkeAuth)),
        Payload::Ke {
            group: 31,
            data: vec![9; 32],
        },
        Payload::Nonce(vec![0x5a; 32]),
        Payload::IdI(Identification::ipv4(Ipv4Addr::new(198, 19, 0, 11))),
        Payload::IdR(Identification::ipv6(Ipv6Addr::LOCALHOST)),
        Payload::IdI(Identification::fqdn("gw.example")),
        Payload::IdR(Identification::rfc822("a@b.example")),
        Payload::IdI(Identification::key_id(&[1, 2, 3])),
        Payload::Auth {
            method: 2,
            data: vec![0xa5; 32],
        },
        Payload::Notify(Notify::new(notify_type::INITIAL_CONTACT, Vec::new())),
        Payload::Notify(Notify::new(notify_type::COOKIE, vec![1; 16])),
        Payload::Notify(Notify {
            protocol: protocol::ESP,
            spi: vec![1, 2, 3, 4],
            kind: notify_type::REKEY_SA,
            data: Vec::new(),
        }),
        Payload::Notify(Notify::new(notify_type::INVALID_KE_PAYLOAD, vec![0, 19])),
        Payload::Delete(Delete::ike()),
        Payload::Delete(Delete::esp(&[0x1111_1111, 0x2222_2222])),
        Payload::TsI(vec![site_a, tcp]),
        Payload::TsR(vec![site_b, v6_ts, opaque]),
        Payload::Vendor(b"braid".to_vec()),
        Payload::Unknown {
            kind: payload_type::CERTREQ,
            critical: false,
            body: vec![4, 0, 0],
        },
        Payload::Unknown {
            kind: payload_type::CP,
            critical: true,
            body: vec![1, 0, 0, 0],
        },
    ];
    for p in &all {
        corpus.add(chain(std::slice::from_ref(p)));
    }
    let [sa_ike, sa_ike_rekey, sa_esp, ke, nonce, id_i, id_r, ..] = &all[..] else {
        unreachable!()
    };
    let auth = &all[10];
    let (ts_i, ts_r) = (&all[17], &all[18]);
    let contact = &all[11];
    let rekey = &all[13];
    corpus.add(chain(&[
        id_i.clone(),
        contact.clone(),
        id_r.clone(),
        auth.clone(),
        sa_esp.clone(),
        ts_i.clone(),
        ts_r.clone(),
    ]));
    corpus.add(chain(&[
        rekey.clone(),
        sa_esp.clone(),
        nonce.clone(),
        ts_i.clone(),
        ts_r.clone(),
    ]));
    corpus.add(chain(&[sa_ike_rekey.clone(), nonce.clone(), ke.clone()]));
    corpus.add(chain(&[sa_ike.clone(), ke.clone(), nonce.clone(), contact.clone()]));
    corpus.add(chain(&[all[15].clone()]));
    corpus.add(chain(&[all[16].clone(), all[19].clone()]));
    corpus.add(vec![0]); // the empty chain (an INFORMATIONAL liveness check)
}

fn chain(payloads: &[Payload]) -> Vec<u8> {
    let mut body = Vec::new();
    let first = encode_payloads(payloads, &mut body);
    let mut out = vec![first];
    out.extend_from_slice(&body);
    out
}

/// One packet of a crafted `esp_open` seed: sequence number, padding length, trailer edits.
type CraftedPacket = (u64, u8, &'static [(u8, u8)]);

fn esp_seeds(corpus: &mut Corpus, port: &mut Corpus) {
    let inners = [
        ipv4_packet(20, 0),
        ipv4_packet(61, 1),
        ipv6_packet(40, 2),
        ipv6_packet(83, 3),
    ];
    for cipher in [EspCipher::AesGcm256, EspCipher::ChaCha20Poly1305] {
        for esn in [false, true] {
            for window in [64, 1024] {
                let setup = |mode| {
                    Setup {
                        cipher,
                        esn,
                        mode,
                        window,
                    }
                    .to_byte()
                };
                // Raw: a real packet sealed with the fixed key opens.
                let mut outbound = OutboundSa::new(SPI, cipher, keys(cipher), esn);
                for inner in &inners {
                    let mut out = vec![0u8; inner.len() + ESP_MAX_OVERHEAD];
                    let n = outbound.seal(inner, &mut out).expect("seal");
                    out.truncate(n);
                    port.add(out.clone());
                    let mut seed = vec![setup(Mode::Raw)];
                    seed.extend_from_slice(&out);
                    corpus.add(seed);
                }
                // Sealed: seal two, deliver in order, out of order, again, and flipped.
                let mut s = vec![setup(Mode::Sealed)];
                for (i, inner) in inners.iter().enumerate() {
                    s.push(0);
                    s.extend_from_slice(&(inner.len() as u16).to_le_bytes());
                    s.extend_from_slice(inner);
                    s.extend_from_slice(&[1, i as u8, 0, 0, 0]);
                }
                s.extend_from_slice(&[1, 0, 0, 0, 0]); // replay of the first
                s.extend_from_slice(&[2, 1, 20, 0, 0x40]); // a flipped byte
                corpus.add(s);
                // Crafted: conforming, long padding, broken padding, pad length, next header,
                // and (with ESN) numbers around 2^32.
                let mut c = vec![setup(Mode::Crafted)];
                // (sequence number, padding, trailer edits (offset from the end, xor))
                let conforming = |i: usize| minimal_pad(inners[i % inners.len()].len()) as u8;
                let plan: Vec<CraftedPacket> = if esn {
                    // Walk up to 2^32 in steps under 2^31, cross it, then a late packet from
                    // below it (its high half inferred as the older block) and bad trailers.
                    vec![
                        (1, conforming(0), &[]),
                        (0x7fff_fff0, 17, &[]),
                        (0xffff_fff0, conforming(2), &[]),
                        (0x1_0000_0003, conforming(3), &[]),
                        (0xffff_fff8, conforming(4), &[]),
                        (0x1_0000_0004, conforming(5), &[(1, 0x01)]),
                        (0x1_0000_0005, conforming(6), &[(0, 59 ^ 4)]),
                    ]
                } else {
                    vec![
                        (1, conforming(0), &[]),
                        (5, 17, &[]),
                        (3, conforming(2), &[(1, 0x01)]),              // pad length
                        (0xffff_fff0, conforming(3), &[(0, 59 ^ 41)]), // next header 59
                        (0xffff_fff1, 6, &[(2, 0x10)]),                // a padding byte
                        (0xffff_ffff, conforming(5), &[]),
                        (2, conforming(6), &[]), // left of the window
                    ]
                };
                for (i, (seq, pad, edits)) in plan.into_iter().enumerate() {
                    let inner = &inners[i % inners.len()];
                    c.extend_from_slice(&seq.to_le_bytes());
                    c.push(pad);
                    c.push(edits.len() as u8);
                    for (at, xor) in edits {
                        c.extend_from_slice(&[*at, *xor]);
                    }
                    c.extend_from_slice(&(inner.len() as u16).to_le_bytes());
                    c.extend_from_slice(inner);
                }
                corpus.add(c);
                // Sanity: the reference sealer reproduces OutboundSa's first packet.
                let inner = &inners[0];
                let mut fresh = OutboundSa::new(SPI, cipher, keys(cipher), esn);
                let mut out = vec![0u8; inner.len() + ESP_MAX_OVERHEAD];
                let n = fresh.seal(inner, &mut out).expect("seal");
                let p = plaintext(inner, minimal_pad(inner.len()) as u8, next_header_for(inner));
                assert_eq!(out[..n], reference_seal(cipher, esn, SPI, 1, &p)[..]);
            }
        }
    }
}
