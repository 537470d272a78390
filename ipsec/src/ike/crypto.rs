//! IKEv2's key schedule and message protection (RFC 7296 §2.13–2.17, §2.15, §2.23; RFC 5282).
//!
//! Design: plain functions over byte slices, each one step of the RFC, so the exchanges in
//! [`super::sa`] read like the RFC's equations. Only PRF_HMAC_SHA2_256 and AEAD ciphers exist
//! here ([`crate::proposal`]), so there is no integrity key: the SK payload is sealed with the
//! AEAD alone, its IV an 8-byte message counter (never reused under one key), its nonce
//! `salt ‖ IV`, its additional data the IKE header and the SK payload's generic header.
//!
//! Secret material lives in [`Secret`], which is wiped when dropped and never printed.

use std::fmt;
use std::net::SocketAddr;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey};
use ring::digest;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::proposal::{Aead, DhGroup};

/// Output length of PRF_HMAC_SHA2_256, and so of SK_d, SK_pi and SK_pr.
pub const PRF_LEN: usize = 32;
/// AEAD key and salt taken from the key stream for one direction (RFC 5282 §7.1, RFC 7634 §3).
pub const AEAD_KEY_LEN: usize = 32;
pub const AEAD_SALT_LEN: usize = 4;
/// The SK payload's explicit IV and ICV.
pub const SK_IV_LEN: usize = 8;
pub const SK_ICV_LEN: usize = 16;
/// The pad RFC 7296 §2.15 puts in front of a pre-shared key.
const KEY_PAD: &[u8] = b"Key Pad for IKEv2";

/// Bytes that must not outlive their use: wiped on drop, never printed.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.fill(0);
        std::hint::black_box(&self.0);
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} secret bytes>", self.0.len())
    }
}

/// Why a cryptographic step failed. None of these carries secret material.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("the system random number generator failed")]
    Random,
    #[error("the peer's key exchange value is not a valid public key for the group")]
    BadPublicValue,
    #[error("the SK payload did not decrypt (wrong keys or a tampered message)")]
    Decrypt,
    #[error("the SK payload is malformed")]
    Malformed,
}

/// Fills `buf` from the system's secure random number generator.
pub fn random_fill(buf: &mut [u8]) -> Result<(), CryptoError> {
    SystemRandom::new().fill(buf).map_err(|_| CryptoError::Random)
}

/// A fresh random value of `len` bytes.
pub fn random_bytes(len: usize) -> Result<Vec<u8>, CryptoError> {
    let mut v = vec![0; len];
    random_fill(&mut v)?;
    Ok(v)
}

/// A random non-zero 64-bit IKE SPI.
pub fn random_ike_spi() -> Result<u64, CryptoError> {
    loop {
        let mut b = [0u8; 8];
        random_fill(&mut b)?;
        let spi = u64::from_be_bytes(b);
        if spi != 0 {
            return Ok(spi);
        }
    }
}

/// A random ESP SPI outside the range 1..=255 that RFC 4303 §2.1 reserves.
pub fn random_esp_spi() -> Result<u32, CryptoError> {
    loop {
        let mut b = [0u8; 4];
        random_fill(&mut b)?;
        let spi = u32::from_be_bytes(b);
        if spi > 255 {
            return Ok(spi);
        }
    }
}

/// prf(key, data) with HMAC-SHA2-256 over the concatenation of `data`.
pub fn prf(key: &[u8], data: &[&[u8]]) -> [u8; PRF_LEN] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    for part in data {
        ctx.update(part);
    }
    let mut out = [0; PRF_LEN];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// prf+(key, seed) truncated to `len` bytes (RFC 7296 §2.13): T1 = prf(K, S | 0x01),
