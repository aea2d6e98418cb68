//! The cluster key: one secret shared by every node of a cluster, in the
//! way RabbitMQ nodes share an Erlang cookie.
//!
//! Nothing uses the key itself. Each use gets a key of its own, derived with
//! HKDF-SHA256 under a label ([`Purpose`]), so that a MAC of one kind can
//! never be passed off as another and a leaked derived key does not give
//! the others away:
//!
//! * node credentials: nodes sign their calls to each other with them;
//! * receipt handles and shard iterators carry a MAC under their own keys;
//! * access keys' secrets are sealed under their own key before they are
//!   replicated;
//! * a worker's `WorkerHost` is called with a token derived for it.
//!
//! A key file holds the key as 64 hexadecimal digits (32 bytes), written by
//! `sluice keygen` or `openssl rand -hex 32`. A file may hold more than one
//! key, one per line: the first is used, the others are still accepted when
//! checking MACs and opening sealed secrets, so a key can be rotated across
//! a running cluster (see `docs/security.md`).

use std::path::Path;

use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};

/// Bytes of a cluster key.
pub const KEY_BYTES: usize = 32;

/// What a derived key is for. The label is part of the derivation: keys for
/// two purposes never coincide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The secret of the node credential every node signs its calls with.
    NodeCredential,
    /// MACs of receipt handles.
    ReceiptMac,
    /// MACs of shard iterators.
    IteratorMac,
    /// Sealing access keys' secrets.
    Seal,
    /// Tokens that authorise a node to call a worker's `WorkerHost`.
    WorkerHost,
    /// Proof that a node holds the key, answering another node's challenge
    /// (a learner being added).
    Challenge,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::NodeCredential => b"sluice/v1/node-credential",
            Purpose::ReceiptMac => b"sluice/v1/receipt-mac",
            Purpose::IteratorMac => b"sluice/v1/iterator-mac",
            Purpose::Seal => b"sluice/v1/seal",
            Purpose::WorkerHost => b"sluice/v1/worker-host",
            Purpose::Challenge => b"sluice/v1/challenge",
        }
    }
}

/// Why a key could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read or written.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The file does not hold keys in the expected form.
    #[error("{path}: line {line}: {rule}")]
    Format {
        /// The file.
        path: String,
        /// The line, from 1.
        line: usize,
        /// What the line must be.
        rule: &'static str,
    },
}

/// One 32-byte key.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; KEY_BYTES]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself: its id is enough to tell keys apart.
        write!(f, "Key({})", self.id())
    }
}

impl Key {
    /// A fresh random key.
    pub fn generate() -> Key {
        let mut k = [0u8; KEY_BYTES];
        SystemRandom::new()
            .fill(&mut k)
            .expect("the system's random number generator works");
        Key(k)
    }

    /// The key as 64 hexadecimal digits, as a key file holds it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A short public name of the key (the first 8 hex digits of the SHA-256
    /// of its derivation for naming): tells keys apart in sealed data and
    /// logs without revealing them.
    pub fn id(&self) -> String {
        let d = ring::digest::digest(&ring::digest::SHA256, &self.derive_bytes(b"sluice/v1/id"));
        hex::encode(&d.as_ref()[..4])
    }

    fn derive_bytes(&self, label: &[u8]) -> [u8; 32] {
        struct Len32;
        impl hkdf::KeyType for Len32 {
            fn len(&self) -> usize {
                32
            }
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"sluice cluster key").extract(&self.0);
        let info = [label];
        let okm = prk
            .expand(&info, Len32)
            .expect("32 bytes is within HKDF-SHA256's output limit");
        let mut out = [0u8; 32];
        okm.fill(&mut out).expect("the length matches");
        out
    }

    /// The key derived from this one for `purpose`.
    pub fn derive(&self, purpose: Purpose) -> [u8; 32] {
        self.derive_bytes(purpose.label())
    }
}

/// The cluster's keys: the one in use, then older ones still accepted.
#[derive(Debug, Clone)]
pub struct ClusterKey {
    keys: Vec<Key>,
}

