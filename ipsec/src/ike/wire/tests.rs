//! Codec tests: hand-built strongSwan-like messages deconstructed, every payload constructed
//! and parsed back, and malformed input (truncated, lying lengths, mutated) refused without
//! panicking.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

const SPI_I: u64 = 0x0102_0304_0506_0708;
const SPI_R: u64 = 0x1112_1314_1516_1718;

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse::<Ipv6Addr>().unwrap())
}

/// A generic payload header (next payload, flags, length) followed by `body`.
fn generic(next: u8, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![next, flags];
    out.extend_from_slice(&u16::try_from(4 + body.len()).unwrap().to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// An IKE header with Length = 28 + `payload_len`.
fn header_bytes(next: u8, exchange: u8, flags: u8, message_id: u32, payload_len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&SPI_I.to_be_bytes());
    out.extend_from_slice(&0u64.to_be_bytes());
    out.extend_from_slice(&[next, 0x20, exchange, flags]);
    out.extend_from_slice(&message_id.to_be_bytes());
    out.extend_from_slice(&u32::try_from(28 + payload_len).unwrap().to_be_bytes());
    out
}

fn notify_body(kind: u16, data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0];
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// What charon 5.9.8 sends as IKE_SA_INIT initiator with `aes256gcm16-prfsha256-x25519`
/// (notes §1): SA, KE, Ni, N(NAT_DETECTION_SOURCE_IP), N(NAT_DETECTION_DESTINATION_IP),
/// N(FRAGMENTATION_SUPPORTED), N(SIGNATURE_HASH_ALGORITHMS), N(REDIRECT_SUPPORTED).
fn strongswan_init_request() -> Vec<u8> {
    #[rustfmt::skip]
    let proposal: [u8; 36] = [
        0x00, 0x00, 0x00, 0x24, // last proposal, reserved, length 36
        0x01, 0x01, 0x00, 0x03, // #1, IKE, SPI size 0, 3 transforms
        0x03, 0x00, 0x00, 0x0C, 0x01, 0x00, 0x00, 0x14, 0x80, 0x0E, 0x01, 0x00, // ENCR 20, KEY_LENGTH 256
        0x03, 0x00, 0x00, 0x08, 0x02, 0x00, 0x00, 0x05, // PRF 5 (HMAC-SHA2-256)
        0x00, 0x00, 0x00, 0x08, 0x04, 0x00, 0x00, 0x1F, // DH 31 (Curve25519), last
    ];
    let mut ke = vec![0x00, 0x1F, 0x00, 0x00];
    ke.extend((0..32).map(|i| 0xA0 ^ i));
    let nonce: Vec<u8> = (0..32).map(|i| 0x50 + i).collect();
    let natd_src = notify_body(16388, &[0x5A; 20]);
    let natd_dst = notify_body(16389, &[0xA5; 20]);
    let frag = notify_body(16430, &[]);
    let sig_hash = notify_body(16431, &[0x00, 0x02, 0x00, 0x03, 0x00, 0x04, 0x00, 0x05]);
    let redirect = notify_body(16406, &[]);

    let mut payloads = Vec::new();
    payloads.extend(generic(34, 0, &proposal));
    payloads.extend(generic(40, 0, &ke));
    payloads.extend(generic(41, 0, &nonce));
    payloads.extend(generic(41, 0, &natd_src));
    payloads.extend(generic(41, 0, &natd_dst));
    payloads.extend(generic(41, 0, &frag));
    payloads.extend(generic(41, 0, &sig_hash));
    payloads.extend(generic(0, 0, &redirect));
    let mut msg = header_bytes(33, 34, 0x08, 0, payloads.len());
    msg.extend(payloads);
    msg
}

/// Every payload variant, with values exercising their optional parts.
fn every_payload() -> Vec<Payload> {
    vec![
        Payload::Sa(vec![
            Proposal {
                number: 1,
                protocol: protocol::ESP,
                spi: vec![0xC0, 0x01, 0x02, 0x03],
                transforms: vec![
                    Transform::with_key_length(transform::ENCR, transform::ENCR_AES_GCM_16, 256),
                    Transform::new(transform::ESN, transform::ESN_NONE),
                ],
            },
            Proposal {
                number: 2,
                protocol: protocol::ESP,
                spi: vec![0xC0, 0x01, 0x02, 0x03],
                transforms: vec![
                    Transform::new(transform::ENCR, transform::ENCR_CHACHA20_POLY1305),
                    Transform::new(transform::ESN, transform::ESN_NONE),
                ],
            },
        ]),
        Payload::Ke {
            group: transform::DH_P256,
            data: vec![7; 64],
        },
        Payload::IdI(Identification::ipv4(Ipv4Addr::new(198, 18, 0, 1))),
        Payload::IdR(Identification {
            id_type: id_type::FQDN,
            reserved: [1, 2, 3],
            data: b"gw.example".to_vec(),
        }),
        Payload::Auth {
            method: auth_method::SHARED_KEY_MIC,
            data: vec![0xAA; 32],
        },
        Payload::Nonce(vec![0x33; 32]),
        Payload::Notify(Notify {
            protocol: protocol::ESP,
            spi: vec![1, 2, 3, 4],
            kind: 16393,
            data: vec![],
        }),
        Payload::Notify(Notify::new(notify_type::INVALID_KE_PAYLOAD, vec![0x00, 0x13])),
        Payload::Delete(Delete::esp(&[0xC001_0203, 0xC001_0204])),
        Payload::Delete(Delete::ike()),
        Payload::TsI(vec![TrafficSelector::from_cidr(v4(198, 18, 1, 0), 24).unwrap()]),
        Payload::TsR(vec![
            TrafficSelector {
                ip_protocol: 6,
                start_port: 443,
                end_port: 443,
                start: v4(10, 0, 0, 1),
                end: v4(10, 0, 0, 9),
            },
            TrafficSelector::from_cidr(v6("2001:db8::"), 32).unwrap(),
        ]),
        Payload::Vendor(b"strongSwan".to_vec()),
        Payload::Unknown {
            kind: payload_type::CERTREQ,
            critical: false,
            body: vec![4, 1, 2, 3],
        },
        Payload::Unknown {
            kind: 200,
            critical: false,
            body: vec![],
        },
    ]
}

fn test_header() -> Header {
    Header {
        spi_i: SPI_I,
        spi_r: SPI_R,
        next_payload: 0,
        exchange: exchange::CREATE_CHILD_SA,
        initiator: true,
        response: false,
        message_id: 7,
        length: 0,
    }
}

// ---------------------------------------------------------------------------------------
// Header
// ---------------------------------------------------------------------------------------

#[test]
fn header_constructs_and_parses() {
    let h = Header {
        next_payload: 46,
        length: 28,
        ..test_header()
    };
    let mut bytes = Vec::new();
    h.write(&mut bytes);
    assert_eq!(bytes.len(), IKE_HEADER_LEN);
    assert_eq!(&bytes[16..20], &[46, 0x20, 36, 0x08]);
    assert_eq!(&bytes[20..24], &7u32.to_be_bytes());
    assert_eq!(Header::parse(&bytes), Ok(h));
    assert_eq!(h.to_bytes().as_slice(), bytes.as_slice());

    let r = Header {
        initiator: false,
        response: true,
        ..h
    };
    assert_eq!(r.flags(), 0x20);
    assert_eq!(Header::parse(&r.to_bytes()), Ok(r));
}

#[test]
fn header_ignores_minor_version_and_v_flag() {
    let mut bytes = Header {
        length: 28,
        ..test_header()
    }
    .to_bytes();
    bytes[17] = 0x2F; // minor 15
    bytes[19] |= flags::VERSION | 0x07; // V and reserved bits
    let h = Header::parse(&bytes).unwrap();
    assert!(h.initiator && !h.response);
}

#[test]
fn header_rejects_bad_versions_and_lengths() {
    let good = Header {
        length: 28,
        ..test_header()
    }
    .to_bytes();
    for version in [0x10, 0x30, 0x00, 0xF0] {
        let mut b = good;
        b[17] = version;
        assert_eq!(Header::parse(&b), Err(WireError::BadVersion), "version {version:#x}");
        assert_eq!(Header::peek(&b), Err(WireError::BadVersion));
    }
    for n in 0..28 {
        assert_eq!(Header::parse(&good[..n]), Err(WireError::Truncated));
    }
    for len in [0u32, 27, 29, 0xFFFF_FFFF] {
        let mut b = good;
        b[24..28].copy_from_slice(&len.to_be_bytes());
        assert_eq!(Header::parse(&b), Err(WireError::BadLength), "length {len}");
        assert_eq!(Header::peek(&b).unwrap().length, len, "peek does not check the length");
    }
    let mut big = vec![0u8; MAX_IKE_MESSAGE + 1];
    big[..28].copy_from_slice(&good);
    let len = u32::try_from(big.len()).unwrap();
    big[24..28].copy_from_slice(&len.to_be_bytes());
    assert_eq!(Header::parse(&big), Err(WireError::TooLong));
}

// ---------------------------------------------------------------------------------------
// A strongSwan IKE_SA_INIT request
// ---------------------------------------------------------------------------------------

#[test]
fn deconstructs_a_strongswan_init_request() {
    let bytes = strongswan_init_request();
    assert_eq!(bytes.len(), 232);
    let msg = parse_message(&bytes).unwrap();
    assert_eq!(
        msg.header,
        Header {
            spi_i: SPI_I,
            spi_r: 0,
            next_payload: payload_type::SA,
            exchange: exchange::IKE_SA_INIT,
            initiator: true,
            response: false,
            message_id: 0,
            length: 232,
        }
    );
    let Body::Plain(payloads) = &msg.body else {
        panic!("expected plaintext")
    };
    assert_eq!(payloads.len(), 8);
    assert_eq!(
        payloads[0],
        Payload::Sa(vec![Proposal {
            number: 1,
            protocol: protocol::IKE,
            spi: vec![],
            transforms: vec![
                Transform {
                    kind: transform::ENCR,
                    id: transform::ENCR_AES_GCM_16,
                    key_length: Some(256)
                },
                Transform {
                    kind: transform::PRF,
                    id: transform::PRF_HMAC_SHA2_256,
                    key_length: None
                },
                Transform {
                    kind: transform::DH,
                    id: transform::DH_CURVE25519,
                    key_length: None
                },
            ],
        }])
    );
    let Payload::Ke { group, data } = &payloads[1] else {
        panic!("expected KE")
    };
    assert_eq!((*group, data.len(), data[0]), (31, 32, 0xA0));
    assert_eq!(payloads[2], Payload::Nonce((0..32).map(|i| 0x50 + i).collect()));
    let kinds: Vec<u16> = payloads[3..].iter().map(|p| p.as_notify().unwrap().kind).collect();
    assert_eq!(
        kinds,
        [
            notify_type::NAT_DETECTION_SOURCE_IP,
            notify_type::NAT_DETECTION_DESTINATION_IP,
            notify_type::FRAGMENTATION_SUPPORTED,
            notify_type::SIGNATURE_HASH_ALGORITHMS,
            notify_type::REDIRECT_SUPPORTED,
        ]
    );
    let natd = find_notify(payloads, notify_type::NAT_DETECTION_SOURCE_IP).unwrap();
    assert_eq!(
        (natd.protocol, natd.spi.as_slice(), natd.data.as_slice()),
        (0, &[][..], &[0x5A; 20][..])
    );
    assert_eq!(
        find_notify(payloads, notify_type::SIGNATURE_HASH_ALGORITHMS)
            .unwrap()
            .data,
        [0, 2, 0, 3, 0, 4, 0, 5]
    );
    assert!(find_notify(payloads, notify_type::COOKIE).is_none());

    // Re-encoding the decoded message reproduces strongSwan's bytes exactly.
    assert_eq!(encode_message(msg.header, payloads), bytes);
}

// ---------------------------------------------------------------------------------------
// Construct → parse round trips
// ---------------------------------------------------------------------------------------

#[test]
fn every_payload_round_trips_alone() {
    for payload in every_payload() {
        let mut out = Vec::new();
        let first = encode_payloads(std::slice::from_ref(&payload), &mut out);
        assert_eq!(first, payload.kind());
        assert_eq!(
            usize::from(u16::from_be_bytes([out[2], out[3]])),
            out.len(),
            "{payload:?}"
        );
        assert_eq!(&out[..2], &[0, 0], "last payload, critical bit clear");
        assert_eq!(&out[4..], payload.body().as_slice());
        assert_eq!(parse_payloads(first, &out), Ok(vec![payload.clone()]), "{payload:?}");
    }
}

#[test]
fn payload_chain_and_message_round_trip() {
    let payloads = every_payload();
    let mut out = Vec::new();
    let first = encode_payloads(&payloads, &mut out);
    assert_eq!(first, payload_type::SA);
    assert_eq!(parse_payloads(first, &out), Ok(payloads.clone()));

    let bytes = encode_message(test_header(), &payloads);
    assert_eq!(bytes.len(), IKE_HEADER_LEN + out.len());
    let msg = parse_message(&bytes).unwrap();
    assert_eq!(msg.header.next_payload, payload_type::SA);
    assert_eq!(msg.header.length as usize, bytes.len());
    assert_eq!(
        msg.header,
        Header {
            next_payload: 33,
            length: msg.header.length,
            ..test_header()
        }
    );
    assert_eq!(msg.body, Body::Plain(payloads.clone()));
    assert_eq!(try_encode_message(test_header(), &payloads), Ok(bytes));
}

#[test]
fn empty_chains() {
    let mut out = Vec::new();
    assert_eq!(encode_payloads(&[], &mut out), payload_type::NONE);
    assert!(out.is_empty());
    assert_eq!(parse_payloads(payload_type::NONE, &[]), Ok(vec![]));
    assert_eq!(parse_payloads(payload_type::NONE, &[0]), Err(WireError::BadLength));
    let bytes = encode_message(test_header(), &[]);
    assert_eq!(bytes.len(), 28);
    assert_eq!(parse_message(&bytes).unwrap().body, Body::Plain(vec![]));
}

#[test]
fn body_encodings_match_rfc_layouts() {
    assert_eq!(
        Payload::Ke {
            group: 31,
            data: vec![9, 9]
        }
        .body(),
        [0, 31, 0, 0, 9, 9]
    );
    assert_eq!(
        Payload::Auth {
            method: 2,
            data: vec![5]
        }
        .body(),
        [2, 0, 0, 0, 5]
    );
    assert_eq!(
        Payload::Notify(Notify {
            protocol: 3,
            spi: vec![1, 2, 3, 4],
            kind: 16393,
            data: vec![8]
        })
        .body(),
        [3, 4, 0x40, 0x09, 1, 2, 3, 4, 8]
    );
    assert_eq!(Payload::Delete(Delete::ike()).body(), [1, 0, 0, 0]);
    assert_eq!(
        Payload::Delete(Delete::esp(&[0x0A0B_0C0D])).body(),
        [3, 4, 0, 1, 0x0A, 0x0B, 0x0C, 0x0D]
    );
    assert_eq!(
        Payload::TsI(vec![TrafficSelector::from_cidr(v4(198, 18, 1, 0), 24).unwrap()]).body(),
        [1, 0, 0, 0, 7, 0, 0, 16, 0, 0, 0xFF, 0xFF, 198, 18, 1, 0, 198, 18, 1, 255]
    );
    let v6_ts = Payload::TsR(vec![TrafficSelector::host(v6("::1"))]).body();
    assert_eq!(v6_ts.len(), 4 + 40);
    assert_eq!(&v6_ts[4..8], &[8, 0, 0, 40]);
    assert_eq!(
        Payload::Sa(vec![Proposal {
            number: 1,
            protocol: 3,
            spi: vec![1, 2, 3, 4],
            transforms: vec![]
        }])
        .body(),
        [0, 0, 0, 12, 1, 3, 4, 0, 1, 2, 3, 4]
    );
}

#[test]
fn sk_prefix_and_encrypted_messages() {
    let inner = every_payload();
    let mut plain = Vec::new();
    let first_inner = encode_payloads(&inner, &mut plain);
    // Stand-in for IV ‖ ciphertext ‖ ICV: the plaintext framed by 8 + 16 marker bytes.
    let sk_body: Vec<u8> = [&[0xEE; 8][..], &plain, &[0xCC; 16][..]].concat();
    let mut msg = Vec::new();
    let header = Header {
        exchange: exchange::IKE_AUTH,
        next_payload: 99,
        length: 99,
        ..test_header()
    };
    encode_sk_prefix(header, first_inner, sk_body.len(), &mut msg);
    assert_eq!(msg.len(), IKE_HEADER_LEN + GENERIC_HEADER_LEN);
    msg.extend_from_slice(&sk_body);

    let parsed = parse_message(&msg).unwrap();
    assert_eq!(
        parsed.header,
        Header {
            next_payload: 46,
            length: msg.len() as u32,
            ..header
        }
    );
    let Body::Encrypted(part) = parsed.body else {
        panic!("expected SK")
    };
    assert_eq!(
        part,
        EncryptedPart {
            first_inner: payload_type::SA,
            sk_offset: 28,
            body_offset: 32
        }
    );
    let sk_len = u16::try_from(4 + sk_body.len()).unwrap().to_be_bytes();
    assert_eq!(&msg[part.sk_offset..part.body_offset], &[33, 0, sk_len[0], sk_len[1]]);
    assert_eq!(&msg[24..28], &u32::try_from(msg.len()).unwrap().to_be_bytes());
    let ciphertext = &msg[part.body_offset..];
    assert_eq!(
        parse_payloads(part.first_inner, &ciphertext[8..ciphertext.len() - 16]),
        Ok(inner)
    );

    // An empty SK (liveness check): first_inner 0.
    let mut empty = Vec::new();
    encode_sk_prefix(test_header(), 0, 24, &mut empty);
    empty.extend_from_slice(&[0; 24]);
    let Body::Encrypted(part) = parse_message(&empty).unwrap().body else {
        panic!("expected SK")
    };
    assert_eq!(part.first_inner, payload_type::NONE);
}

#[test]
fn sk_must_be_first_and_reach_the_end() {
    let sk = generic(payload_type::NOTIFY, 0, &[0xEE; 40]);
    // SK length one short of the end, and one past it.
    for delta in [-1i32, 1] {
        let mut m = header_bytes(46, 35, 0x08, 1, sk.len());
        let mut s = sk.clone();
        let len = u16::try_from(i32::try_from(s.len()).unwrap() + delta).unwrap();
        s[2..4].copy_from_slice(&len.to_be_bytes());
        m.extend(s);
        assert_eq!(parse_message(&m), Err(WireError::BadLength), "delta {delta}");
    }
    // SK with a trailing payload after it (SK length covers only itself).
    let mut m = header_bytes(46, 35, 0x08, 1, sk.len() + 8);
    m.extend(generic(41, 0, &[0xEE; 40]));
    m.extend(generic(0, 0, &notify_body(16384, &[])));
    assert_eq!(parse_message(&m), Err(WireError::BadLength));
    // A plaintext payload before SK.
    let n = generic(46, 0, &notify_body(16384, &[]));
    let mut m = header_bytes(41, 35, 0x08, 1, n.len() + sk.len());
    m.extend(n);
    m.extend(sk.clone());
    assert_eq!(parse_message(&m), Err(WireError::UnencryptedPayloads));
    // SK truncated to its generic header, or less.
    let mut m = header_bytes(46, 35, 0x08, 1, 2);
    m.extend([0, 0]);
    assert_eq!(parse_message(&m), Err(WireError::Truncated));
    // SK nested in a decrypted chain.
    assert_eq!(parse_payloads(46, &sk), Err(WireError::Nested));
    let mut chain = generic(46, 0, &notify_body(16384, &[]));
    chain.extend(sk);
    assert_eq!(parse_payloads(41, &chain), Err(WireError::Nested));
}

// ---------------------------------------------------------------------------------------
// Unknown and critical payloads; payload counts
// ---------------------------------------------------------------------------------------

#[test]
fn unknown_payloads_are_kept_unless_critical() {
    let nonce = [0x11; 16];
    let mut chain = generic(38, 0, &nonce);
    chain.extend(generic(0, 0x7F, &[4, 0xAB]));
    assert_eq!(
        parse_payloads(40, &chain),
        Ok(vec![
            Payload::Nonce(nonce.to_vec()),
            Payload::Unknown {
                kind: 38,
                critical: false,
                body: vec![4, 0xAB]
            },
        ])
    );
    chain[4 + 16 + 1] = CRITICAL;
    assert_eq!(parse_payloads(40, &chain), Err(WireError::UnsupportedCritical(38)));
    assert_eq!(
        WireError::UnsupportedCritical(38).notify_type(),
        notify_type::UNSUPPORTED_CRITICAL_PAYLOAD
    );

    // The critical bit on a payload braid understands is ignored (§3.2).
    let known = generic(0, 0, &nonce);
    let mut critical_known = known.clone();
    critical_known[1] = CRITICAL;
    assert_eq!(parse_payloads(40, &critical_known), parse_payloads(40, &known));

    // Encoding honours Unknown.critical, and only there.
    let mut out = Vec::new();
    encode_payloads(
        &[
            Payload::Unknown {
                kind: 250,
                critical: true,
                body: vec![],
            },
            Payload::Nonce(vec![0; 16]),
        ],
        &mut out,
    );
    assert_eq!((out[1], out[5]), (CRITICAL, 0));
    assert_eq!(parse_payloads(250, &out), Err(WireError::UnsupportedCritical(250)));
}

#[test]
fn payload_count_is_bounded() {
    let vendor = |n: usize| vec![Payload::Vendor(vec![1]); n];
    let mut out = Vec::new();
    let first = encode_payloads(&vendor(MAX_PAYLOADS), &mut out);
    assert_eq!(parse_payloads(first, &out).unwrap().len(), MAX_PAYLOADS);
    let mut out = Vec::new();
    let first = encode_payloads(&vendor(MAX_PAYLOADS + 1), &mut out);
    assert_eq!(parse_payloads(first, &out), Err(WireError::TooManyPayloads));
    let bytes = encode_message(test_header(), &vendor(MAX_PAYLOADS + 1));
    assert_eq!(parse_message(&bytes), Err(WireError::TooManyPayloads));
}

#[test]
fn oversized_messages_are_refused_by_try_encode() {
    let big = Payload::Vendor(vec![0; 65532]);
    assert_eq!(try_encode_message(test_header(), &[big]), Err(WireError::TooLong));
    let two = vec![Payload::Vendor(vec![0; 40000]), Payload::Vendor(vec![0; 40000])];
    assert_eq!(try_encode_message(test_header(), &two), Err(WireError::TooLong));
    let fits = Payload::Vendor(vec![0; 65535 - 28 - 4]);
    let bytes = try_encode_message(test_header(), &[fits]).unwrap();
    assert_eq!(bytes.len(), MAX_IKE_MESSAGE);
    assert!(parse_message(&bytes).is_ok());
}

// ---------------------------------------------------------------------------------------
// Truncation, lying lengths, mutation
// ---------------------------------------------------------------------------------------

#[test]
fn every_truncation_is_refused() {
    let full = strongswan_init_request();
    for n in 0..full.len() {
        assert!(parse_message(&full[..n]).is_err(), "raw prefix {n}");
        if n >= IKE_HEADER_LEN {
            // Same prefix with the header Length patched to match: the payload walk must notice.
            let mut cut = full[..n].to_vec();
            cut[24..28].copy_from_slice(&u32::try_from(n).unwrap().to_be_bytes());
            assert!(parse_message(&cut).is_err(), "patched prefix {n}");
        }
    }
    let mut chain = Vec::new();
    let first = encode_payloads(&every_payload(), &mut chain);
    for n in 0..chain.len() {
        assert!(parse_payloads(first, &chain[..n]).is_err(), "chain prefix {n}");
    }
}

/// Sets the 16-bit length at `at` of a copy of `bytes`.
fn with_u16(bytes: &[u8], at: usize, value: u16) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at..at + 2].copy_from_slice(&value.to_be_bytes());
    b
}