/// Tn = prf(K, Tn-1 | S | n).
pub fn prf_plus(key: &[u8], seed: &[&[u8]], len: usize) -> Secret {
    let mut out = Vec::with_capacity(len + PRF_LEN);
    let mut previous: Option<[u8; PRF_LEN]> = None;
    let mut counter = 1u8;
    while out.len() < len {
        let mut parts: Vec<&[u8]> = Vec::with_capacity(seed.len() + 2);
        if let Some(p) = &previous {
            parts.push(p);
        }
        parts.extend_from_slice(seed);
        let n = [counter];
        parts.push(&n);
        let block = prf(key, &parts);
        out.extend_from_slice(&block);
        previous = Some(block);
        counter = counter.wrapping_add(1);
    }
    out.truncate(len);
    Secret::new(out)
}

/// One side's Diffie-Hellman exchange: the private value (used once) and the public value to
/// put in the KE payload.
pub struct DhExchange {
    group: DhGroup,
    private: EphemeralPrivateKey,
    public: Vec<u8>,
}

impl fmt::Debug for DhExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DhExchange")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

fn ring_algorithm(group: DhGroup) -> &'static agreement::Algorithm {
    match group {
        DhGroup::Curve25519 => &agreement::X25519,
        DhGroup::P256 => &agreement::ECDH_P256,
    }
}

/// The IANA number of a DH group (RFC 7296 §3.3.2).
pub fn dh_group_number(group: DhGroup) -> u16 {
    match group {
        DhGroup::Curve25519 => 31,
        DhGroup::P256 => 19,
    }
}

/// The group with IANA number `n`, if braid supports it.
pub fn dh_group_from_number(n: u16) -> Option<DhGroup> {
    match n {
        31 => Some(DhGroup::Curve25519),
        19 => Some(DhGroup::P256),
        _ => None,
    }
}

impl DhExchange {
    /// A fresh private value for `group`.
    pub fn new(group: DhGroup) -> Result<Self, CryptoError> {
        let rng = SystemRandom::new();
        let private = EphemeralPrivateKey::generate(ring_algorithm(group), &rng).map_err(|_| CryptoError::Random)?;
        let public = private.compute_public_key().map_err(|_| CryptoError::Random)?;
        let public = match group {
            DhGroup::Curve25519 => public.as_ref().to_vec(),
            // RFC 5903 §7: x ‖ y, without the 0x04 point-format byte ring adds.
            DhGroup::P256 => public.as_ref()[1..].to_vec(),
        };
        Ok(DhExchange { group, private, public })
    }

    pub fn group(&self) -> DhGroup {
        self.group
    }

    /// The KE payload's key exchange data.
    pub fn public_value(&self) -> &[u8] {
        &self.public
    }

    /// g^ir from the peer's public value: the X25519 output (RFC 8031), or the P-256 x
    /// coordinate (RFC 5903 §7). Refuses values that are not points of the group.
    pub fn agree(self, peer: &[u8]) -> Result<Secret, CryptoError> {
        let expected = match self.group {
            DhGroup::Curve25519 => 32,
            DhGroup::P256 => 64,
        };
        if peer.len() != expected {
            return Err(CryptoError::BadPublicValue);
        }
        let mut encoded = Vec::with_capacity(65);
        if self.group == DhGroup::P256 {
            encoded.push(0x04);
        }
        encoded.extend_from_slice(peer);
        let peer = UnparsedPublicKey::new(ring_algorithm(self.group), &encoded);
        agreement::agree_ephemeral(self.private, &peer, |shared| Secret::new(shared.to_vec()))
            .map_err(|_| CryptoError::BadPublicValue)
    }
}

/// The keys of one IKE SA (RFC 7296 §2.14), for an AEAD proposal.
#[derive(Debug)]
pub struct IkeKeys {
    pub sk_d: Secret,
    /// SK_ei and SK_er: key ‖ salt.
    pub sk_ei: Secret,
    pub sk_er: Secret,
    pub sk_pi: Secret,
    pub sk_pr: Secret,
}

