//! ESP SA tests: round trips, published vectors, tampering, replay, ESN and exhaustion.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey};

use super::*;

const CIPHERS: [EspCipher; 2] = [EspCipher::AesGcm256, EspCipher::ChaCha20Poly1305];
const SPI: u32 = 0xc0de_0001;
const KEYMAT: [u8; 36] = {
    let mut k = [0u8; 36];
    let mut i = 0;
    while i < 36 {
        k[i] = (i as u8).wrapping_mul(37).wrapping_add(11);
        i += 1;
    }
    k
};

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    assert_eq!(digits.len() % 2, 0, "odd hex");
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

fn keys(cipher: EspCipher) -> EspKeys {
    EspKeys::from_keymat(cipher, &KEYMAT).unwrap()
}

/// A matching sender and receiver on SPI, window 64.
fn pair(cipher: EspCipher, esn: bool) -> (OutboundSa, InboundSa) {
    (
        OutboundSa::new(SPI, cipher, keys(cipher), esn),
        InboundSa::new(SPI, cipher, keys(cipher), esn, 64),
    )
}

/// An inner packet of `len` bytes whose first byte says IP `version`.
fn inner(version: u8, len: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    if let Some(first) = p.first_mut() {
        *first = (version << 4) | 5;
    }
    p
}

fn seal(tx: &mut OutboundSa, packet: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; packet.len() + ESP_MAX_OVERHEAD];
    let len = tx.seal(packet, &mut out).unwrap();
    out.truncate(len);
    out
}

fn open(rx: &mut InboundSa, datagram: &[u8]) -> Result<(Opened, Vec<u8>), EspError> {
    let mut out = vec![0u8; datagram.len()];
    rx.open(datagram, &mut out).map(|o| (o, out[..o.len].to_vec()))
}

#[test]
fn round_trips_for_both_ciphers_esn_modes_and_ip_versions() {
    for cipher in CIPHERS {
        for esn in [false, true] {
            let (mut tx, mut rx) = pair(cipher, esn);
            let mut sent_bytes = 0;
            let mut seq = 0u64;
            for (version, next_header, min) in [(4, NEXT_HEADER_IPV4, 20), (6, NEXT_HEADER_IPV6, 40)] {
                for len in (min..min + 8).chain([576, 1400, 1500, 9000, MAX_INNER_LEN]) {
                    let packet = inner(version, len);
                    let datagram = seal(&mut tx, &packet);
                    seq += 1;
                    sent_bytes += len as u64;
                    let ciphertext_len = datagram.len() - ESP_HEADER_LEN - ESP_ICV_LEN;
                    assert_eq!(ciphertext_len % 4, 0, "{cipher:?} len {len}");
                    assert!(ciphertext_len - len >= 2 && ciphertext_len - len <= 5);
                    assert!(datagram.len() <= len + ESP_MAX_OVERHEAD);
                    assert_eq!(spi_of(&datagram), Some(SPI));
                    assert_eq!(datagram[4..8], (seq as u32).to_be_bytes());
                    assert_eq!(datagram[8..16], seq.to_be_bytes());
                    let (opened, plain) = open(&mut rx, &datagram).unwrap();
                    assert_eq!(opened, Opened { len, next_header, seq });
                    assert_eq!(plain, packet);
                }
            }
            assert_eq!((tx.packets(), tx.bytes()), (seq, sent_bytes));
            assert_eq!((rx.packets(), rx.bytes()), (seq, sent_bytes));
            assert_eq!(tx.next_seq(), seq + 1);
            assert_eq!(rx.replay_window().highest(), seq);
        }
    }
}

