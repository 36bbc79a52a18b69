//! Secrets both ends make and check: the endpoint's token, a session's id and secret, pii's
//! connection nonce, random names. One generator (the OS's random bytes, lowercase hex) and one
//! comparison (constant time, independent of the length of what was given).

use rand::RngCore;
use sha2::{Digest, Sha256};

/// `bytes` random bytes from the OS, as lowercase hex (twice as many characters).
pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex(&b)
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Whether `given` equals `expected`, in a time that depends on neither the content nor the
/// length of `given` (both are hashed first; the digests are compared whole).
pub fn matches(expected: &str, given: &[u8]) -> bool {
    let a = Sha256::digest(expected.as_bytes());
    let b = Sha256::digest(given);
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_and_compare() {
        let t = random_hex(32);
        assert_eq!(t.len(), 64);
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(t, random_hex(32));
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
        assert!(matches(&t, t.as_bytes()));
        assert!(!matches(&t, &t.as_bytes()[..63]));
        assert!(!matches(&t, b""));
        assert!(!matches(&t, format!("{t}0").as_bytes()));
    }
}
