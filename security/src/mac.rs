//! Opaque tokens that the cluster hands out and takes back (receipt
//! handles, shard iterators): a prefix, the token's fields, and an
//! HMAC-SHA256 over both under a key derived from the cluster key, all in
//! hexadecimal. A token altered in any way, or made up, fails the check;
//! comparison runs in constant time.

use ring::hmac;

/// Bytes of the MAC at the end of a token.
pub const TAG_BYTES: usize = 32;
/// Most bytes of fields a token carries (longer text is refused unread).
pub const FIELDS_MAX: usize = 1024;

/// Keys that make and check one kind of token: the first makes new tokens,
/// every one is accepted (older cluster keys, while a key is rotated).
#[derive(Clone)]
pub struct TokenKeys {
    prefix: &'static str,
    keys: Vec<hmac::Key>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenKeys({}, {} keys)", self.prefix, self.keys.len())
    }
}

impl TokenKeys {
    /// Keys for tokens starting with `prefix`, from derived key material
    /// (the one in use first). Panics if `material` is empty.
    pub fn new(prefix: &'static str, material: &[[u8; 32]]) -> TokenKeys {
        assert!(!material.is_empty(), "at least one key");
        TokenKeys {
            prefix,
            keys: material
                .iter()
                .map(|m| hmac::Key::new(hmac::HMAC_SHA256, m))
                .collect(),
        }
    }

    fn signed_input(&self, fields: &[u8]) -> Vec<u8> {
        let mut input = Vec::with_capacity(self.prefix.len() + fields.len());
        input.extend_from_slice(self.prefix.as_bytes());
        input.extend_from_slice(fields);
        input
    }

    /// The token carrying `fields`.
    pub fn seal(&self, fields: &[u8]) -> String {
        let tag = hmac::sign(&self.keys[0], &self.signed_input(fields));
        let mut out = String::with_capacity(self.prefix.len() + 2 * (fields.len() + TAG_BYTES));
        out.push_str(self.prefix);
        out.push_str(&hex::encode(fields));
        out.push_str(&hex::encode(tag.as_ref()));
        out
    }

    /// The fields of a token made by [`TokenKeys::seal`] with one of these
    /// keys, if it is one; `None` for anything else.
    pub fn open(&self, token: &str) -> Option<Vec<u8>> {
        let hexed = token.strip_prefix(self.prefix)?;
        if hexed.len() < 2 * TAG_BYTES || hexed.len() > 2 * (TAG_BYTES + FIELDS_MAX) {
            return None;
        }
        let bytes = hex::decode(hexed).ok()?;
        let (fields, tag) = bytes.split_at(bytes.len() - TAG_BYTES);
        let input = self.signed_input(fields);
        self.keys
            .iter()
            .any(|k| hmac::verify(k, &input, tag).is_ok())
            .then(|| fields.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_any_change_is_refused() {
        let keys = TokenKeys::new("t1-", &[[7; 32]]);
        let token = keys.seal(b"0123456789");
        assert_eq!(keys.open(&token).unwrap(), b"0123456789");
        // Every single-character change of the hex is caught.
        for i in 3..token.len() {
            let mut t = token.clone().into_bytes();
            t[i] = if t[i] == b'0' { b'1' } else { b'0' };
            assert!(keys.open(std::str::from_utf8(&t).unwrap()).is_none());
        }
        assert!(keys.open(&token[..token.len() - 2]).is_none());
        assert!(
            keys.open(&format!("t1-{}", &token[5..])).is_none(),
            "a field byte cut"
        );
        assert!(keys.open("x1-00").is_none());
        assert!(keys.open(&format!("t1-{}", "0".repeat(4000))).is_none());
        // Another key, or another prefix under the same key, does not open it.
        assert!(TokenKeys::new("t1-", &[[8; 32]]).open(&token).is_none());
        let other = TokenKeys::new("t2-", &[[7; 32]]);
        let forged = format!("t2-{}", &token[3..]);
        assert!(other.open(&forged).is_none());
    }

    #[test]
    fn older_keys_still_open_tokens_while_the_new_one_makes_them() {
        let old = TokenKeys::new("t1-", &[[1; 32]]);
        let rotated = TokenKeys::new("t1-", &[[2; 32], [1; 32]]);
        let before = old.seal(b"abc");
        assert_eq!(rotated.open(&before).unwrap(), b"abc");
        let after = rotated.seal(b"abc");
        assert_ne!(before, after);
        assert!(old.open(&after).is_none());
    }
}
