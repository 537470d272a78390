//! The cipher suites braid offers and accepts, written in strongSwan's notation.
//!
//! Design: braid supports AEAD suites only, so a proposal is small and closed: an AEAD (which
//! is both encryption and integrity, RFC 5282, so no INTEG transform), and for IKE a PRF and a
//! Diffie-Hellman group. An operator writes them as strongSwan does (`aes256gcm16-prfsha256-x25519`,
//! `chacha20poly1305`), so a braid file and a `swanctl.conf` can be compared by eye. Parsing
//! and printing round-trip; an unknown or missing algorithm is an error that names the token
//! and lists what is supported.
//!
//! ESN: strongSwan adds "no ESN" to every ESP proposal unless told otherwise, and its userspace
//! ESP refuses ESN. braid's ESP proposals default to offering both (`-esn-noesn`: ESN preferred,
//! a peer may pick either); an SA without ESN is rekeyed before its 32-bit counter runs out.

use std::fmt;
use std::str::FromStr;

/// An AEAD algorithm for IKE's SK payload or for ESP.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Aead {
    /// AES-256 in GCM with a 16-byte ICV (RFC 4106, RFC 5282): ENCR 20, key length 256.
    AesGcm16_256,
    /// ChaCha20-Poly1305 (RFC 7634): ENCR 28, no key-length attribute.
    ChaCha20Poly1305,
}

/// A pseudo-random function for IKE.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Prf {
    /// PRF_HMAC_SHA2_256 (RFC 4868): transform id 5.
    HmacSha256,
}

/// A Diffie-Hellman group for IKE.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum DhGroup {
    /// Curve25519 (RFC 8031): group 31.
    Curve25519,
    /// NIST P-256 (RFC 5903): group 19.
    P256,
}

/// Which extended-sequence-number modes an ESP proposal allows (RFC 4304).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum EsnPolicy {
    /// 32-bit sequence numbers only.
    Off,
    /// 64-bit sequence numbers only.
    On,
    /// Either; ESN preferred.
    Either,
}

/// One IKE SA proposal.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct IkeProposal {
    pub aead: Aead,
    pub prf: Prf,
    pub dh: DhGroup,
}

/// One ESP (CHILD SA) proposal. With a DH group, every CHILD SA made or rekeyed by
/// CREATE_CHILD_SA runs a DH exchange of that group (perfect forward secrecy, as cloud VPN
/// gateways require); without one, its keys come from SK_d alone, as strongSwan's default ESP
/// proposals do. The first CHILD SA, made in IKE_AUTH, always takes its keys from the IKE SA.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct EspProposal {
    pub aead: Aead,
    pub dh: Option<DhGroup>,
    pub esn: EsnPolicy,
}

/// The IKE proposals braid offers when the configuration names none, most preferred first.
pub fn default_ike_proposals() -> Vec<IkeProposal> {
    [
        "aes256gcm16-prfsha256-x25519",
        "aes256gcm16-prfsha256-ecp256",
        "chacha20poly1305-prfsha256-x25519",
    ]
    .iter()
    .map(|s| s.parse().expect("built-in proposal parses"))
    .collect()
}

/// The ESP proposals braid offers when the configuration names none, most preferred first.
pub fn default_esp_proposals() -> Vec<EspProposal> {
    ["aes256gcm16-esn-noesn", "chacha20poly1305-esn-noesn"]
        .iter()
        .map(|s| s.parse().expect("built-in proposal parses"))
        .collect()
}

const AEAD_NAMES: [(&str, Aead); 2] = [
    ("aes256gcm16", Aead::AesGcm16_256),
    ("chacha20poly1305", Aead::ChaCha20Poly1305),
];
const PRF_NAMES: [(&str, Prf); 1] = [("prfsha256", Prf::HmacSha256)];
const DH_NAMES: [(&str, DhGroup); 3] = [
    ("x25519", DhGroup::Curve25519),
    ("curve25519", DhGroup::Curve25519),
    ("ecp256", DhGroup::P256),
];

fn name_of<T: PartialEq + Copy>(table: &[(&'static str, T)], value: T) -> &'static str {
    table.iter().find(|(_, v)| *v == value).map_or("?", |(n, _)| n)
}

fn supported<T>(table: &[(&str, T)]) -> String {
    table.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

impl fmt::Display for Aead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(name_of(&AEAD_NAMES, *self))
    }
}

impl fmt::Display for Prf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(name_of(&PRF_NAMES, *self))
    }
}

impl fmt::Display for DhGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(name_of(&DH_NAMES, *self))
    }
}

impl fmt::Display for IkeProposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.aead, self.prf, self.dh)
    }
}

impl fmt::Display for EspProposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.aead)?;
        if let Some(dh) = self.dh {
            write!(f, "-{dh}")?;
        }
        match self.esn {
            EsnPolicy::Off => Ok(()),
            EsnPolicy::On => write!(f, "-esn"),
            EsnPolicy::Either => write!(f, "-esn-noesn"),
        }
    }
}

/// Looks a token up in one algorithm table.
fn lookup<T: Copy>(table: &[(&str, T)], token: &str) -> Option<T> {
    table.iter().find(|(n, _)| *n == token).map(|(_, v)| *v)
}

