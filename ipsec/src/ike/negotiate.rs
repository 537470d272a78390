//! Proposal and traffic-selector negotiation (RFC 7296 §2.7, §2.9, §3.3).
//!
//! Design: pure functions from what we are configured with and what the peer sent to what we
//! answer, or to a description of the mismatch for the log line. A responder picks by its own
//! preference order (as strongSwan does by default) the first configured proposal that one of
//! the peer's proposals contains, and answers with that peer proposal's number and exactly one
//! transform of each type. An initiator accepts an answer only if it is one of its offers.

use std::net::IpAddr;

use super::wire::{protocol, transform, Proposal, TrafficSelector, Transform};
use crate::proposal::{Aead, DhGroup, EsnPolicy, EspProposal, IkeProposal, Prf};

fn encr(aead: Aead) -> Transform {
    match aead {
        Aead::AesGcm16_256 => Transform {
            kind: transform::ENCR,
            id: transform::ENCR_AES_GCM_16,
            key_length: Some(256),
        },
        Aead::ChaCha20Poly1305 => Transform {
            kind: transform::ENCR,
            id: transform::ENCR_CHACHA20_POLY1305,
            key_length: None,
        },
    }
}

fn prf_transform(prf: Prf) -> Transform {
    match prf {
        Prf::HmacSha256 => Transform {
            kind: transform::PRF,
            id: transform::PRF_HMAC_SHA2_256,
            key_length: None,
        },
    }
}

fn dh_transform(dh: DhGroup) -> Transform {
    Transform {
        kind: transform::DH,
        id: super::crypto::dh_group_number(dh),
        key_length: None,
    }
}

fn esn_transform(on: bool) -> Transform {
    Transform {
        kind: transform::ESN,
        id: if on { transform::ESN_ON } else { transform::ESN_NONE },
        key_length: None,
    }
}

/// Our IKE SA offer: one proposal per configured suite, numbered from 1. `spi` is empty in
/// IKE_SA_INIT and the new 8-byte SPI when rekeying the IKE SA.
pub fn ike_offer(ours: &[IkeProposal], spi: &[u8]) -> Vec<Proposal> {
    (1u8..)
        .zip(ours)
        .map(|(number, p)| Proposal {
            number,
            protocol: protocol::IKE,
            spi: spi.to_vec(),
            transforms: vec![encr(p.aead), prf_transform(p.prf), dh_transform(p.dh)],
        })
        .collect()
}

fn esn_modes(policy: EsnPolicy) -> &'static [bool] {
    match policy {
        EsnPolicy::Off => &[false],
        EsnPolicy::On => &[true],
        EsnPolicy::Either => &[true, false],
    }
}

/// Where a CHILD SA is negotiated. In IKE_AUTH its keys come from the IKE SA: no KE can be
/// sent, so DH transforms are left out of offers and ignored in the peer's (RFC 7296 §1.2).
/// In CREATE_CHILD_SA a proposal's DH group means a KE exchange of that group (PFS, §1.3.1):
/// an offer names it, and a proposal matches only one with the same group, or none with none.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ChildExchange {
    IkeAuth,
    CreateChildSa,
}

/// The DH group a proposal names (a DH transform other than NONE), if any.
fn dh_of(p: &Proposal) -> Option<u16> {
    p.transforms
        .iter()
        .find(|t| t.kind == transform::DH && t.id != 0)
        .map(|t| t.id)
}

/// Whether the peer's proposal `p` carries the DH group our proposal `o` asks for in
/// `exchange`.
fn dh_matches(o: &EspProposal, p: &Proposal, exchange: ChildExchange) -> bool {
    match (exchange, o.dh) {
        (ChildExchange::IkeAuth, _) => true,
        (ChildExchange::CreateChildSa, Some(dh)) => has(p, &dh_transform(dh)),
        (ChildExchange::CreateChildSa, None) => dh_of(p).is_none(),
    }
}

/// The DH group, if any, that an offer or answer of `o` names in `exchange`: the group of the
/// KE exchange that keys the CHILD SA.
fn dh_group_in(o: &EspProposal, exchange: ChildExchange) -> Option<DhGroup> {
    match exchange {
        ChildExchange::IkeAuth => None,
        ChildExchange::CreateChildSa => o.dh,
    }
}