#[test]
fn lying_payload_lengths_are_refused() {
    let full = strongswan_init_request();
    // Offsets of each payload's generic header in the message.
    let mut starts = Vec::new();
    let mut at = IKE_HEADER_LEN;
    while at < full.len() {
        starts.push(at);
        at += usize::from(u16::from_be_bytes([full[at + 2], full[at + 3]]));
    }
    assert_eq!(starts.len(), 8);
    for &start in &starts {
        let real = u16::from_be_bytes([full[start + 2], full[start + 3]]);
        for lie in [0, 1, 3, real - 1, real + 1, real + 4, 0xFFFF] {
            assert!(
                parse_message(&with_u16(&full, start + 2, lie)).is_err(),
                "payload at {start}: {lie} for {real}"
            );
        }
    }
    // Overlap: the SA payload claims only its first 8 body bytes, so the next "header" is
    // proposal bytes.
    assert!(parse_message(&with_u16(&full, 28 + 2, 12)).is_err());
    // Chain ends (next payload 0) before the bytes do.
    let mut early_end = full.clone();
    early_end[starts[6]] = 0;
    assert_eq!(parse_message(&early_end), Err(WireError::BadLength));
    // Chain continues past the bytes.
    let mut late_end = full.clone();
    late_end[starts[7]] = 41;
    assert_eq!(parse_message(&late_end), Err(WireError::Truncated));
}

