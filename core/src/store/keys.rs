//! Building ordered keys.
//!
//! A key is a namespace followed by components. Strings end with a `0x00`
//! byte (validated names never contain one), so that a name is never a prefix
//! of another name's key; integers are big-endian so byte order is numeric
//! order. A string prefix written with [`Key::raw`] instead of [`Key::str`]
//! matches every name that starts with it.

use std::ops::Bound;

/// An ordered key under construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key(Vec<u8>);

impl Key {
    /// Starts a key in namespace `space`.
    pub fn new(space: &str) -> Self {
        let mut k = Vec::with_capacity(space.len() + 32);
        k.extend_from_slice(space.as_bytes());
        k.push(b'/');
        Key(k)
    }

    /// Appends a string component.
    pub fn str(mut self, s: &str) -> Self {
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(0);
        self
    }

    /// Appends raw bytes with no terminator (for prefix scans).
    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }

    /// Appends an integer component, big-endian.
    pub fn u64(mut self, n: u64) -> Self {
        self.0.extend_from_slice(&n.to_be_bytes());
        self
    }

    /// The finished key.
    pub fn build(self) -> Vec<u8> {
        self.0
    }
}

/// The exclusive upper bound of all keys starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Bound<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bound::Excluded(end);
        }
    }
    Bound::Unbounded
}

/// Reads the string component that starts at `offset` of `key`, returning it
/// and the offset just past its terminator.
pub fn read_str(key: &[u8], offset: usize) -> Option<(&str, usize)> {
    let rest = key.get(offset..)?;
    let len = rest.iter().position(|&b| b == 0)?;
    let s = std::str::from_utf8(&rest[..len]).ok()?;
    Some((s, offset + len + 1))
}

/// Reads the big-endian integer component at `offset` of `key`.
pub fn read_u64(key: &[u8], offset: usize) -> Option<u64> {
    let bytes: [u8; 8] = key.get(offset..offset + 8)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// A key printed for humans: printable ASCII as is, other bytes escaped.
pub fn display(key: &[u8]) -> String {
    key.escape_ascii().to_string()
}

/// Names stored as `{space}/{name}` keys, in order after `after`, at most
/// `limit`; and whether more follow. Resources list themselves with it.
pub fn names_after(
    state: &dyn super::StateRead,
    space: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<(Vec<String>, bool), super::StoreError> {
    let prefix = Key::new(space).build();
    let after = after.map(|a| Key::new(space).str(a).build());
    super::page(state.scan_prefix_after(&prefix, after), limit, |(k, _)| {
        Ok(read_str(&k, prefix.len()).map(|(n, _)| n.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_components_do_not_prefix_each_other() {
        let a = Key::new("q").str("ab").build();
        let b = Key::new("q").str("abc").build();
        assert!(!b.starts_with(&a));
        assert!(a < b);
    }

    #[test]
    fn raw_prefix_matches_longer_names() {
        let prefix = Key::new("q").raw(b"ab").build();
        assert!(Key::new("q").str("abc").build().starts_with(&prefix));
        assert!(!Key::new("q").str("b").build().starts_with(&prefix));
    }

    #[test]
    fn integers_sort_numerically() {
        let small = Key::new("x").u64(255).build();
        let big = Key::new("x").u64(256).build();
        assert!(small < big);
        assert_eq!(read_u64(&big, 2), Some(256));
    }

    #[test]
    fn prefix_end_handles_trailing_ff() {
        assert_eq!(prefix_end(b"a\xff"), Bound::Excluded(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), Bound::Unbounded);
    }

    #[test]
    fn read_str_returns_component_and_next_offset() {
        let k = Key::new("q").str("name").u64(7).build();
        let (s, next) = read_str(&k, 2).unwrap();
        assert_eq!(s, "name");
        assert_eq!(read_u64(&k, next), Some(7));
    }
}