impl IkeKeys {
    /// Derives every key from SKEYSEED (RFC 7296 §2.14, no SK_a with an AEAD).
    pub fn derive(skeyseed: &[u8], nonce_i: &[u8], nonce_r: &[u8], spi_i: u64, spi_r: u64) -> IkeKeys {
        let enc = AEAD_KEY_LEN + AEAD_SALT_LEN;
        let stream = prf_plus(
            skeyseed,
            &[nonce_i, nonce_r, &spi_i.to_be_bytes(), &spi_r.to_be_bytes()],
            PRF_LEN + 2 * enc + 2 * PRF_LEN,
        );
        let b = stream.as_bytes();
        let take = |from: usize, len: usize| Secret::new(b[from..from + len].to_vec());
        IkeKeys {
            sk_d: take(0, PRF_LEN),
            sk_ei: take(PRF_LEN, enc),
            sk_er: take(PRF_LEN + enc, enc),
            sk_pi: take(PRF_LEN + 2 * enc, PRF_LEN),
            sk_pr: take(2 * PRF_LEN + 2 * enc, PRF_LEN),
        }
    }

    /// Keys of a new IKE SA from IKE_SA_INIT: SKEYSEED = prf(Ni | Nr, g^ir).
    pub fn initial(shared: &Secret, nonce_i: &[u8], nonce_r: &[u8], spi_i: u64, spi_r: u64) -> IkeKeys {
        let skeyseed = Secret::new(prf(&[nonce_i, nonce_r].concat(), &[shared.as_bytes()]).to_vec());
        Self::derive(skeyseed.as_bytes(), nonce_i, nonce_r, spi_i, spi_r)
    }

    /// Keys of the IKE SA that replaces this one (RFC 7296 §2.18):
    /// SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr).
    pub fn rekeyed(&self, shared: &Secret, nonce_i: &[u8], nonce_r: &[u8], spi_i: u64, spi_r: u64) -> IkeKeys {
        let skeyseed = Secret::new(prf(self.sk_d.as_bytes(), &[shared.as_bytes(), nonce_i, nonce_r]).to_vec());
        Self::derive(skeyseed.as_bytes(), nonce_i, nonce_r, spi_i, spi_r)
    }

    /// CHILD SA key material (RFC 7296 §2.17): KEYMAT = prf+(SK_d, [g^ir |] Ni | Nr), the
    /// initiator-to-responder key first. `len` is both directions together.
    pub fn child_keymat(&self, shared: Option<&Secret>, nonce_i: &[u8], nonce_r: &[u8], len: usize) -> Secret {
        match shared {
            Some(s) => prf_plus(self.sk_d.as_bytes(), &[s.as_bytes(), nonce_i, nonce_r], len),
            None => prf_plus(self.sk_d.as_bytes(), &[nonce_i, nonce_r], len),
        }
    }
}

/// The AUTH payload data for a pre-shared key (RFC 7296 §2.15):
/// prf(prf(PSK, "Key Pad for IKEv2"), message | nonce of the other side | prf(SK_p, ID body)).
pub fn psk_auth(psk: &[u8], init_message: &[u8], peer_nonce: &[u8], sk_p: &[u8], id_body: &[u8]) -> [u8; PRF_LEN] {
    let key = prf(psk, &[KEY_PAD]);
    let mac_id = prf(sk_p, &[id_body]);
    prf(&key, &[init_message, peer_nonce, &mac_id])
}

/// Whether `auth` is the AUTH payload data the pre-shared key gives (see [`psk_auth`]),
/// compared in constant time.
pub fn psk_auth_verify(
    psk: &[u8],
    init_message: &[u8],
    peer_nonce: &[u8],
    sk_p: &[u8],
    id_body: &[u8],
    auth: &[u8],
) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, &prf(psk, &[KEY_PAD]));
    let mac_id = prf(sk_p, &[id_body]);
    hmac::verify(&key, &[init_message, peer_nonce, &mac_id].concat(), auth).is_ok()
}