#[test]
fn lying_inner_lengths_are_refused() {
    let sa_body = strongswan_init_request()[32..68].to_vec();
    assert!(parse_payloads(33, &generic(0, 0, &sa_body)).is_ok());
    let sa = |body: &[u8]| parse_payloads(33, &generic(0, 0, body));
    // Proposal length: too short, beyond the payload, short of the transforms.
    for lie in [0, 7, 8, 35, 37, 0xFFFF] {
        assert!(sa(&with_u16(&sa_body, 2, lie)).is_err(), "proposal length {lie}");
    }
    // Transform lengths (first transform at 8, its length at 10; second at 20).
    for lie in [0, 7, 8, 11, 13, 0xFFFF] {
        assert_eq!(
            sa(&with_u16(&sa_body, 10, lie)),
            Err(WireError::BadTransform),
            "transform length {lie}"
        );
    }
    // Transform count.
    for count in [0u8, 2, 4, 255] {
        let mut b = sa_body.clone();
        b[7] = count;
        assert_eq!(sa(&b), Err(WireError::BadProposal), "count {count}");
    }
    // SPI size beyond the proposal.
    let mut b = sa_body.clone();
    b[6] = 200;
    assert!(sa(&b).is_err());

    // Notify SPI size beyond the body.
    let n = notify_body(16388, &[1, 2, 3]);
    for spi_size in [4u8, 255] {
        let mut b = n.clone();
        b[1] = spi_size;
        assert_eq!(parse_payloads(41, &generic(0, 0, &b)), Err(WireError::BadNotify));
    }
    assert_eq!(
        parse_payloads(41, &generic(0, 0, &[0, 0, 0x40])),
        Err(WireError::BadNotify)
    );

    // TS selector length.
    let ts = Payload::TsI(vec![TrafficSelector::host(v4(10, 0, 0, 1))]).body();
    for lie in [0, 15, 17, 40] {
        assert_eq!(
            parse_payloads(44, &generic(0, 0, &with_u16(&ts, 6, lie))),
            Err(WireError::BadTrafficSelector),
            "ts length {lie}"
        );
    }
}