#[test]
fn seal_matches_the_raw_aead_known_answer() {
    // Fixed key, salt, SPI and sequence numbers: the ESP ciphertext must be exactly ring's AEAD
    // of inner ‖ 1 2 … ‖ pad length ‖ next header under nonce salt ‖ seq and the RFC AAD.
    let packet = inner(4, 41); // 41 + 1 pad + 2 = 44
    for cipher in CIPHERS {
        for (esn, seq, aad) in [
            (false, 1u64, hex("c0de0001 00000001")),
            (false, 0xfedc_ba98, hex("c0de0001 fedcba98")),
            (true, (1 << 32) + 7, hex("c0de0001 00000001 00000007")),
        ] {
            let mut tx = OutboundSa::new(SPI, cipher, keys(cipher), esn);
            tx.skip_to(seq);
            let datagram = seal(&mut tx, &packet);

            let mut expected = packet.clone();
            expected.extend_from_slice(&[1, 1, NEXT_HEADER_IPV4]);
            let key = LessSafeKey::new(UnboundKey::new(cipher.algorithm(), &KEYMAT[..32]).unwrap());
            let mut nonce = KEYMAT[32..].to_vec();
            nonce.extend_from_slice(&seq.to_be_bytes());
            let nonce = Nonce::try_assume_unique_for_key(&nonce).unwrap();
            let tag = key
                .seal_in_place_separate_tag(nonce, Aad::from(&aad), &mut expected)
                .unwrap();
            expected.extend_from_slice(tag.as_ref());

            let mut header = SPI.to_be_bytes().to_vec();
            header.extend_from_slice(&(seq as u32).to_be_bytes());
            header.extend_from_slice(&seq.to_be_bytes());
            assert_eq!(datagram[..16], header[..], "{cipher:?} seq {seq}");
            assert_eq!(datagram[16..], expected[..], "{cipher:?} seq {seq}");
        }
    }
}

