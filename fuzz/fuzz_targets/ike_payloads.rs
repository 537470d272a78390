//! `ike::wire::parse_payloads(first_type, rest)`: the decrypted inside of an SK payload.
//!
//! The first byte is the type of the first payload (any of the 256), the rest the chain.
//! Properties: it never panics; when it parses, `encode_payloads` returns the same first type
//! and bytes that parse to an equal chain, and encoding that again gives the same bytes. The
//! parsed values are also run through what the engine does with them next: proposal choice
//! (`select_ike`/`select_esp`, whose answers we must accept ourselves), traffic-selector
//! narrowing (`narrow` results lie `within` the offer; a selector intersected with itself is
//! itself; `to_cidr` round-trips through `from_cidr`), notify/delete accessors and `Display`.

#![no_main]

use std::net::Ipv4Addr;

use braid_ipsec::ike::negotiate::{
    accept_esp_answer, accept_ike_answer, describe, narrow, select_esp, select_ike, selector_for_prefix, within,
    ChildExchange,
};
use braid_ipsec::ike::wire::{
    encode_payloads, find_notify, notify_type, parse_payloads, payload_type, Payload, TrafficSelector,
};
use braid_ipsec::proposal::{default_esp_proposals, default_ike_proposals};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let Ok(payloads) = parse_payloads(first, rest) else {
        return;
    };
    let mut bytes = Vec::new();
    let first_again = encode_payloads(&payloads, &mut bytes);
    assert_eq!(first_again, first, "first payload type changed");
    assert!(bytes.len() <= rest.len(), "re-encoding grew the chain");
    let reparsed = parse_payloads(first_again, &bytes).expect("re-encoded payloads parse");
    assert_eq!(reparsed, payloads);
    let mut again = Vec::new();
    encode_payloads(&reparsed, &mut again);
    assert_eq!(again, bytes, "encoding is not a fixpoint");

    let _ = find_notify(&payloads, notify_type::COOKIE);
    for payload in &payloads {
        let _ = payload_type::name(payload.kind());
        let _ = payload.body();
        match payload {
            Payload::Sa(proposals) => negotiation(proposals),
            Payload::TsI(selectors) | Payload::TsR(selectors) => selectors_checks(selectors),
            Payload::IdI(id) | Payload::IdR(id) => {
                let _ = (id.to_string(), id.to_ip(), id.matches(id));
            }
            Payload::Notify(n) => {
                let _ = (n.is_error(), notify_type::name(n.kind));
            }
            Payload::Delete(d) => {
                assert!(d.spis_u32().count() <= d.spis.len());
            }
            _ => {}
        }
    }
});

fn negotiation(proposals: &[braid_ipsec::ike::wire::Proposal]) {
    let _ = describe(proposals);
    for p in proposals {
        let _ = (p.spi_u32(), p.spi_u64(), p.transform(1));
    }
    let ike = default_ike_proposals();
    if let Some((chosen, answer)) = select_ike(&ike, proposals, &[]) {
        assert_eq!(
            accept_ike_answer(&ike, std::slice::from_ref(&answer)),
            Some(chosen),
            "we would refuse our own IKE answer"
        );
    }
    let plain = default_esp_proposals();
    let pfs: Vec<_> = ["aes256gcm16-ecp256-esn-noesn", "chacha20poly1305-x25519"]
        .iter()
        .map(|p| p.parse().expect("a PFS proposal parses"))
        .collect();
    for esp in [&plain, &pfs] {
        for exchange in [ChildExchange::IkeAuth, ChildExchange::CreateChildSa] {
            if let Some((chosen, answer)) = select_esp(esp, proposals, 0x0102_0304, exchange) {
                let accepted = accept_esp_answer(esp, std::slice::from_ref(&answer), exchange)
                    .expect("we would refuse our own ESP answer");
                assert_eq!((accepted.aead, accepted.dh, accepted.esn), (chosen.aead, chosen.dh, chosen.esn));
                assert_eq!(accepted.peer_spi, 0x0102_0304);
            }
        }
    }
}

fn selectors_checks(selectors: &[TrafficSelector]) {
    for ts in selectors {
        let _ = ts.to_string();
        assert_eq!(ts.intersect(ts), Some(*ts), "a selector is not its own intersection");
        assert!(ts.contains(ts));
        if let Some((net, prefix)) = ts.to_cidr() {
            let back = TrafficSelector::from_cidr(net, prefix).expect("to_cidr gives a valid prefix");
            assert_eq!(
                (back.start, back.end),
                (ts.start, ts.end),
                "to_cidr does not round-trip"
            );
        }
    }
    let allowed = [
        selector_for_prefix(Ipv4Addr::new(198, 18, 1, 0).into(), 24),
        selector_for_prefix(Ipv4Addr::new(0, 0, 0, 0).into(), 0),
    ];
    for allowed in [&allowed[..], selectors] {
        let narrowed = narrow(selectors, allowed);
        if !narrowed.is_empty() {
            assert!(within(&narrowed, selectors), "narrowed selectors lie outside the offer");
        }
    }
}