/// A byte-wise mutation sweep: every byte of valid messages replaced by a few values, plus
/// pseudo-random multi-byte corruption. Nothing may panic; whatever parses must re-encode.
#[test]
fn mutations_never_panic() {
    let mut auth_like = Vec::new();
    encode_payloads(&every_payload(), &mut auth_like);
    let plain = encode_message(test_header(), &every_payload());
    let inputs = [strongswan_init_request(), plain];
    for input in &inputs {
        for i in 0..input.len() {
            for value in [input[i] ^ 0xFF, input[i] ^ 0x01, input[i].wrapping_add(1), 0, 0xFF] {
                let mut m = input.clone();
                m[i] = value;
                if let Ok(Message {
                    header,
                    body: Body::Plain(payloads),
                }) = parse_message(&m)
                {
                    let _ = encode_message(header, &payloads);
                }
            }
        }
    }
    for i in 0..auth_like.len() {
        let mut m = auth_like.clone();
        m[i] ^= 0xFF;
        let _ = parse_payloads(payload_type::SA, &m);
    }
    // xorshift: deterministic multi-byte corruption.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..5000 {
        let mut m = inputs[round % 2].clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % m.len() as u64) as usize;
            m[at] = next() as u8;
        }
        let _ = parse_message(&m);
        let _ = parse_payloads(m[16], &m[IKE_HEADER_LEN..]);
    }
}