impl FromStr for IkeProposal {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (mut aead, mut prf, mut dh) = (None, None, None);
        for token in text.trim().split('-') {
            if let Some(a) = lookup(&AEAD_NAMES, token) {
                set_once(&mut aead, a, token, text)?;
            } else if let Some(p) = lookup(&PRF_NAMES, token) {
                set_once(&mut prf, p, token, text)?;
            } else if let Some(d) = lookup(&DH_NAMES, token) {
                set_once(&mut dh, d, token, text)?;
            } else {
                return Err(format!(
                    "IKE proposal {text:?}: unknown algorithm {token:?} (supported: encryption {}; PRF {}; DH group {})",
                    supported(&AEAD_NAMES),
                    supported(&PRF_NAMES),
                    supported(&DH_NAMES)
                ));
            }
        }
        let missing = |what: &str, table: String| format!("IKE proposal {text:?}: no {what} (one of {table})");
        Ok(IkeProposal {
            aead: aead.ok_or_else(|| missing("encryption algorithm", supported(&AEAD_NAMES)))?,
            prf: prf.ok_or_else(|| missing("PRF", supported(&PRF_NAMES)))?,
            dh: dh.ok_or_else(|| missing("DH group", supported(&DH_NAMES)))?,
        })
    }
}

impl FromStr for EspProposal {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (mut aead, mut dh, mut esn_on, mut esn_off) = (None, None, false, false);
        for token in text.trim().split('-') {
            match token {
                "esn" => esn_on = true,
                "noesn" => esn_off = true,
                _ => match (lookup(&AEAD_NAMES, token), lookup(&DH_NAMES, token)) {
                    (Some(a), _) => set_once(&mut aead, a, token, text)?,
                    (None, Some(d)) => set_once(&mut dh, d, token, text)?,
                    (None, None) => {
                        return Err(format!(
                            "ESP proposal {text:?}: unknown algorithm {token:?} (supported: {}; optionally a DH group for perfect forward secrecy, one of {}; optionally -esn, -noesn or -esn-noesn)",
                            supported(&AEAD_NAMES),
                            supported(&DH_NAMES)
                        ))
                    }
                },
            }
        }
        let esn = match (esn_on, esn_off) {
            (true, true) => EsnPolicy::Either,
            (true, false) => EsnPolicy::On,
            (false, _) => EsnPolicy::Off,
        };
        Ok(EspProposal {
            aead: aead.ok_or_else(|| {
                format!(
                    "ESP proposal {text:?}: no encryption algorithm (one of {})",
                    supported(&AEAD_NAMES)
                )
            })?,
            dh,
            esn,
        })
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T, token: &str, text: &str) -> Result<(), String> {
    if slot.is_some() {
        return Err(format!(
            "proposal {text:?}: {token:?} repeats an algorithm of a kind already given (braid takes one of each kind per proposal; list several proposals instead)"
        ));
    }
    *slot = Some(value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ike_proposals_round_trip() {
        for text in ["aes256gcm16-prfsha256-x25519", "chacha20poly1305-prfsha256-ecp256"] {
            let p: IkeProposal = text.parse().unwrap();
            assert_eq!(p.to_string(), text);
        }
        let p: IkeProposal = "prfsha256-curve25519-aes256gcm16".parse().unwrap();
        assert_eq!(p.dh, DhGroup::Curve25519);
        assert_eq!(p.to_string(), "aes256gcm16-prfsha256-x25519");
    }

    #[test]
    fn esp_proposals_round_trip_with_esn_modes() {
        for (text, esn, shown) in [
            ("aes256gcm16", EsnPolicy::Off, "aes256gcm16"),
            ("aes256gcm16-noesn", EsnPolicy::Off, "aes256gcm16"),
            ("chacha20poly1305-esn", EsnPolicy::On, "chacha20poly1305-esn"),
            ("aes256gcm16-esn-noesn", EsnPolicy::Either, "aes256gcm16-esn-noesn"),
            (
                "aes256gcm16-ecp256-esn-noesn",
                EsnPolicy::Either,
                "aes256gcm16-ecp256-esn-noesn",
            ),
            ("chacha20poly1305-x25519", EsnPolicy::Off, "chacha20poly1305-x25519"),
        ] {
            let p: EspProposal = text.parse().unwrap();
            assert_eq!(p.esn, esn, "{text}");
            assert_eq!(p.to_string(), shown);
            assert_eq!(p.to_string().parse::<EspProposal>().unwrap(), p);
        }
        let pfs: EspProposal = "ecp256-aes256gcm16".parse().unwrap();
        assert_eq!(
            (pfs.dh, pfs.to_string().as_str()),
            (Some(DhGroup::P256), "aes256gcm16-ecp256")
        );
        assert_eq!("aes256gcm16".parse::<EspProposal>().unwrap().dh, None);
    }

    #[test]
    fn errors_name_the_token_and_what_is_supported() {
        let e = "aes128cbc-sha1-modp2048".parse::<IkeProposal>().unwrap_err();
        assert!(e.contains("\"aes128cbc\"") && e.contains("aes256gcm16"), "{e}");
        let e = "aes256gcm16-prfsha256".parse::<IkeProposal>().unwrap_err();
        assert!(e.contains("no DH group"), "{e}");
        let e = "aes256gcm16-modp1024".parse::<EspProposal>().unwrap_err();
        assert!(e.contains("\"modp1024\"") && e.contains("ecp256"), "{e}");
        let e = "aes256gcm16-x25519-ecp256".parse::<EspProposal>().unwrap_err();
        assert!(e.contains("repeats"), "{e}");
        let e = "aes256gcm16-chacha20poly1305-prfsha256-x25519"
            .parse::<IkeProposal>()
            .unwrap_err();
        assert!(e.contains("repeats"), "{e}");
        assert!("".parse::<EspProposal>().is_err());
    }

    #[test]
    fn defaults_parse() {
        assert_eq!(default_ike_proposals().len(), 3);
        assert_eq!(default_esp_proposals()[0].esn, EsnPolicy::Either);
    }
}
