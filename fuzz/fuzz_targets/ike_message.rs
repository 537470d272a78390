//! `ike::wire::parse_message` on arbitrary datagrams (after the non-ESP marker).
//!
//! Properties: it never panics; a parsed header agrees with `Header::peek`; an encrypted
//! message's SK offsets lie inside it and `encode_sk_prefix` writes a prefix that parses to the
//! same header; a plaintext message re-encoded with `encode_message` (and `try_encode_message`,
//! which must agree) parses again to an equal `Message` (up to the Length field, since what
//! braid drops on receipt, e.g. unacceptable transforms, is not re-encoded), and encoding that
//! again gives the same bytes.

#![no_main]

use braid_ipsec::ike::wire::{
    encode_message, encode_sk_prefix, parse_message, try_encode_message, Body, Header, Message, GENERIC_HEADER_LEN,
    IKE_HEADER_LEN,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = parse_message(data) else {
        return;
    };
    assert_eq!(Header::peek(data), Ok(message.header));
    assert_eq!(message.header.length as usize, data.len());
    match &message.body {
        Body::Encrypted(part) => {
            assert_eq!(part.sk_offset, IKE_HEADER_LEN);
            assert_eq!(part.body_offset, part.sk_offset + GENERIC_HEADER_LEN);
            assert!(part.body_offset <= data.len());
            let mut prefix = Vec::new();
            encode_sk_prefix(
                message.header,
                part.first_inner,
                data.len() - part.body_offset,
                &mut prefix,
            );
            assert_eq!(prefix.len(), part.body_offset);
            let mut again = prefix.clone();
            again.extend_from_slice(&data[part.body_offset..]);
            let reparsed = parse_message(&again).expect("re-encoded SK prefix parses");
            assert_eq!(reparsed, message);
        }
        Body::Plain(payloads) => {
            let bytes = encode_message(message.header, payloads);
            assert_eq!(try_encode_message(message.header, payloads).as_ref(), Ok(&bytes));
            assert!(bytes.len() <= data.len(), "re-encoding grew the message");
            let reparsed = parse_message(&bytes).expect("re-encoded message parses");
            let expected = Message {
                header: Header {
                    length: bytes.len() as u32,
                    ..message.header
                },
                body: message.body.clone(),
            };
            assert_eq!(reparsed, expected);
            assert_eq!(
                encode_message(reparsed.header, payloads),
                bytes,
                "encoding is not a fixpoint"
            );
        }
    }
});