// ---------------------------------------------------------------------------------------
// SA payload details
// ---------------------------------------------------------------------------------------

/// A transform substructure with raw attribute bytes.
fn transform_bytes(last: bool, kind: u8, id: u16, attributes: &[u8]) -> Vec<u8> {
    let mut out = vec![if last { 0 } else { 3 }, 0];
    out.extend_from_slice(&u16::try_from(8 + attributes.len()).unwrap().to_be_bytes());
    out.extend_from_slice(&[kind, 0]);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(attributes);
    out
}

/// A proposal substructure around transform bytes.
fn proposal_bytes(last: bool, number: u8, proto: u8, spi: &[u8], count: u8, transforms: &[u8]) -> Vec<u8> {
    let mut out = vec![if last { 0 } else { 2 }, 0];
    out.extend_from_slice(&u16::try_from(8 + spi.len() + transforms.len()).unwrap().to_be_bytes());
    out.extend_from_slice(&[number, proto, u8::try_from(spi.len()).unwrap(), count]);
    out.extend_from_slice(spi);
    out.extend_from_slice(transforms);
    out
}

fn parse_sa_body(body: &[u8]) -> Result<Vec<Proposal>, WireError> {
    match parse_payloads(33, &generic(0, 0, body))?.pop() {
        Some(Payload::Sa(p)) => Ok(p),
        other => panic!("not an SA: {other:?}"),
    }
}

#[test]
fn transforms_with_unknown_attributes_are_dropped() {
    let kl256 = [0x80, 0x0E, 0x01, 0x00];
    let mut t = Vec::new();
    t.extend(transform_bytes(
        false,
        1,
        20,
        &[0x80, 0x0E, 0x00, 0x80, 0x80, 0x11, 0x00, 0x01],
    )); // + TV type 17
    t.extend(transform_bytes(false, 1, 20, &kl256));
    t.extend(transform_bytes(false, 1, 12, &[0x00, 0x0E, 0x00, 0x02, 0x01, 0x00])); // TLV KEY_LENGTH
    t.extend(transform_bytes(
        false,
        1,
        20,
        &[0x80, 0x0E, 0x00, 0x80, 0x80, 0x0E, 0x01, 0x00],
    )); // repeated
    t.extend(transform_bytes(false, 9, 1, &[0x80, 0x20, 0x00, 0x01])); // unknown type: kept
    t.extend(transform_bytes(true, 5, 0, &[]));
    let body = proposal_bytes(true, 1, 3, &[1, 2, 3, 4], 6, &t);
    assert_eq!(
        parse_sa_body(&body),
        Ok(vec![Proposal {
            number: 1,
            protocol: 3,
            spi: vec![1, 2, 3, 4],
            transforms: vec![
                Transform::with_key_length(1, 20, 256),
                Transform::new(9, 1),
                Transform::new(transform::ESN, transform::ESN_NONE),
            ],
        }])
    );
}

#[test]
fn malformed_attributes_are_refused() {
    for attributes in [&[0x80, 0x0E, 0x01][..], &[0x00, 0x0E, 0x00, 0x05, 1, 2], &[0x00]] {
        let t = transform_bytes(true, 1, 20, attributes);
        let body = proposal_bytes(true, 1, 1, &[], 1, &t);
        assert_eq!(parse_sa_body(&body), Err(WireError::BadTransform), "{attributes:?}");
    }
}

#[test]
fn substructure_markers_must_agree_with_the_layout() {
    let t_last = transform_bytes(true, 4, 31, &[]);
    let t_more = transform_bytes(false, 4, 31, &[]);
    // A "more" transform at the end, a "last" one before another.
    assert_eq!(
        parse_sa_body(&proposal_bytes(true, 1, 1, &[], 1, &t_more)),
        Err(WireError::BadTransform)
    );
    let mut two = t_last.clone();
    two.extend(&t_last);
    assert_eq!(
        parse_sa_body(&proposal_bytes(true, 1, 1, &[], 2, &two)),
        Err(WireError::BadTransform)
    );
    // Transform marker 2 (the proposal one).
    let mut bad = t_last.clone();
    bad[0] = 2;
    assert_eq!(
        parse_sa_body(&proposal_bytes(true, 1, 1, &[], 1, &bad)),
        Err(WireError::BadTransform)
    );

    let p1_more = proposal_bytes(false, 1, 1, &[], 1, &t_last);
    let p1_last = proposal_bytes(true, 1, 1, &[], 1, &t_last);
    let p2_last = proposal_bytes(true, 2, 1, &[], 1, &t_last);
    assert_eq!(
        parse_sa_body(&[p1_more.clone(), p2_last.clone()].concat())
            .unwrap()
            .len(),
        2
    );
    assert_eq!(parse_sa_body(&p1_more), Err(WireError::BadProposal));
    assert_eq!(parse_sa_body(&[p1_last, p2_last].concat()), Err(WireError::BadProposal));
    let mut marker3 = p1_more.clone();
    marker3[0] = 3;
    assert_eq!(parse_sa_body(&marker3), Err(WireError::BadProposal));
    assert_eq!(parse_sa_body(&[]), Err(WireError::BadProposal));
}