impl ClusterKey {
    /// Keys in order, the first in use; `None` when `keys` is empty.
    pub fn new(keys: Vec<Key>) -> Option<ClusterKey> {
        (!keys.is_empty()).then_some(ClusterKey { keys })
    }

    /// The key in use.
    pub fn current(&self) -> &Key {
        &self.keys[0]
    }

    /// Every key, the one in use first.
    pub fn all(&self) -> &[Key] {
        &self.keys
    }

    /// Parses a key file's text (`path` names it in errors): one key of 64
    /// hexadecimal digits per line; blank lines and `#` comments are
    /// skipped.
    pub fn parse(path: &str, text: &str) -> Result<ClusterKey, KeyError> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let rule =
                "must be a key of 64 hexadecimal digits (32 bytes; make one with `sluice keygen`)";
            let bytes = hex::decode(line).map_err(|_| KeyError::Format {
                path: path.into(),
                line: i + 1,
                rule,
            })?;
            let k: [u8; KEY_BYTES] = bytes.try_into().map_err(|_| KeyError::Format {
                path: path.into(),
                line: i + 1,
                rule,
            })?;
            keys.push(Key(k));
        }
        ClusterKey::new(keys).ok_or(KeyError::Format {
            path: path.into(),
            line: 1,
            rule: "the file holds no key; make one with `sluice keygen`",
        })
    }

    /// Reads a key file.
    pub fn load(path: &Path) -> Result<ClusterKey, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|e| KeyError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        ClusterKey::parse(&path.display().to_string(), &text)
    }

    /// Reads the key file at `path`, first writing a new key there (readable
    /// by its owner only) if there is none: a single node's own key.
    pub fn load_or_create(path: &Path) -> Result<(ClusterKey, bool), KeyError> {
        if path.exists() {
            return ClusterKey::load(path).map(|k| (k, false));
        }
        let io = |e: std::io::Error| KeyError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let key = Key::generate();
        let tmp = path.with_extension("tmp");
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io)?;
            writeln!(f, "{}", key.to_hex()).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)?;
        Ok((ClusterKey { keys: vec![key] }, true))
    }

    /// The key derived for `purpose` from the key in use.
    pub fn derive(&self, purpose: Purpose) -> [u8; 32] {
        self.current().derive(purpose)
    }

    /// The keys derived for `purpose` from every key, the one in use first.
    pub fn derive_all(&self, purpose: Purpose) -> Vec<[u8; 32]> {
        self.keys.iter().map(|k| k.derive(purpose)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_differ_by_purpose_and_by_key() {
        let a = Key::generate();
        let b = Key::generate();
        let purposes = [
            Purpose::NodeCredential,
            Purpose::ReceiptMac,
            Purpose::IteratorMac,
            Purpose::Seal,
            Purpose::WorkerHost,
            Purpose::Challenge,
        ];
        let mut seen = std::collections::HashSet::new();
        for p in purposes {
            assert!(seen.insert(a.derive(p)), "{p:?} collides");
            assert!(seen.insert(b.derive(p)), "{p:?} collides across keys");
            assert_eq!(a.derive(p), a.derive(p), "derivation is stable");
        }
        assert_ne!(a.id(), b.id());
        assert!(!format!("{a:?}").contains(&a.to_hex()));
    }

    #[test]
    fn key_files_parse_and_bad_ones_name_the_line() {
        let (k1, k2) = (Key::generate(), Key::generate());
        let text = format!("# rotated in\n{}\n\n{}\n", k1.to_hex(), k2.to_hex());
        let ck = ClusterKey::parse("f", &text).unwrap();
        assert_eq!(ck.all(), &[k1.clone(), k2]);
        assert_eq!(ck.current(), &k1);
        let err = ClusterKey::parse("f", "# x\nabc\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("f: line 2: must be a key of 64"), "{err}");
        let err = ClusterKey::parse("f", "\n# only comments\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds no key"), "{err}");
    }

    #[test]
    fn a_missing_key_file_is_created_private_and_then_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        let (first, created) = ClusterKey::load_or_create(&path).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, created) = ClusterKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(first.current(), again.current());
    }
}