/// Our CHILD SA offer with our inbound SPI.
pub fn esp_offer(ours: &[EspProposal], spi: u32, exchange: ChildExchange) -> Vec<Proposal> {
    (1u8..)
        .zip(ours)
        .map(|(number, p)| {
            let mut transforms = vec![encr(p.aead)];
            transforms.extend(dh_group_in(p, exchange).map(dh_transform));
            transforms.extend(esn_modes(p.esn).iter().map(|&on| esn_transform(on)));
            Proposal {
                number,
                protocol: protocol::ESP,
                spi: spi.to_be_bytes().to_vec(),
                transforms,
            }
        })
        .collect()
}

fn has(p: &Proposal, t: &Transform) -> bool {
    p.transforms.contains(t)
}

/// An AEAD may only come with no integrity algorithm, or with INTEG "none" (RFC 5282 §8): what
/// an answer must look like. An offer may mix AEAD and non-AEAD ciphers (with their integrity
/// algorithms) in one proposal; choosing an AEAD from it ignores the integrity transforms, as
/// strongSwan does, and the answer carries none.
fn integrity_free(p: &Proposal) -> bool {
    p.transforms.iter().all(|t| t.kind != transform::INTEG || t.id == 0)
}

/// The ESN choice an ESP proposal of the peer allows for our policy, ESN preferred. A peer
/// proposal without an ESN transform is read as "no ESN".
fn esn_choice(p: &Proposal, policy: EsnPolicy) -> Option<bool> {
    let offered: Vec<bool> = p
        .transforms
        .iter()
        .filter(|t| t.kind == transform::ESN)
        .filter_map(|t| match t.id {
            transform::ESN_ON => Some(true),
            transform::ESN_NONE => Some(false),
            _ => None,
        })
        .collect();
    let any_esn_transform = p.transforms.iter().any(|t| t.kind == transform::ESN);
    esn_modes(policy)
        .iter()
        .copied()
        .find(|&on| offered.contains(&on) || (!on && !any_esn_transform))
}

/// The IKE proposal to answer a peer's offer with, by our preference: what was chosen and the
/// answer to send (the peer's proposal number, one transform per type, SPI `spi`).
pub fn select_ike(ours: &[IkeProposal], theirs: &[Proposal], spi: &[u8]) -> Option<(IkeProposal, Proposal)> {
    ours.iter().find_map(|o| {
        let wanted = [encr(o.aead), prf_transform(o.prf), dh_transform(o.dh)];
        theirs
            .iter()
            .find(|p| p.protocol == protocol::IKE && wanted.iter().all(|t| has(p, t)))
            .map(|p| {
                let answer = Proposal {
                    number: p.number,
                    protocol: protocol::IKE,
                    spi: spi.to_vec(),
                    transforms: wanted.to_vec(),
                };
                (*o, answer)
            })
    })
}

/// What both sides settled on for a CHILD SA.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct EspChoice {
    pub aead: Aead,
    /// The DH group of the KE exchange that keys it (CREATE_CHILD_SA with PFS only).
    pub dh: Option<DhGroup>,
    pub esn: bool,
    /// The peer's inbound SPI: where we send.
    pub peer_spi: u32,
}

fn esp_spi(p: &Proposal) -> Option<u32> {
    <[u8; 4]>::try_from(p.spi.as_slice()).ok().map(u32::from_be_bytes)
}

/// The ESP proposal to answer a peer's offer with, by our preference, and the answer carrying
/// our inbound SPI `spi`.
pub fn select_esp(
    ours: &[EspProposal],
    theirs: &[Proposal],
    spi: u32,
    exchange: ChildExchange,
) -> Option<(EspChoice, Proposal)> {
    ours.iter().find_map(|o| {
        theirs.iter().find_map(|p| {
            if p.protocol != protocol::ESP || !has(p, &encr(o.aead)) || !dh_matches(o, p, exchange) {
                return None;
            }
            let esn = esn_choice(p, o.esn)?;
            let peer_spi = esp_spi(p)?;
            let mut transforms = vec![encr(o.aead)];
            transforms.extend(dh_group_in(o, exchange).map(dh_transform));
            transforms.push(esn_transform(esn));
            let answer = Proposal {
                number: p.number,
                protocol: protocol::ESP,
                spi: spi.to_be_bytes().to_vec(),
                transforms,
            };
            Some((
                EspChoice {
                    aead: o.aead,
                    dh: dh_group_in(o, exchange),
                    esn,
                    peer_spi,
                },
                answer,
            ))
        })
    })
}