#[test]
fn proposal_numbers_and_spi_sizes() {
    let t = transform_bytes(true, 4, 31, &[]);
    let chain = |numbers: &[u8]| {
        let mut body = Vec::new();
        for (i, &n) in numbers.iter().enumerate() {
            body.extend(proposal_bytes(i + 1 == numbers.len(), n, 1, &[], 1, &t));
        }
        parse_sa_body(&body).map(|ps| ps.iter().map(|p| p.number).collect::<Vec<_>>())
    };
    assert_eq!(chain(&[1, 2, 3]), Ok(vec![1, 2, 3]));
    assert_eq!(chain(&[4]), Ok(vec![4]), "a response echoes the chosen number");
    assert_eq!(chain(&[1, 1]), Ok(vec![1, 1]), "strongSwan tolerates equal numbers");
    assert_eq!(chain(&[0]), Err(WireError::BadProposal));
    assert_eq!(chain(&[2, 1]), Err(WireError::BadProposal));

    let ok = |proto: u8, spi: &[u8]| parse_sa_body(&proposal_bytes(true, 1, proto, spi, 1, &t)).is_ok();
    assert!(ok(1, &[]) && ok(1, &[9; 8]) && ok(3, &[9; 4]) && ok(2, &[9; 4]) && ok(77, &[9; 3]));
    assert!(!ok(1, &[9; 4]) && !ok(3, &[]) && !ok(3, &[9; 8]));
    let rekey = parse_sa_body(&proposal_bytes(true, 1, 1, &SPI_R.to_be_bytes(), 1, &t)).unwrap();
    assert_eq!(rekey[0].spi_u64(), Some(SPI_R));
    let esp = parse_sa_body(&proposal_bytes(true, 1, 3, &[0xC0, 0, 0, 1], 1, &t)).unwrap();
    assert_eq!(esp[0].spi_u32(), Some(0xC000_0001));
    assert_eq!(esp[0].transform(transform::DH), Some(&Transform::new(4, 31)));
    assert_eq!(esp[0].transform(transform::ENCR), None);
}

// ---------------------------------------------------------------------------------------
// Other bodies
// ---------------------------------------------------------------------------------------

#[test]
fn nonce_length_is_enforced() {
    for (len, ok) in [
        (0, false),
        (15, false),
        (16, true),
        (32, true),
        (256, true),
        (257, false),
    ] {
        let r = parse_payloads(40, &generic(0, 0, &vec![0x42; len]));
        assert_eq!(r.is_ok(), ok, "nonce of {len}");
        if !ok {
            assert_eq!(r, Err(WireError::BadLength));
        }
    }
}

#[test]
fn short_fixed_bodies_are_refused() {
    for (kind, err) in [
        (34, WireError::BadLength),
        (39, WireError::BadLength),
        (35, WireError::BadIdentification),
        (41, WireError::BadNotify),
        (42, WireError::BadDelete),
        (44, WireError::BadTrafficSelector),
        (33, WireError::BadProposal),
    ] {
        for len in 0..4 {
            assert_eq!(
                parse_payloads(kind, &generic(0, 0, &vec![1; len])),
                Err(err),
                "type {kind}, {len} bytes"
            );
        }
    }
    assert_eq!(
        parse_payloads(34, &generic(0, 0, &[0, 19, 0, 0])),
        Ok(vec![Payload::Ke {
            group: 19,
            data: vec![]
        }])
    );
}

#[test]
fn delete_payloads() {
    let parse = |body: &[u8]| match parse_payloads(42, &generic(0, 0, body)) {
        Ok(mut p) => match p.pop() {
            Some(Payload::Delete(d)) => Ok(d),
            other => panic!("{other:?}"),
        },
        Err(e) => Err(e),
    };
    assert_eq!(parse(&[1, 0, 0, 0]), Ok(Delete::ike()));
    assert_eq!(
        parse(&[1, 0, 0, 3]),
        Ok(Delete::ike()),
        "SPI count tolerated with SPI size 0"
    );
    assert_eq!(parse(&[1, 8, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8]), Err(WireError::BadDelete));
    assert_eq!(parse(&[1, 0, 0, 0, 9]), Err(WireError::BadDelete));
    let two = parse(&[3, 4, 0, 2, 0xC0, 0, 0, 1, 0xC0, 0, 0, 2]).unwrap();
    assert_eq!(two.spis_u32().collect::<Vec<_>>(), [0xC000_0001, 0xC000_0002]);
    assert_eq!(
        parse(&[3, 4, 0, 0]),
        Ok(Delete {
            protocol: 3,
            spi_size: 4,
            spis: vec![]
        })
    );
    for bad in [
        &[3, 4, 0, 2, 0xC0, 0, 0, 1][..], // count beyond the body
        &[3, 4, 0, 1, 0xC0, 0, 0, 1, 0],  // trailing byte
        &[3, 8, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8],
        &[3, 0, 0, 0],
        &[0, 0, 0, 0],
        &[9, 4, 0, 0],
    ] {
        assert_eq!(parse(bad), Err(WireError::BadDelete), "{bad:?}");
    }
}

#[test]
fn notify_helpers() {
    let n = Notify::new(notify_type::NO_PROPOSAL_CHOSEN, vec![]);
    assert!(n.is_error());
    assert!(!Notify::new(notify_type::INITIAL_CONTACT, vec![]).is_error());
    assert_eq!(notify_type::name(16430), Some("FRAGMENTATION_SUPPORTED"));
    assert_eq!(notify_type::name(38), Some("TS_UNACCEPTABLE"));
    assert_eq!(notify_type::name(60000), None);
    assert_eq!(payload_type::name(46), Some("SK"));
    assert_eq!(payload_type::name(1), None);
    assert_eq!(WireError::BadVersion.notify_type(), notify_type::INVALID_MAJOR_VERSION);
    assert_eq!(WireError::BadLength.notify_type(), notify_type::INVALID_SYNTAX);
    // Unknown protocol IDs and SPI sizes are kept for the exchange to judge.
    let odd = Notify {
        protocol: 9,
        spi: vec![1, 2],
        kind: 40000,
        data: vec![3],
    };
    let mut out = Vec::new();
    encode_payloads(&[Payload::Notify(odd.clone())], &mut out);
    assert_eq!(parse_payloads(41, &out), Ok(vec![Payload::Notify(odd)]));
}

// ---------------------------------------------------------------------------------------
// Identification
// ---------------------------------------------------------------------------------------

