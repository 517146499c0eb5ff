//! Bearer tokens: new random ones, and the SHA-256 hash they are known by (only hashes are
//! stored).

use rand::RngCore;
use sha2::{Digest, Sha256};

/// SHA-256 of a token.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The stored form of a token: its SHA-256 in hex.
pub fn stored_hash(token: &str) -> String {
    hex::encode(hash_token(token))
}

/// A new random bearer token: `ty_` and 64 hex digits (256 bits).
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("ty_{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_long() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 3 + 64);
        assert_eq!(stored_hash(&a).len(), 64);
    }
}