/// A NAT_DETECTION hash (RFC 7296 §2.23): SHA-1(SPIi | SPIr | IP | port).
pub fn nat_detection_hash(spi_i: u64, spi_r: u64, addr: SocketAddr) -> Vec<u8> {
    let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(&spi_i.to_be_bytes());
    ctx.update(&spi_r.to_be_bytes());
    match addr.ip() {
        std::net::IpAddr::V4(ip) => ctx.update(&ip.octets()),
        std::net::IpAddr::V6(ip) => ctx.update(&ip.octets()),
    }
    ctx.update(&addr.port().to_be_bytes());
    ctx.finish().as_ref().to_vec()
}

/// One direction of SK payload protection: an AEAD key, its salt, and (for sealing) the IV
/// counter.
pub struct SkCipher {
    key: LessSafeKey,
    salt: [u8; AEAD_SALT_LEN],
    next_iv: u64,
}

impl fmt::Debug for SkCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SkCipher")
            .field("next_iv", &self.next_iv)
            .finish_non_exhaustive()
    }
}

impl SkCipher {
    /// From SK_e (key ‖ salt).
    pub fn new(aead: Aead, sk_e: &Secret) -> SkCipher {
        let algorithm = match aead {
            Aead::AesGcm16_256 => &aead::AES_256_GCM,
            Aead::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        };
        let bytes = sk_e.as_bytes();
        let key = UnboundKey::new(algorithm, &bytes[..AEAD_KEY_LEN]).expect("32-byte key fits both AEADs");
        let mut salt = [0; AEAD_SALT_LEN];
        salt.copy_from_slice(&bytes[AEAD_KEY_LEN..AEAD_KEY_LEN + AEAD_SALT_LEN]);
        SkCipher {
            key: LessSafeKey::new(key),
            salt,
            next_iv: 1,
        }
    }

    fn nonce(&self, iv: &[u8]) -> Nonce {
        let mut n = [0u8; 12];
        n[..AEAD_SALT_LEN].copy_from_slice(&self.salt);
        n[AEAD_SALT_LEN..].copy_from_slice(iv);
        Nonce::assume_unique_for_key(n)
    }