#[test]
fn identification_body_display_and_ip() {
    let id = Identification::ipv4(Ipv4Addr::new(198, 18, 0, 1));
    assert_eq!(id.body(), [1, 0, 0, 0, 198, 18, 0, 1]);
    assert_eq!(id.to_string(), "198.18.0.1");
    assert_eq!(id.to_ip(), Some(v4(198, 18, 0, 1)));
    assert_eq!(Identification::from_ip(v4(198, 18, 0, 1)), id);

    let id6 = Identification::from_ip(v6("2001:db8::1"));
    assert_eq!((id6.id_type, id6.body().len()), (5, 20));
    assert_eq!(id6.to_string(), "2001:db8::1");
    assert_eq!(id6.to_ip(), Some(v6("2001:db8::1")));
    assert_eq!(Identification::ipv6(Ipv6Addr::LOCALHOST).to_string(), "::1");

    let fqdn = Identification::fqdn("gw.example");
    assert_eq!(fqdn.to_string(), "fqdn:gw.example");
    assert_eq!(fqdn.to_ip(), None);
    assert_eq!(
        Identification::rfc822("ops@gw.example").to_string(),
        "email:ops@gw.example"
    );
    assert_eq!(Identification::key_id(&[0x0A, 0xFF]).to_string(), "keyid:0aff");
    let odd = Identification {
        id_type: 9,
        reserved: [0; 3],
        data: vec![0x30, 0x00],
    };
    assert_eq!(odd.to_string(), "id-type-9:3000");
    let hostile = Identification::fqdn("a b\n\u{7f}");
    assert_eq!(hostile.to_string(), "fqdn:a\\x20b\\x0a\\x7f");
}

#[test]
fn identification_reserved_is_kept_and_signed() {
    let body = [1, 0xAA, 0xBB, 0xCC, 10, 0, 0, 1];
    let parsed = parse_payloads(35, &generic(0, 0, &body)).unwrap();
    let Payload::IdI(id) = &parsed[0] else {
        panic!("expected IDi")
    };
    assert_eq!(id.reserved, [0xAA, 0xBB, 0xCC]);
    assert_eq!(id.body(), body, "AUTH signs the bytes as received");
    assert!(id.matches(&Identification::ipv4(Ipv4Addr::new(10, 0, 0, 1))));
    assert_ne!(*id, Identification::ipv4(Ipv4Addr::new(10, 0, 0, 1)));
    assert!(!id.matches(&Identification::ipv4(Ipv4Addr::new(10, 0, 0, 2))));
}

#[test]
fn identification_address_lengths_are_checked() {
    for body in [
        &[1, 0, 0, 0, 10, 0, 0][..],
        &[1, 0, 0, 0, 10, 0, 0, 1, 2],
        &[5, 0, 0, 0, 1, 2, 3, 4],
    ] {
        assert_eq!(
            parse_payloads(36, &generic(0, 0, body)),
            Err(WireError::BadIdentification),
            "{body:?}"
        );
    }
    // Other types are opaque, even empty.
    assert_eq!(
        parse_payloads(36, &generic(0, 0, &[2, 0, 0, 0])),
        Ok(vec![Payload::IdR(Identification {
            id_type: 2,
            reserved: [0; 3],
            data: vec![]
        })])
    );
}

// ---------------------------------------------------------------------------------------
// Traffic selectors
// ---------------------------------------------------------------------------------------

fn ts(proto: u8, ports: (u16, u16), start: IpAddr, end: IpAddr) -> TrafficSelector {
    TrafficSelector {
        ip_protocol: proto,
        start_port: ports.0,
        end_port: ports.1,
        start,
        end,
    }
}

#[test]
fn ts_subset_logic() {
    let net = TrafficSelector::from_cidr(v4(198, 18, 0, 0), 16).unwrap();
    let sub = TrafficSelector::from_cidr(v4(198, 18, 1, 0), 24).unwrap();
    let other = TrafficSelector::from_cidr(v4(10, 0, 0, 0), 8).unwrap();
    let any4 = TrafficSelector::from_cidr(v4(0, 0, 0, 0), 0).unwrap();
    let any6 = TrafficSelector::from_cidr(v6("::"), 0).unwrap();

    assert!(net.contains(&sub) && net.contains(&net) && any4.contains(&net));
    assert!(!sub.contains(&net) && !net.contains(&other) && !any4.contains(&any6) && !any6.contains(&any4));
    assert_eq!(net.intersect(&sub), Some(sub));
    assert_eq!(sub.intersect(&net), Some(sub));
    assert_eq!(net.intersect(&other), None);
    assert_eq!(any4.intersect(&any6), None);

    // Partial overlap of ranges.
    let a = TrafficSelector::any_for(v4(10, 0, 0, 10), v4(10, 0, 0, 20));
    let b = TrafficSelector::any_for(v4(10, 0, 0, 15), v4(10, 0, 0, 30));
    assert_eq!(
        a.intersect(&b),
        Some(TrafficSelector::any_for(v4(10, 0, 0, 15), v4(10, 0, 0, 20)))
    );
    assert!(!a.contains(&b) && !b.contains(&a));

    // Protocols: 0 is any; the specific one wins.
    let tcp = ts(6, (0, 65535), v4(198, 18, 1, 0), v4(198, 18, 1, 255));
    let udp = ts(17, (0, 65535), v4(198, 18, 1, 0), v4(198, 18, 1, 255));
    assert!(net.contains(&tcp) && !tcp.contains(&sub));
    assert_eq!(net.intersect(&tcp), Some(tcp));
    assert_eq!(tcp.intersect(&net), Some(tcp));
    assert_eq!(tcp.intersect(&udp), None);

    // Ports.
    let https = ts(6, (443, 443), v4(198, 18, 1, 5), v4(198, 18, 1, 5));
    let high = ts(6, (1024, 65535), v4(198, 18, 1, 0), v4(198, 18, 1, 255));
    assert!(tcp.contains(&https) && net.contains(&https) && !high.contains(&https));
    assert_eq!(high.intersect(&https), None);
    let web = ts(0, (80, 8080), v4(198, 18, 1, 0), v4(198, 18, 1, 255));
    assert_eq!(
        web.intersect(&high),
        Some(ts(6, (1024, 8080), v4(198, 18, 1, 0), v4(198, 18, 1, 255)))
    );

    // OPAQUE: within "any" ports and OPAQUE only.
    let opaque = ts(17, (65535, 0), v4(198, 18, 1, 0), v4(198, 18, 1, 255));
    assert!(opaque.is_opaque() && !opaque.is_any_port());
    assert!(net.contains(&opaque) && opaque.contains(&opaque) && !opaque.contains(&udp));
    assert!(!ts(17, (53, 53), v4(198, 18, 1, 0), v4(198, 18, 1, 255)).contains(&opaque));
    assert_eq!(udp.intersect(&opaque), Some(opaque));
    assert_eq!(opaque.intersect(&udp), Some(opaque));
    assert_eq!(
        opaque.intersect(&ts(17, (53, 53), v4(198, 18, 1, 0), v4(198, 18, 1, 255))),
        None
    );

    // Malformed selectors (hand-built) intersect with nothing.
    let reversed = TrafficSelector::any_for(v4(10, 0, 0, 9), v4(10, 0, 0, 1));
    assert_eq!(any4.intersect(&reversed), None);
    assert!(!any4.contains(&reversed));
    let bad_ports = ts(6, (90, 80), v4(10, 0, 0, 1), v4(10, 0, 0, 1));
    assert_eq!(any4.intersect(&bad_ports), None);

    // IPv6.
    let doc = TrafficSelector::from_cidr(v6("2001:db8::"), 32).unwrap();
    let host = TrafficSelector::host(v6("2001:db8::42"));
    assert!(doc.contains(&host) && any6.contains(&doc) && !host.contains(&doc));
    assert_eq!(doc.intersect(&host), Some(host));
    assert!(doc.contains_addr(v6("2001:db8:ffff::1")) && !doc.contains_addr(v6("2001:db9::")));
    assert!(!doc.contains_addr(v4(1, 2, 3, 4)) && net.contains_addr(v4(198, 18, 200, 1)));
}

