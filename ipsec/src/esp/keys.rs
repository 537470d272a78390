//! One direction's ESP key material.
//!
//! Design: [`EspKeys`] is the 36 bytes IKE hands over, validated once, and nothing else: an SA
//! consumes it in `new`, expands the AEAD key, keeps the salt, and the raw bytes are wiped when
//! the `EspKeys` drops. It is neither `Clone` nor printable, so key bytes do not travel.

use std::fmt;

use ring::aead::{LessSafeKey, UnboundKey};

use super::{EspCipher, EspError};

/// Keys for one direction: a 32-byte key then a 4-byte salt, exactly as taken from IKE KEYMAT
/// (RFC 7296 §2.17, RFC 4106 §8.1, RFC 7634 §2). Wiped on drop; `Debug` shows only the cipher.
pub struct EspKeys {
    cipher: EspCipher,
    key: [u8; EspCipher::KEY_LEN],
    salt: [u8; EspCipher::SALT_LEN],
}

impl EspKeys {
    /// Splits one direction's KEYMAT into key and salt. It must be exactly
    /// [`EspCipher::keymat_len`] bytes, else [`EspError::BadKeyLength`].
    pub fn from_keymat(cipher: EspCipher, keymat: &[u8]) -> Result<Self, EspError> {
        if keymat.len() != cipher.keymat_len() {
            return Err(EspError::BadKeyLength);
        }
        let (key, salt) = keymat
            .split_first_chunk::<{ EspCipher::KEY_LEN }>()
            .ok_or(EspError::BadKeyLength)?;
        let salt = salt
            .first_chunk::<{ EspCipher::SALT_LEN }>()
            .ok_or(EspError::BadKeyLength)?;
        Ok(Self {
            cipher,
            key: *key,
            salt: *salt,
        })
    }

    /// The cipher this key material was split for.
    pub fn cipher(&self) -> EspCipher {
        self.cipher
    }

    /// The expanded AEAD key for `cipher` (an SA's, which wins if it differs from ours: the
    /// split is the same for both) and the salt.
    pub(super) fn expand(&self, cipher: EspCipher) -> (LessSafeKey, [u8; EspCipher::SALT_LEN]) {
        // Both algorithms take exactly KEY_LEN key bytes, the one thing `UnboundKey::new`
        // checks, and `self.key` is that long by type: this cannot fail (tested for both).
        let key = UnboundKey::new(cipher.algorithm(), &self.key).expect("ESP AEAD keys are 32 bytes");
        (LessSafeKey::new(key), self.salt)
    }
}

impl Drop for EspKeys {
    fn drop(&mut self) {
        self.key.fill(0);
        self.salt.fill(0);
        // Best effort without `unsafe` volatile writes: make the zeroes observable so the
        // stores are not elided as dead.
        std::hint::black_box(&mut self.key);
        std::hint::black_box(&mut self.salt);
    }
}

impl fmt::Debug for EspKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EspKeys")
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_key_then_salt() {
        let keymat: Vec<u8> = (0u8..36).collect();
        for cipher in [EspCipher::AesGcm256, EspCipher::ChaCha20Poly1305] {
            assert_eq!(cipher.keymat_len(), 36);
            let keys = EspKeys::from_keymat(cipher, &keymat).unwrap();
            assert_eq!(keys.cipher(), cipher);
            assert_eq!(keys.key[..], keymat[..32]);
            assert_eq!(keys.salt, [32, 33, 34, 35]);
            // Expanding cannot fail for either algorithm.
            let (key, salt) = keys.expand(cipher);
            assert_eq!(key.algorithm(), cipher.algorithm());
            assert_eq!(salt, [32, 33, 34, 35]);
        }
    }

    #[test]
    fn wrong_lengths_are_refused() {
        for len in [0, 4, 32, 35, 37, 64] {
            let keymat = vec![7u8; len];
            assert_eq!(
                EspKeys::from_keymat(EspCipher::AesGcm256, &keymat).unwrap_err(),
                EspError::BadKeyLength
            );
            assert_eq!(
                EspKeys::from_keymat(EspCipher::ChaCha20Poly1305, &keymat).unwrap_err(),
                EspError::BadKeyLength
            );
        }
    }

    #[test]
    fn debug_is_redacted() {
        let keys = EspKeys::from_keymat(EspCipher::ChaCha20Poly1305, &[0xab; 36]).unwrap();
        let shown = format!("{keys:?}");
        assert_eq!(shown, "EspKeys { cipher: ChaCha20Poly1305, .. }");
        assert!(!shown.contains("171") && !shown.contains("ab"));
    }
}