    /// Appends IV ‖ ciphertext ‖ ICV of `plaintext` (inner payloads, already padded) to
    /// `message`, whose bytes so far (IKE header and SK generic header, lengths final) are the
    /// additional data.
    pub fn seal(&mut self, message: &mut Vec<u8>, plaintext: &[u8]) {
        let iv = self.next_iv.to_be_bytes();
        self.next_iv += 1;
        let nonce = self.nonce(&iv);
        let aad_len = message.len();
        message.extend_from_slice(&iv);
        let start = message.len();
        message.extend_from_slice(plaintext);
        let (aad, rest) = message.split_at_mut(aad_len);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(&*aad), &mut rest[SK_IV_LEN..])
            .expect("IKE messages are far below the AEAD's length limit");
        debug_assert_eq!(start, aad_len + SK_IV_LEN);
        message.extend_from_slice(tag.as_ref());
    }

    /// Opens the SK payload of `message` whose IV starts at `body_offset`; everything before
    /// it is the additional data. Returns the inner payloads without padding.
    pub fn open(&self, message: &[u8], body_offset: usize) -> Result<Vec<u8>, CryptoError> {
        if message.len() < body_offset + SK_IV_LEN + SK_ICV_LEN + 1 {
            return Err(CryptoError::Malformed);
        }
        let (aad, body) = message.split_at(body_offset);
        let nonce = self.nonce(&body[..SK_IV_LEN]);
        let mut buf = body[SK_IV_LEN..].to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| CryptoError::Decrypt)?;
        let pad_len = usize::from(*plain.last().ok_or(CryptoError::Malformed)?);
        let len = plain.len().checked_sub(1 + pad_len).ok_or(CryptoError::Malformed)?;
        Ok(plain[..len].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prf_plus_matches_its_definition() {
        let key = b"key";
        let seed = b"seed";
        let t1 = prf(key, &[seed, &[1]]);
        let t2 = prf(key, &[&t1, seed, &[2]]);
        let out = prf_plus(key, &[seed], 40);
        assert_eq!(&out.as_bytes()[..32], &t1);
        assert_eq!(&out.as_bytes()[32..], &t2[..8]);
    }

    #[test]
    fn hmac_sha256_known_answer() {
        // RFC 4231 test case 2.
        let mac = prf(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            mac[..8],
            [0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e],
            "HMAC-SHA-256 of RFC 4231 case 2"
        );
    }

    #[test]
    fn both_groups_agree_on_the_same_secret() {
        for group in [DhGroup::Curve25519, DhGroup::P256] {
            let a = DhExchange::new(group).unwrap();
            let b = DhExchange::new(group).unwrap();
            let (pa, pb) = (a.public_value().to_vec(), b.public_value().to_vec());
            assert_eq!(pa.len(), if group == DhGroup::P256 { 64 } else { 32 });
            let sa = a.agree(&pb).unwrap();
            let sb = b.agree(&pa).unwrap();
            assert_eq!(sa, sb);
            assert_eq!(sa.as_bytes().len(), 32);
        }
    }

    #[test]
    fn invalid_public_values_are_refused() {
        let a = DhExchange::new(DhGroup::Curve25519).unwrap();
        assert_eq!(a.agree(&[0; 32]).unwrap_err(), CryptoError::BadPublicValue);
        let a = DhExchange::new(DhGroup::P256).unwrap();
        assert_eq!(a.agree(&[7; 64]).unwrap_err(), CryptoError::BadPublicValue);
        let a = DhExchange::new(DhGroup::Curve25519).unwrap();
        assert_eq!(a.agree(&[1; 31]).unwrap_err(), CryptoError::BadPublicValue);
    }

    #[test]
    fn sk_payload_round_trips_and_rejects_tampering() {
        for aead in [Aead::AesGcm16_256, Aead::ChaCha20Poly1305] {
            let sk_e = Secret::new((0..36).collect());
            let mut sealer = SkCipher::new(aead, &sk_e);
            let opener = SkCipher::new(aead, &sk_e);
            let mut msg = vec![0xaa; 32];
            sealer.seal(&mut msg, b"payloads\x02\x02\x02");
            assert_eq!(opener.open(&msg, 32).unwrap(), b"payloads");
            for i in 0..msg.len() {
                let mut bad = msg.clone();
                bad[i] ^= 1;
                assert!(opener.open(&bad, 32).is_err(), "byte {i} flipped");
            }
            let mut second = vec![0xaa; 32];
            sealer.seal(&mut second, b"payloads\x02\x02\x02");
            assert_ne!(msg[32..40], second[32..40], "IVs are never reused");
        }
    }

    #[test]
    fn psk_auth_verifies_only_the_right_key_and_octets() {
        let auth = psk_auth(b"key", b"init", b"nonce", b"skp", b"id");
        assert!(psk_auth_verify(b"key", b"init", b"nonce", b"skp", b"id", &auth));
        assert!(!psk_auth_verify(b"kez", b"init", b"nonce", b"skp", b"id", &auth));
        assert!(!psk_auth_verify(b"key", b"init", b"nonce", b"skp", b"ie", &auth));
        assert!(!psk_auth_verify(b"key", b"init", b"nonce", b"skp", b"id", &auth[..31]));
    }

    #[test]
    fn nat_detection_hash_covers_every_field() {
        let addr: SocketAddr = "198.18.0.1:4500".parse().unwrap();
        let base = nat_detection_hash(1, 2, addr);
        assert_eq!(base.len(), 20);
        assert_ne!(base, nat_detection_hash(1, 3, addr));
        assert_ne!(base, nat_detection_hash(1, 2, "198.18.0.1:500".parse().unwrap()));
        assert_ne!(base, nat_detection_hash(1, 2, "198.18.0.2:4500".parse().unwrap()));
    }
}