/// The IKE proposal a responder's answer chose, if it is one we offered (exactly one
/// proposal, one transform per type).
pub fn accept_ike_answer(ours: &[IkeProposal], answer: &[Proposal]) -> Option<IkeProposal> {
    let [p] = answer else { return None };
    if p.protocol != protocol::IKE || p.transforms.len() != 3 {
        return None;
    }
    ours.iter()
        .find(|o| {
            [encr(o.aead), prf_transform(o.prf), dh_transform(o.dh)]
                .iter()
                .all(|t| has(p, t))
        })
        .copied()
}

/// The CHILD SA a responder's answer chose, if it is one we offered.
pub fn accept_esp_answer(ours: &[EspProposal], answer: &[Proposal], exchange: ChildExchange) -> Option<EspChoice> {
    let [p] = answer else { return None };
    if p.protocol != protocol::ESP {
        return None;
    }
    let peer_spi = esp_spi(p)?;
    ours.iter().find_map(|o| {
        if !has(p, &encr(o.aead)) || !integrity_free(p) || !dh_matches(o, p, exchange) {
            return None;
        }
        let esn_transforms: Vec<&Transform> = p.transforms.iter().filter(|t| t.kind == transform::ESN).collect();
        let esn = match esn_transforms.as_slice() {
            [] => false,
            [t] if t.id == transform::ESN_ON => true,
            [t] if t.id == transform::ESN_NONE => false,
            _ => return None,
        };
        esn_modes(o.esn).contains(&esn).then_some(EspChoice {
            aead: o.aead,
            dh: dh_group_in(o, exchange),
            esn,
            peer_spi,
        })
    })
}

/// The SPI an IKE rekey proposal carries (8 bytes).
pub fn ike_spi(p: &Proposal) -> Option<u64> {
    <[u8; 8]>::try_from(p.spi.as_slice()).ok().map(u64::from_be_bytes)
}

/// Traffic selectors as a responder narrows them: each offered selector intersected with
/// each allowed one, the non-empty results (RFC 7296 §2.9).
pub fn narrow(offered: &[TrafficSelector], allowed: &[TrafficSelector]) -> Vec<TrafficSelector> {
    let mut out = Vec::new();
    for o in offered {
        for a in allowed {
            if let Some(ts) = o.intersect(a) {
                if !out.contains(&ts) {
                    out.push(ts);
                }
            }
        }
    }
    out
}

/// Whether every selector a responder returned lies inside what we offered.
pub fn within(returned: &[TrafficSelector], offered: &[TrafficSelector]) -> bool {
    !returned.is_empty() && returned.iter().all(|r| offered.iter().any(|o| o.contains(r)))
}

/// A traffic selector covering one prefix, every protocol and port.
pub fn selector_for_prefix(addr: IpAddr, len: u8) -> TrafficSelector {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len.min(32)))
            };
            TrafficSelector::any_for(IpAddr::V4((bits & mask).into()), IpAddr::V4((bits | !mask).into()))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len.min(128)))
            };
            TrafficSelector::any_for(IpAddr::V6((bits & mask).into()), IpAddr::V6((bits | !mask).into()))
        }
    }
}