#[test]
fn ts_cidr_and_display() {
    let show = |t: TrafficSelector| t.to_string();
    assert_eq!(
        show(TrafficSelector::from_cidr(v4(198, 18, 1, 77), 24).unwrap()),
        "198.18.1.0/24"
    );
    assert_eq!(
        show(TrafficSelector::from_cidr(v4(0, 0, 0, 0), 0).unwrap()),
        "0.0.0.0/0"
    );
    assert_eq!(show(TrafficSelector::host(v4(198, 18, 0, 1))), "198.18.0.1/32");
    assert_eq!(
        show(TrafficSelector::from_cidr(v6("2001:db8::1"), 64).unwrap()),
        "2001:db8::/64"
    );
    assert_eq!(show(TrafficSelector::from_cidr(v6("::"), 0).unwrap()), "::/0");
    assert_eq!(show(TrafficSelector::host(v6("::1"))), "::1/128");
    assert_eq!(
        show(TrafficSelector::any_for(v4(10, 0, 0, 1), v4(10, 0, 0, 5))),
        "10.0.0.1..10.0.0.5"
    );
    assert_eq!(
        show(TrafficSelector::any_for(v4(10, 0, 0, 1), v4(10, 0, 0, 2))),
        "10.0.0.1..10.0.0.2"
    );
    assert_eq!(
        show(TrafficSelector::any_for(v4(10, 0, 0, 2), v4(10, 0, 0, 3))),
        "10.0.0.2/31"
    );
    assert_eq!(
        show(ts(6, (443, 443), v4(10, 0, 0, 0), v4(10, 0, 0, 255))),
        "10.0.0.0/24[tcp/443]"
    );
    assert_eq!(
        show(ts(17, (0, 65535), v4(10, 0, 0, 0), v4(10, 0, 0, 255))),
        "10.0.0.0/24[udp]"
    );
    assert_eq!(
        show(ts(0, (1024, 2047), v4(10, 0, 0, 0), v4(10, 0, 0, 255))),
        "10.0.0.0/24[0/1024-2047]"
    );
    assert_eq!(
        show(ts(200, (0, 65535), v4(10, 0, 0, 0), v4(10, 0, 0, 255))),
        "10.0.0.0/24[200]"
    );
    assert_eq!(
        show(ts(17, (65535, 0), v4(10, 0, 0, 0), v4(10, 0, 0, 255))),
        "10.0.0.0/24[udp/OPAQUE]"
    );
    assert_eq!(
        show(ts(1, (0x0800, 0x0800), v4(10, 0, 0, 0), v4(10, 0, 0, 255))),
        "10.0.0.0/24[icmp/8]"
    );
    assert_eq!(
        show(ts(58, (0x8000, 0x81FF), v6("::"), v6("::"))),
        "::/128[ipv6-icmp/128-129(255)]"
    );

    assert_eq!(TrafficSelector::from_cidr(v4(1, 2, 3, 4), 33), None);
    assert_eq!(TrafficSelector::from_cidr(v6("::"), 129), None);
    assert_eq!(
        TrafficSelector::from_cidr(v4(1, 2, 3, 4), 32).unwrap().to_cidr(),
        Some((v4(1, 2, 3, 4), 32))
    );
    assert_eq!(
        TrafficSelector::any_for(v4(10, 0, 0, 1), v4(10, 0, 0, 2)).to_cidr(),
        None
    );
    assert_eq!(
        TrafficSelector::any_for(v4(10, 0, 0, 9), v4(10, 0, 0, 1)).to_cidr(),
        None
    );
    assert_eq!(
        TrafficSelector::host(v4(1, 1, 1, 1)).ts_type(),
        ts_type::IPV4_ADDR_RANGE
    );
    assert_eq!(TrafficSelector::host(v6("::1")).ts_type(), ts_type::IPV6_ADDR_RANGE);
}

#[test]
fn ts_payload_parse_rules() {
    let parse = |body: &[u8]| parse_payloads(44, &generic(0, 0, body));
    let one = Payload::TsI(vec![TrafficSelector::host(v4(10, 0, 0, 1))]).body();
    assert!(parse(&one).is_ok());
    // Count 0, count beyond the selectors, count short of them.
    for count in [0u8, 2] {
        let mut b = one.clone();
        b[0] = count;
        assert_eq!(parse(&b), Err(WireError::BadTrafficSelector), "count {count}");
    }
    let two = Payload::TsI(vec![TrafficSelector::host(v4(10, 0, 0, 1)); 2]).body();
    let mut b = two.clone();
    b[0] = 1;
    assert_eq!(parse(&b), Err(WireError::BadTrafficSelector));
    // Unknown TS type (e.g. 10, RFC 9478 security label), or a v6 type on v4 length.
    for kind in [0u8, 9, 10, 8] {
        let mut b = one.clone();
        b[4] = kind;
        assert_eq!(parse(&b), Err(WireError::BadTrafficSelector), "type {kind}");
    }
    // Start address above end; start port above end port (not OPAQUE).
    let reversed = Payload::TsI(vec![TrafficSelector::any_for(v4(10, 0, 0, 9), v4(10, 0, 0, 1))]).body();
    assert_eq!(parse(&reversed), Err(WireError::BadTrafficSelector));
    let bad_ports = Payload::TsI(vec![ts(6, (90, 80), v4(10, 0, 0, 1), v4(10, 0, 0, 1))]).body();
    assert_eq!(parse(&bad_ports), Err(WireError::BadTrafficSelector));
    let near_opaque = Payload::TsI(vec![ts(6, (65535, 1), v4(10, 0, 0, 1), v4(10, 0, 0, 1))]).body();
    assert_eq!(parse(&near_opaque), Err(WireError::BadTrafficSelector));
    let opaque = vec![ts(6, (65535, 0), v4(10, 0, 0, 1), v4(10, 0, 0, 1))];
    assert_eq!(
        parse(&Payload::TsI(opaque.clone()).body()),
        Ok(vec![Payload::TsI(opaque)])
    );
    // Mixed families within one payload are fine (each selector has its own type).
    let mixed = vec![TrafficSelector::host(v4(10, 0, 0, 1)), TrafficSelector::host(v6("::1"))];
    assert_eq!(
        parse_payloads(45, &generic(0, 0, &Payload::TsR(mixed.clone()).body())),
        Ok(vec![Payload::TsR(mixed)])
    );
}
