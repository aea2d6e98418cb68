//! Access keys: an access key id and a secret, AWS style, and where a
//! client finds its own.

use std::path::Path;

use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};

/// Prefix of the access key ids Sluice makes (AWS's long-term keys start
/// with `AKIA`).
pub const KEY_ID_PREFIX: &str = "SLAK";
/// Environment variable with a client's access key id.
pub const ENV_KEY_ID: &str = "SLUICE_ACCESS_KEY_ID";
/// Environment variable with a client's secret access key.
pub const ENV_SECRET: &str = "SLUICE_SECRET_ACCESS_KEY";

/// An access key id and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The public half, sent with every request.
    pub access_key_id: String,
    /// The secret half, never sent.
    pub secret_access_key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .expect("the system's random number generator works");
    b
}

impl Credentials {
    /// A new random access key: an id of 20 characters starting with
    /// [`KEY_ID_PREFIX`], and a 40-character secret.
    pub fn generate() -> Credentials {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let id: String = random::<16>()
            .iter()
            .map(|b| ALPHABET[(*b & 31) as usize] as char)
            .collect();
        Credentials {
            access_key_id: format!("{KEY_ID_PREFIX}{id}"),
            secret_access_key: base64::engine::general_purpose::STANDARD.encode(random::<30>()),
        }
    }

    /// Checks both halves' form; the error names the field and the rule.
    pub fn validate(&self) -> Result<(), String> {
        validate_key_id(&self.access_key_id)?;
        let s = &self.secret_access_key;
        if s.len() < 16 || s.len() > 128 || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "secret_access_key: must be 16-128 printable ASCII characters without spaces"
                    .into(),
            );
        }
        Ok(())
    }

    /// The credentials in `SLUICE_ACCESS_KEY_ID` and
    /// `SLUICE_SECRET_ACCESS_KEY`, when both are set.
    pub fn from_env() -> Result<Option<Credentials>, String> {
        match (std::env::var(ENV_KEY_ID), std::env::var(ENV_SECRET)) {
            (Ok(id), Ok(secret)) => {
                let c = Credentials {
                    access_key_id: id.trim().to_string(),
                    secret_access_key: secret.trim().to_string(),
                };
                c.validate()
                    .map_err(|e| format!("{ENV_KEY_ID}/{ENV_SECRET}: {e}"))?;
                Ok(Some(c))
            }
            (Err(_), Err(_)) => Ok(None),
            _ => Err(format!(
                "{ENV_KEY_ID} and {ENV_SECRET}: set both or neither"
            )),
        }
    }

    /// Reads a credentials file: `access_key_id = ...` and
    /// `secret_access_key = ...` lines (the `aws_`-prefixed names of an AWS
    /// credentials file are taken too; `[section]` lines and `#` comments
    /// are skipped).
    pub fn from_file(path: &Path) -> Result<Credentials, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Credentials::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses the text of a credentials file (see [`Credentials::from_file`]).
    pub fn parse(text: &str) -> Result<Credentials, String> {
        let (mut id, mut secret) = (None, None);
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line.starts_with('[') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return Err(format!("lines must be NAME = VALUE, got {:?}", cut(line)));
            };
            let v = v.trim().trim_matches('"').to_string();
            match k.trim().trim_start_matches("aws_") {
                "access_key_id" => id = Some(v),
                "secret_access_key" => secret = Some(v),
                _ => {}
            }
        }
        let c = Credentials {
            access_key_id: id.ok_or("access_key_id is missing")?,
            secret_access_key: secret.ok_or("secret_access_key is missing")?,
        };
        c.validate()?;
        Ok(c)
    }

    /// The text of a credentials file for these credentials.
    pub fn to_file_text(&self) -> String {
        format!(
            "access_key_id = {}\nsecret_access_key = {}\n",
            self.access_key_id, self.secret_access_key
        )
    }

    /// The same as environment variable assignments (`NAME=value` lines,
    /// the variables [`Credentials::from_env`] reads): for an env file, or
    /// `kubectl create secret generic --from-env-file`.
    pub fn to_env_text(&self) -> String {
        format!(
            "{ENV_KEY_ID}={}\n{ENV_SECRET}={}\n",
            self.access_key_id, self.secret_access_key
        )
    }
}

fn cut(s: &str) -> String {
    s.chars().take(24).collect()
}

/// Prefix of the access key ids nodes sign their calls with (their secret
/// is derived from the cluster key, so only nodes can make them).
pub const NODE_KEY_PREFIX: &str = "SLUICENODE";

/// The access key id node `id` signs with.
pub fn node_key_id(id: u64) -> String {
    format!("{NODE_KEY_PREFIX}{id:06}")
}

/// The node id an access key id names, if it is a node's.
pub fn node_of_key(access_key_id: &str) -> Option<u64> {
    access_key_id
        .strip_prefix(NODE_KEY_PREFIX)?
        .parse()
        .ok()
        .filter(|id| *id > 0)
}

/// Checks an access key id's form: 16-128 characters of `[A-Za-z0-9_]`.
pub fn validate_key_id(id: &str) -> Result<(), String> {
    if id.len() < 16
        || id.len() > 128
        || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err("access_key_id: must be 16-128 characters of letters, digits and '_'".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_valid_and_distinct() {
        let a = Credentials::generate();
        let b = Credentials::generate();
        a.validate().unwrap();
        assert_eq!(a.access_key_id.len(), 20);
        assert!(a.access_key_id.starts_with(KEY_ID_PREFIX));
        assert_eq!(a.secret_access_key.len(), 40);
        assert_ne!(a, b);
        assert!(!format!("{a:?}").contains(&a.secret_access_key));
    }

    #[test]
    fn credential_files_parse_in_both_spellings() {
        let c = Credentials::generate();
        assert_eq!(Credentials::parse(&c.to_file_text()).unwrap(), c);
        let aws = format!(
            "[default]\n# mine\naws_access_key_id = {}\naws_secret_access_key = \"{}\"\nregion = x\n",
            c.access_key_id, c.secret_access_key
        );
        assert_eq!(Credentials::parse(&aws).unwrap(), c);
        assert!(Credentials::parse("access_key_id = SLAKAAAAAAAAAAAAAAAA\n")
            .unwrap_err()
            .contains("secret_access_key is missing"));
        assert!(Credentials::parse("garbage")
            .unwrap_err()
            .contains("NAME = VALUE"));
        assert!(
            Credentials::parse("access_key_id = x\nsecret_access_key = yyyyyyyyyyyyyyyyyy\n")
                .unwrap_err()
                .starts_with("access_key_id: must be 16-128")
        );
    }
}