#[test]
fn opens_the_rfc7634_appendix_a_packet() {
    // RFC 7634 Appendix A: ChaCha20-Poly1305 ESP, SPI 0x01020304, seq 5, IV 0x1011121314151617
    // (an IV that is not the sequence number: receivers take it from the wire).
    let keymat = hex("808182838485868788898a8b8c8d8e8f 909192939495969798999a9b9c9d9e9f a0a1a2a3");
    let datagram = hex("01020304 00000005 1011121314151617
         24039428b97f417e3c13753a4f05087b 67c352e6a7fab1b982d466ef407ae5c6
         14ee8099d52844eb61aa95dfab4c02f7 2aa71e7c4c4f64c9befe2facc638e8f3
         cbec163fac469b502773f6fb94e664da 9165b82829f641e0
         76aaa8266b7fb0f7b11b369907e1ad43");
    let expected = hex("45000054a6f200004001e778c6336405 c000020508005b7a3a080000553bec10
         0007362708090a0b0c0d0e0f10111213 1415161718191a1b1c1d1e1f20212223
         2425262728292a2b2c2d2e2f30313233 34353637");
    let cipher = EspCipher::ChaCha20Poly1305;
    let mut rx = InboundSa::new(
        0x0102_0304,
        cipher,
        EspKeys::from_keymat(cipher, &keymat).unwrap(),
        false,
        64,
    );
    let (opened, plain) = open(&mut rx, &datagram).unwrap();
    assert_eq!(
        opened,
        Opened {
            len: 84,
            next_header: NEXT_HEADER_IPV4,
            seq: 5
        }
    );
    assert_eq!(plain, expected);
    assert_eq!(open(&mut rx, &datagram).unwrap_err(), EspError::Replayed);
}

/// Opens a published AES-256-GCM ESP packet from draft-mcgrew-gcm-test-01 (RFC 4106's test
/// cases). Their inner packets carry next header 1, which tunnel mode refuses, so the
/// proof that nonce, AAD and ICV were right is that the packet got past the ICV (the error is
/// about the trailer, the sequence number is now marked) and decrypted to the published text.
fn open_mcgrew_vector(keymat: &str, datagram: &str, plaintext: &str, esn: bool, mark: Option<u64>, seq: u64) {
    let cipher = EspCipher::AesGcm256;
    let datagram = hex(datagram);
    let plaintext = hex(plaintext);
    let spi = spi_of(&datagram).unwrap();
    let mut rx = InboundSa::new(
        spi,
        cipher,
        EspKeys::from_keymat(cipher, &hex(keymat)).unwrap(),
        esn,
        64,
    );
    if let Some(mark) = mark {
        rx.mark(mark);
    }
    let mut out = vec![0u8; datagram.len()];
    assert_eq!(rx.open(&datagram, &mut out).unwrap_err(), EspError::BadNextHeader);
    assert_eq!(out[..plaintext.len()], plaintext[..]);
    assert_eq!(rx.replay_window().highest(), seq);
    assert_eq!(rx.open(&datagram, &mut out).unwrap_err(), EspError::Replayed);
    assert_eq!(rx.packets(), 0);
}

#[test]
fn opens_published_aes256_gcm_vectors() {
    // SPI 0x4a2cbfe3, 32-bit sequence number 2, salt 0x11223344.
    open_mcgrew_vector(
        "abbccddef00112233445566778899aab abbccddef00112233445566778899aab 11223344",
        "4a2cbfe3 00000002 0102030405060708
         ff425c9b724599df7a3bcd510194e00d 6a78107f1b0b1cbf06efae9d65a5d763
         748a637985771d347f0545659f14e99d ef842d8eb335f4eecfdbf831824b4c49 15956c96",
        "4500003069a6400080062690c0a80102 9389155e0a9e008b2dc57ee000000000
         7002400020bf0000020405b401010402 01020201",
        false,
        None,
        2,
    );
}

#[test]
fn opens_published_aes256_gcm_esn_vectors() {
    // SPI 0x796b6963 with ESN at the very last sequence number, 2^64 - 1: the AAD is
    // SPI ‖ ffffffff ‖ ffffffff, the high half inferred from a window just below it.
    open_mcgrew_vector(
        "6c6567616c697a656d6172696a75616e 61616e64646f69746265666f72656961 7475726e",
        "796b6963 ffffffff 333021696765746d
         f97ab2aa356d8edce17644ac8c78e25d d24dedbb29ebf1b64a274b39b49c3a86
         4cd3d78ca4ae68a32b42458fb57dbe82 1dcc63b9d0937ba2945f669368661a32 9fb4c053",
        "45000030da3a00008001df3bc0a80005 c0a800010800c6cd0200070061626364
         65666768696a6b6c6d6e6f7071727374 01020201",
        true,
        Some(u64::MAX - 20),
        u64::MAX,
    );
    // SPI 0x17405e67, ESN sequence number 0x156f3126_dd0db99b.
    open_mcgrew_vector(
        "abbccddef00112233445566778899aab abbccddef00112233445566778899aab 73616c74",
        "17405e67 dd0db99b 616e640169766563
         f2d69ecdbd5a0d5b8d5ef38bad4da58d 1f278fde98ef67549d524a3018d9a57f
         f4d3a31ce673119e451626c2415771e3 b7eebca614c89b35",
        "45080028732c00004006e9f90a010612 0a01038f06b88023dd6bafbecb712602 50101f646d540001",
        true,
        Some(0x156f_3126_dd0d_b900),
        0x156f_3126_dd0d_b99b,
    );
}

#[test]
fn any_tampered_byte_fails_without_moving_the_window() {
    for cipher in CIPHERS {
        for esn in [false, true] {
            let (mut tx, mut rx) = pair(cipher, esn);
            let datagram = seal(&mut tx, &inner(6, 61));
            for i in 0..datagram.len() {
                for mask in [0x01, 0x80, 0xff] {
                    let mut bad = datagram.clone();
                    bad[i] ^= mask;
                    let expected = if i < 4 {
                        EspError::WrongSpi
                    } else {
                        EspError::AuthenticationFailed
                    };
                    let err = open(&mut rx, &bad).unwrap_err();
                    // Flipping seq 1 to 0 (or, with ESN, out of block 0) is refused before the ICV.
                    let early = i < 8 && err == EspError::TooOld;
                    assert!(
                        err == expected || early,
                        "{cipher:?} esn {esn} byte {i} mask {mask:#x}: {err:?}"
                    );
                    assert_eq!(rx.replay_window().highest(), 0);
                }
            }
            assert_eq!(rx.packets(), 0);
            assert_eq!(open(&mut rx, &datagram).unwrap().0.seq, 1);
        }
    }
}

#[test]
fn replays_are_refused() {
    for cipher in CIPHERS {
        let (mut tx, mut rx) = pair(cipher, false);
        let first = seal(&mut tx, &inner(4, 100));
        let second = seal(&mut tx, &inner(4, 100));
        open(&mut rx, &first).unwrap();
        assert_eq!(open(&mut rx, &first).unwrap_err(), EspError::Replayed);
        open(&mut rx, &second).unwrap();
        assert_eq!(open(&mut rx, &second).unwrap_err(), EspError::Replayed);
        assert_eq!(open(&mut rx, &first).unwrap_err(), EspError::Replayed);
        assert_eq!(rx.packets(), 2);
    }
}

#[test]
fn reordering_within_the_window_is_accepted_beyond_it_too_old() {
    for cipher in CIPHERS {
        let (mut tx, mut rx) = pair(cipher, false);
        let sealed: Vec<Vec<u8>> = (0..200).map(|_| seal(&mut tx, &inner(4, 60))).collect();
        // Newest first, then everything back to the window's left edge (seq 137 = 200 - 63).
        assert_eq!(open(&mut rx, &sealed[199]).unwrap().0.seq, 200);
        for seq in (137..200).rev() {
            assert_eq!(open(&mut rx, &sealed[seq as usize - 1]).unwrap().0.seq, seq);
        }
        assert_eq!(open(&mut rx, &sealed[135]).unwrap_err(), EspError::TooOld);
        assert_eq!(open(&mut rx, &sealed[0]).unwrap_err(), EspError::TooOld);
        assert_eq!(rx.packets(), 64);
    }
}

#[test]
fn esn_infers_the_high_half_across_the_boundary() {
    const B: u64 = 1 << 32;
    for cipher in CIPHERS {
        let (mut tx, mut rx) = pair(cipher, true);
        tx.skip_to(B - 12);
        let sealed: Vec<(u64, Vec<u8>)> = (B - 12..=B + 5)
            .map(|seq| (seq, seal(&mut tx, &inner(4, 33))))
            .collect();
        let packet = |seq: u64| &sealed.iter().find(|(s, _)| *s == seq).unwrap().1;
        rx.mark(B - 20);
        // Window below 2^32, sender above it: low half 5 wraps into block 1.
        assert_eq!(open(&mut rx, packet(B - 12)).unwrap().0.seq, B - 12);
        assert_eq!(open(&mut rx, packet(B + 5)).unwrap().0.seq, B + 5);
        // Window now straddles 2^32: late packets from below it are still block 0.
        assert_eq!(open(&mut rx, packet(B - 3)).unwrap().0.seq, B - 3);
        assert_eq!(open(&mut rx, packet(B - 1)).unwrap().0.seq, B - 1);
        assert_eq!(open(&mut rx, packet(B)).unwrap().0.seq, B);
        assert_eq!(open(&mut rx, packet(B + 2)).unwrap().0.seq, B + 2);
        assert_eq!(open(&mut rx, packet(B - 3)).unwrap_err(), EspError::Replayed);
        assert_eq!(open(&mut rx, packet(B + 5)).unwrap_err(), EspError::Replayed);
        assert_eq!(rx.replay_window().highest(), B + 5);
        // A non-ESN receiver cannot place 2^32 + 5: its low half is 5, and the AAD differs.
        let mut plain_rx = InboundSa::new(SPI, cipher, keys(cipher), false, 64);
        assert_eq!(
            open(&mut plain_rx, packet(B + 5)).unwrap_err(),
            EspError::AuthenticationFailed
        );
    }
}

#[test]
fn esn_packet_left_of_a_window_in_one_block_is_too_old() {
    // RFC 4303 A2.2 reads a low half below the window's bottom as the next 2^32 block; a jump
    // that far ahead is implausible, so the packet is counted as too old without decrypting.
    // Nothing is marked.
    let (mut tx, mut rx) = pair(EspCipher::AesGcm256, true);
    tx.skip_to(1000);
    let old = seal(&mut tx, &inner(4, 20));
    rx.mark(5000);
    assert_eq!(open(&mut rx, &old).unwrap_err(), EspError::TooOld);
    assert_eq!(rx.replay_window().highest(), 5000);
    // Near the top of a block, the next block's start is a plausible jump: it is decrypted
    // under that guess (and here, sealed in the same block, fails the ICV).
    let (mut tx, mut rx) = pair(EspCipher::AesGcm256, true);
    tx.skip_to(10);
    let early = seal(&mut tx, &inner(4, 20));
    rx.mark(u64::from(u32::MAX) - 100);
    assert_eq!(open(&mut rx, &early).unwrap_err(), EspError::AuthenticationFailed);
    // A fresh ESN receiver puts low halves near 2^32 in block -1: too old.
    let (mut tx, mut rx) = pair(EspCipher::AesGcm256, true);
    tx.skip_to(u64::from(u32::MAX));
    assert_eq!(
        open(&mut rx, &seal(&mut tx, &inner(4, 20))).unwrap_err(),
        EspError::TooOld
    );
}

#[test]
fn sequence_numbers_run_out_and_never_wrap() {
    for cipher in CIPHERS {
        // Without ESN the last is 2^32 - 1.
        let (mut tx, mut rx) = pair(cipher, false);
        tx.skip_to(u64::from(u32::MAX) - 1);
        assert_eq!(tx.remaining(), 2);
        let a = seal(&mut tx, &inner(4, 20));
        let b = seal(&mut tx, &inner(4, 20));
        assert_eq!(tx.remaining(), 0);
        let mut out = [0u8; 100];
        assert_eq!(tx.seal(&inner(4, 20), &mut out), Err(EspError::SequenceExhausted));
        assert_eq!(tx.seal(&inner(4, 20), &mut out), Err(EspError::SequenceExhausted));
        assert_eq!((tx.packets(), tx.next_seq()), (2, 1 << 32));
        rx.mark(u64::from(u32::MAX) - 5);
        assert_eq!(open(&mut rx, &a).unwrap().0.seq, u64::from(u32::MAX) - 1);
        assert_eq!(open(&mut rx, &b).unwrap().0.seq, u64::from(u32::MAX));

        // With ESN the counter crosses 2^32 and stops at 2^64 - 1.
        let (mut tx, mut rx) = pair(cipher, true);
        tx.skip_to(u64::from(u32::MAX));
        seal(&mut tx, &inner(4, 20));
        assert_eq!(
            seal(&mut tx, &inner(4, 20))[4..16],
            hex("00000000 00000001 00000000")[..]
        );
        tx.skip_to(u64::MAX);
        assert_eq!(tx.remaining(), 1);
        let last = seal(&mut tx, &inner(6, 40));
        assert_eq!(tx.remaining(), 0);
        assert_eq!(tx.seal(&inner(4, 20), &mut out), Err(EspError::SequenceExhausted));
        assert_eq!(tx.next_seq(), u64::MAX);
        rx.mark(u64::MAX - 1);
        assert_eq!(open(&mut rx, &last).unwrap().0.seq, u64::MAX);
    }
}

#[test]
fn truncated_and_garbage_inputs_never_panic() {
    for cipher in CIPHERS {
        let (mut tx, mut rx) = pair(cipher, true);
        let datagram = seal(&mut tx, &inner(4, 20));
        let mut out = vec![0u8; 2048];
        for len in 0..=ESP_HEADER_LEN + ESP_ICV_LEN + 1 {
            assert_eq!(
                rx.open(&datagram[..len], &mut out),
                Err(EspError::Truncated),
                "len {len}"
            );
        }
        for len in ESP_HEADER_LEN + ESP_ICV_LEN + 2..datagram.len() {
            assert_eq!(
                rx.open(&datagram[..len], &mut out),
                Err(EspError::AuthenticationFailed),
                "len {len}"
            );
        }
        for fill in [0x00, 0xff, 0x5a] {
            for len in 0..300 {
                let garbage = vec![fill; len];
                assert!(rx.open(&garbage, &mut out).is_err());
                let mut junk = garbage.clone();
                if len >= 4 {
                    junk[..4].copy_from_slice(&SPI.to_be_bytes());
                }
                assert!(rx.open(&junk, &mut out).is_err());
                assert!(rx.open(&junk, &mut out[..len.min(7)]).is_err());
            }
        }
        assert_eq!(rx.replay_window().highest(), 0);
        assert_eq!(rx.open(&datagram, &mut out).unwrap().seq, 1);
    }
}

#[test]
fn bad_trailers_are_refused_after_marking() {
    let ip4 = inner(4, 20);
    let ip6 = inner(6, 40);
    let with = |payload: &[u8], trailer: &[u8]| [payload, trailer].concat();
    for cipher in CIPHERS {
        for (plaintext, expected) in [
            (with(&ip4, &[1, 2, 4, 3, 4]), Err(EspError::BadPadding)),
            (with(&ip4, &[0, 0, 2, 4]), Err(EspError::BadPadding)),
            (with(&ip4, &[2, 1, 2, 4]), Err(EspError::BadPadding)),
            (with(&[0x45], &[200, 4]), Err(EspError::BadPadding)),
            (with(&ip4, &[1, 2, 2, 59]), Err(EspError::BadNextHeader)),
            (with(&ip4, &[1, 2, 2, 0]), Err(EspError::BadNextHeader)),
            (with(&ip4, &[1, 2, 2, 41]), Err(EspError::InvalidInnerPacket)),
            (with(&ip6, &[1, 2, 2, 4]), Err(EspError::InvalidInnerPacket)),
            (vec![1, 1, 4], Err(EspError::InvalidInnerPacket)),
            (vec![0, 41], Err(EspError::InvalidInnerPacket)),
            // Valid, if not what we send: no alignment, and long (TFC-style) padding.
            (with(&ip4, &[0, 4]), Ok((20, NEXT_HEADER_IPV4))),
            (with(&ip6, &[1, 2, 3, 4, 5, 6, 7, 7, 41]), Ok((40, NEXT_HEADER_IPV6))),
        ] {
            let (mut tx, mut rx) = pair(cipher, false);
            let mut datagram = vec![0u8; plaintext.len() + ESP_HEADER_LEN + ESP_ICV_LEN];
            tx.seal_plaintext(&plaintext, &mut datagram).unwrap();
            let result = open(&mut rx, &datagram).map(|(o, _)| (o.len, o.next_header));
            assert_eq!(result, expected, "{cipher:?} {plaintext:?}");
            assert_eq!(rx.replay_window().highest(), 1);
            assert_eq!(open(&mut rx, &datagram).unwrap_err(), EspError::Replayed);
            assert_eq!(rx.packets(), u64::from(expected.is_ok()));
        }
    }
}

#[test]
fn seal_refuses_bad_inner_packets_and_short_buffers_without_spending() {
    for cipher in CIPHERS {
        let (mut tx, mut rx) = pair(cipher, false);
        let mut out = vec![0u8; MAX_INNER_LEN + 2 * ESP_MAX_OVERHEAD];
        for bad in [
            vec![],
            vec![0x00; 20],
            vec![0x50; 20],
            vec![0xf0],
            inner(4, MAX_INNER_LEN + 1),
        ] {
            assert_eq!(tx.seal(&bad, &mut out), Err(EspError::InvalidInnerPacket));
        }
        let packet = inner(4, 22); // 22 + 0 pad + 2: 56 bytes on the wire
        assert_eq!(tx.seal(&packet, &mut out[..55]), Err(EspError::BufferTooSmall));
        assert_eq!(tx.seal(&packet, &mut []), Err(EspError::BufferTooSmall));
        assert_eq!((tx.packets(), tx.bytes(), tx.next_seq()), (0, 0, 1));
        assert_eq!(tx.seal(&packet, &mut out[..56]), Ok(56));
        // Opening needs room for the ciphertext only.
        let datagram = out[..56].to_vec();
        assert_eq!(rx.open(&datagram, &mut [0u8; 23]), Err(EspError::BufferTooSmall));
        assert_eq!(rx.replay_window().highest(), 0);
        let mut small = [0u8; 24];
        assert_eq!(rx.open(&datagram, &mut small).unwrap().len, 22);
        assert_eq!(small[..22], packet[..]);
    }
}

#[test]
fn wrong_spi_and_key_are_refused() {
    for cipher in CIPHERS {
        let (mut tx, _) = pair(cipher, false);
        let datagram = seal(&mut tx, &inner(4, 20));
        let mut other_spi = InboundSa::new(SPI + 1, cipher, keys(cipher), false, 64);
        assert_eq!(open(&mut other_spi, &datagram).unwrap_err(), EspError::WrongSpi);
        let mut other_key = KEYMAT;
        other_key[0] ^= 1;
        let mut rx = InboundSa::new(
            SPI,
            cipher,
            EspKeys::from_keymat(cipher, &other_key).unwrap(),
            false,
            64,
        );
        assert_eq!(open(&mut rx, &datagram).unwrap_err(), EspError::AuthenticationFailed);
        let mut other_salt = KEYMAT;
        other_salt[35] ^= 1;
        let mut rx = InboundSa::new(
            SPI,
            cipher,
            EspKeys::from_keymat(cipher, &other_salt).unwrap(),
            false,
            64,
        );
        assert_eq!(open(&mut rx, &datagram).unwrap_err(), EspError::AuthenticationFailed);
        // The other cipher under the same key material.
        let other = if cipher == EspCipher::AesGcm256 {
            EspCipher::ChaCha20Poly1305
        } else {
            EspCipher::AesGcm256
        };
        let mut rx = InboundSa::new(SPI, other, keys(other), false, 64);
        assert_eq!(open(&mut rx, &datagram).unwrap_err(), EspError::AuthenticationFailed);
    }
}

#[test]
fn constants_and_debug() {
    assert_eq!(ESP_MAX_OVERHEAD, 37);
    let (tx, rx) = pair(EspCipher::AesGcm256, true);
    assert_eq!(tx.spi(), SPI);
    assert_eq!(rx.spi(), SPI);
    let shown = format!("{tx:?} {rx:?}");
    assert!(shown.contains("0xc0de0001"), "{shown}");
    assert!(!shown.contains("salt") && !shown.contains("key"), "{shown}");
    assert_eq!(EspError::from(crate::replay::ReplayError::TooOld), EspError::TooOld);
    assert_eq!(EspError::from(crate::replay::ReplayError::Replayed), EspError::Replayed);
}