/// A proposal list as strongSwan would print it, for log lines about mismatches
/// (`IKE:AES_GCM_16_256/PRF_HMAC_SHA2_256/CURVE_25519`).
pub fn describe(proposals: &[Proposal]) -> String {
    proposals
        .iter()
        .map(|p| {
            let proto = match p.protocol {
                protocol::IKE => "IKE",
                protocol::ESP => "ESP",
                protocol::AH => "AH",
                _ => "?",
            };
            let transforms: Vec<String> = p.transforms.iter().map(describe_transform).collect();
            format!("{proto}:{}", transforms.join("/"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_transform(t: &Transform) -> String {
    match (t.kind, t.id) {
        (transform::ENCR, transform::ENCR_AES_GCM_16) => {
            format!("AES_GCM_16_{}", t.key_length.map_or("?".into(), |k| k.to_string()))
        }
        (transform::ENCR, transform::ENCR_CHACHA20_POLY1305) => "CHACHA20_POLY1305".into(),
        (transform::ENCR, 12) => format!("AES_CBC_{}", t.key_length.map_or("?".into(), |k| k.to_string())),
        (transform::PRF, transform::PRF_HMAC_SHA2_256) => "PRF_HMAC_SHA2_256".into(),
        (transform::PRF, 2) => "PRF_HMAC_SHA1".into(),
        (transform::PRF, 7) => "PRF_HMAC_SHA2_512".into(),
        (transform::INTEG, 12) => "HMAC_SHA2_256_128".into(),
        (transform::INTEG, 2) => "HMAC_SHA1_96".into(),
        (transform::DH, 31) => "CURVE_25519".into(),
        (transform::DH, 19) => "ECP_256".into(),
        (transform::DH, 14) => "MODP_2048".into(),
        (transform::ESN, transform::ESN_ON) => "ESN".into(),
        (transform::ESN, transform::ESN_NONE) => "NO_EXT_SEQ".into(),
        (kind, id) => format!("type{kind}:{id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proposal::{default_esp_proposals, default_ike_proposals};

    #[test]
    fn our_offer_is_accepted_by_ourselves() {
        let ours = default_ike_proposals();
        let offer = ike_offer(&ours, &[]);
        let (chosen, answer) = select_ike(&ours, &offer, &[]).unwrap();
        assert_eq!(chosen, ours[0]);
        assert_eq!(accept_ike_answer(&ours, &[answer]), Some(ours[0]));
    }

    #[test]
    fn responder_prefers_its_own_order() {
        let x25519: IkeProposal = "aes256gcm16-prfsha256-x25519".parse().unwrap();
        let p256: IkeProposal = "aes256gcm16-prfsha256-ecp256".parse().unwrap();
        let offer = ike_offer(&[x25519, p256], &[]);
        let (chosen, answer) = select_ike(&[p256, x25519], &offer, &[]).unwrap();
        assert_eq!(chosen, p256);
        assert_eq!(answer.number, 2);
    }

    #[test]
    fn mismatch_selects_nothing_and_is_described() {
        let chacha: IkeProposal = "chacha20poly1305-prfsha256-ecp256".parse().unwrap();
        let offer = ike_offer(&default_ike_proposals()[..1], &[]);
        assert!(select_ike(&[chacha], &offer, &[]).is_none());
        assert_eq!(describe(&offer), "IKE:AES_GCM_16_256/PRF_HMAC_SHA2_256/CURVE_25519");
    }

    #[test]
    fn esp_prefers_esn_when_both_allow_it() {
        let ours = default_esp_proposals();
        let offer = esp_offer(&ours, 0x1234_5678, ChildExchange::IkeAuth);
        let (choice, answer) = select_esp(&ours, &offer, 0xaaaa_bbbb, ChildExchange::IkeAuth).unwrap();
        assert!(choice.esn);
        assert_eq!(choice.peer_spi, 0x1234_5678);
        let accepted = accept_esp_answer(&ours, &[answer], ChildExchange::IkeAuth).unwrap();
        assert_eq!(accepted.peer_spi, 0xaaaa_bbbb);
        assert!(accepted.esn);
    }

    #[test]
    fn esp_falls_back_to_no_esn_for_a_strongswan_style_offer() {
        let theirs: Vec<EspProposal> = vec!["aes256gcm16".parse().unwrap()];
        let offer = esp_offer(&theirs, 0x1000, ChildExchange::IkeAuth);
        let (choice, _) = select_esp(&default_esp_proposals(), &offer, 0x2000, ChildExchange::IkeAuth).unwrap();
        assert!(!choice.esn);
        let esn_only: Vec<EspProposal> = vec!["aes256gcm16-esn".parse().unwrap()];
        assert!(select_esp(&esn_only, &offer, 0x2000, ChildExchange::IkeAuth).is_none());
    }

    #[test]
    fn an_answer_we_did_not_offer_is_refused() {
        let ours: Vec<EspProposal> = vec!["aes256gcm16".parse().unwrap()];
        let chacha: Vec<EspProposal> = vec!["chacha20poly1305".parse().unwrap()];
        let answer = esp_offer(&chacha, 0x1000, ChildExchange::IkeAuth);
        assert!(accept_esp_answer(&ours, &answer, ChildExchange::IkeAuth).is_none());
        let two = esp_offer(&default_esp_proposals(), 0x1000, ChildExchange::IkeAuth);
        assert!(
            accept_esp_answer(&default_esp_proposals(), &two, ChildExchange::IkeAuth).is_none(),
            "an answer has one proposal"
        );
    }

    #[test]
    fn an_offer_mixing_aead_and_integrity_is_answered_with_the_aead_alone() {
        let aes_cbc = Transform {
            kind: transform::ENCR,
            id: 12,
            key_length: Some(256),
        };
        let hmac = Transform::new(transform::INTEG, 12);
        let ours = default_ike_proposals();
        let mut offer = ike_offer(&ours[..1], &[]);
        offer[0].transforms.extend([aes_cbc.clone(), hmac.clone()]);
        let (chosen, answer) = select_ike(&ours, &offer, &[]).unwrap();
        assert_eq!(chosen, ours[0]);
        assert!(integrity_free(&answer));
        assert_eq!(accept_ike_answer(&ours, &[answer]), Some(ours[0]));
        let esp = default_esp_proposals();
        let mut offer = esp_offer(&esp[..1], 0x1000, ChildExchange::IkeAuth);
        offer[0].transforms.extend([aes_cbc.clone(), hmac.clone()]);
        let (_, answer) = select_esp(&esp, &offer, 0x2000, ChildExchange::IkeAuth).unwrap();
        assert!(integrity_free(&answer));
        assert!(accept_esp_answer(&esp, &[answer], ChildExchange::IkeAuth).is_some());
        // An answer that names an integrity algorithm beside the AEAD is still refused.
        let mut bad = ike_offer(&ours[..1], &[]);
        bad[0].transforms.push(hmac);
        assert_eq!(accept_ike_answer(&ours, &bad), None);
    }

    #[test]
    fn a_dh_group_is_offered_and_matched_only_in_create_child_sa() {
        let pfs: Vec<EspProposal> = vec!["aes256gcm16-ecp256".parse().unwrap()];
        let plain: Vec<EspProposal> = vec!["aes256gcm16".parse().unwrap()];
        let dh = |offer: &[Proposal]| dh_of(&offer[0]);
        // IKE_AUTH carries no KE: the group is left out and ignored either way.
        assert_eq!(dh(&esp_offer(&pfs, 1, ChildExchange::IkeAuth)), None);
        let (choice, answer) = select_esp(
            &plain,
            &esp_offer(&pfs, 1, ChildExchange::CreateChildSa),
            2,
            ChildExchange::IkeAuth,
        )
        .unwrap();
        assert_eq!((choice.dh, dh_of(&answer)), (None, None));
        assert_eq!(
            accept_esp_answer(&pfs, &[answer], ChildExchange::IkeAuth).unwrap().dh,
            None
        );
        // CREATE_CHILD_SA: the group is offered, must match, and is answered.
        let offer = esp_offer(&pfs, 1, ChildExchange::CreateChildSa);
        assert_eq!(dh(&offer), Some(19));
        let (choice, answer) = select_esp(&pfs, &offer, 2, ChildExchange::CreateChildSa).unwrap();
        assert_eq!((choice.dh, dh_of(&answer)), (Some(DhGroup::P256), Some(19)));
        assert_eq!(
            accept_esp_answer(&pfs, &[answer], ChildExchange::CreateChildSa)
                .unwrap()
                .dh,
            Some(DhGroup::P256)
        );
        assert!(
            select_esp(&plain, &offer, 2, ChildExchange::CreateChildSa).is_none(),
            "a KE we would not run"
        );
        let x25519: Vec<EspProposal> = vec!["aes256gcm16-x25519".parse().unwrap()];
        assert!(
            select_esp(&x25519, &offer, 2, ChildExchange::CreateChildSa).is_none(),
            "another group"
        );
        let no_pfs = esp_offer(&plain, 1, ChildExchange::CreateChildSa);
        assert!(
            select_esp(&pfs, &no_pfs, 2, ChildExchange::CreateChildSa).is_none(),
            "PFS required"
        );
        let (_, answer) = select_esp(&plain, &no_pfs, 2, ChildExchange::CreateChildSa).unwrap();
        assert!(accept_esp_answer(&pfs, &[answer], ChildExchange::CreateChildSa).is_none());
    }

    #[test]
    fn selectors_narrow_to_the_intersection() {
        let site = selector_for_prefix("198.18.1.0".parse().unwrap(), 24);
        let wide = selector_for_prefix("198.18.0.0".parse().unwrap(), 16);
        assert_eq!(narrow(&[wide], &[site]), vec![site]);
        assert!(within(&[site], &[wide]));
        assert!(!within(&[wide], &[site]));
        let other = selector_for_prefix("198.19.0.0".parse().unwrap(), 24);
        assert!(narrow(&[other], &[site]).is_empty());
    }
}
