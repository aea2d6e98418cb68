//! Sealed secrets: what the replicated state keeps of an access key's
//! secret. The secret is encrypted with ChaCha20-Poly1305 under a key
//! derived from the cluster key (which lives in a file on each node, never
//! in the state), with a random nonce and the access key id as associated
//! data, so a sealed secret cannot be moved to another key id. The log,
//! snapshots and the state store only ever hold the sealed form.
//!
//! Form: `s1.{cluster key id}.{base64(nonce ‖ ciphertext ‖ tag)}`.

use base64::Engine;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

use crate::key::{ClusterKey, Purpose};

const VERSION: &str = "s1";

/// Why a sealed secret could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// It is not in the sealed form.
    #[error("not a sealed secret")]
    Malformed,
    /// It was sealed under a cluster key this node does not have.
    #[error("sealed under cluster key {0}, which this node does not have")]
    UnknownKey(String),
    /// It was altered, or sealed for another access key id.
    #[error("the sealed secret does not open (altered, or sealed for another key)")]
    Damaged,
}

fn aead_key(material: [u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &material).expect("a 32-byte key"))
}

/// Seals `secret` for the access key `key_id` under the cluster key in use.
pub fn seal(cluster: &ClusterKey, key_id: &str, secret: &str) -> String {
    let key = aead_key(cluster.derive(Purpose::Seal));
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .expect("the system's random number generator works");
    let mut data = secret.as_bytes().to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(key_id.as_bytes()),
        &mut data,
    )
    .expect("a secret is far below the cipher's length limit");
    let mut blob = nonce.to_vec();
    blob.extend_from_slice(&data);
    format!(
        "{VERSION}.{}.{}",
        cluster.current().id(),
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(blob)
    )
}

/// Opens a secret sealed for `key_id` by [`seal`], with whichever of the
/// cluster's keys sealed it.
pub fn open(cluster: &ClusterKey, key_id: &str, sealed: &str) -> Result<String, SealError> {
    let mut parts = sealed.splitn(3, '.');
    let (Some(VERSION), Some(kid), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(SealError::Malformed);
    };
    let key = cluster
        .all()
        .iter()
        .find(|k| k.id() == kid)
        .ok_or_else(|| SealError::UnknownKey(kid.to_string()))?;
    let blob = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(b64)
        .map_err(|_| SealError::Malformed)?;
    if blob.len() < NONCE_LEN + aead::MAX_TAG_LEN {
        return Err(SealError::Malformed);
    }
    let (nonce, data) = blob.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Malformed)?;
    let mut data = data.to_vec();
    let plain = aead_key(key.derive(Purpose::Seal))
        .open_in_place(nonce, Aad::from(key_id.as_bytes()), &mut data)
        .map_err(|_| SealError::Damaged)?;
    String::from_utf8(plain.to_vec()).map_err(|_| SealError::Damaged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Key;

    #[test]
    fn sealed_secrets_open_only_for_their_key_id_and_cluster_key() {
        let ck = ClusterKey::new(vec![Key::generate()]).unwrap();
        let sealed = seal(&ck, "SLKEXAMPLE", "s3cr3t");
        assert!(!sealed.contains("s3cr3t"));
        assert_eq!(open(&ck, "SLKEXAMPLE", &sealed).unwrap(), "s3cr3t");
        assert_ne!(sealed, seal(&ck, "SLKEXAMPLE", "s3cr3t"), "fresh nonce");
        assert_eq!(open(&ck, "SLKOTHER", &sealed), Err(SealError::Damaged));
        let other = ClusterKey::new(vec![Key::generate()]).unwrap();
        assert!(matches!(
            open(&other, "SLKEXAMPLE", &sealed),
            Err(SealError::UnknownKey(_))
        ));
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        assert!(open(&ck, "SLKEXAMPLE", std::str::from_utf8(&altered).unwrap()).is_err());
        assert_eq!(open(&ck, "SLKEXAMPLE", "plain"), Err(SealError::Malformed));
    }

    #[test]
    fn a_rotated_cluster_key_still_opens_what_the_old_one_sealed() {
        let old = Key::generate();
        let before = seal(&ClusterKey::new(vec![old.clone()]).unwrap(), "K", "v");
        let rotated = ClusterKey::new(vec![Key::generate(), old]).unwrap();
        assert_eq!(open(&rotated, "K", &before).unwrap(), "v");
    }
}
