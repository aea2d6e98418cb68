//! Hash keys: how a record finds its shard.
//!
//! A partition key's MD5 digest, read as a big-endian 128-bit unsigned
//! integer, is its hash key (an explicit hash key can be given instead); the
//! record goes to the open shard whose range holds it. New streams split the
//! 128-bit space evenly: shard `i` of `n` starts at `floor(i * 2^128 / n)`.

use md5::{Digest, Md5};

use crate::error::DomainError;

/// The hash key of a partition key.
pub fn hash_key(partition_key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into())
}

/// `floor(i * 2^128 / n)`, for `i < n`.
fn boundary(i: u128, n: u128) -> u128 {
    if i == 0 {
        return 0;
    }
    // Here n >= 2, so 2^128 / n fits. 2^128 = n * q + r + 1 with
    // q = MAX / n, r = MAX % n.
    let (q, r) = (u128::MAX / n, u128::MAX % n);
    let whole = q + (r + 1) / n;
    let rest = (r + 1) % n;
    // i * 2^128 / n = i * whole + i * rest / n; i * rest < n * n fits easily
    // for the shard counts allowed (at most a few thousand).
    i * whole + (i * rest) / n
}

/// The ranges of `n` shards splitting the hash key space evenly.
pub fn uniform_ranges(n: u32) -> Vec<(u128, u128)> {
    let n128 = u128::from(n);
    (0..n128)
        .map(|i| {
            let start = boundary(i, n128);
            let end = if i + 1 == n128 {
                u128::MAX
            } else {
                boundary(i + 1, n128) - 1
            };
            (start, end)
        })
        .collect()
}

/// Parses a decimal 128-bit hash key.
pub fn parse(field: &str, s: &str) -> Result<u128, DomainError> {
    s.trim().parse::<u128>().map_err(|_| {
        super::invalid(
            field,
            format!("must be a decimal integer from 0 to 2^128-1, got {s:?}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_md5_vectors_land_in_the_documented_shards() {
        // Digests computed independently (Python hashlib), read big-endian.
        for (key, hash, shard_of_4) in [
            (
                "user-1",
                285_573_413_173_782_752_570_879_317_399_258_818_820u128,
                3,
            ),
            (
                "orders",
                24_949_005_185_884_340_550_514_182_707_680_296_583,
                0,
            ),
            ("a", 16_955_237_001_963_240_173_058_271_559_858_726_497, 0),
            (
                "partition-key-42",
                83_989_209_188_138_350_449_592_802_230_066_768_018,
                0,
            ),
        ] {
            assert_eq!(hash_key(key), hash, "{key}");
            let ranges = uniform_ranges(4);
            let shard = ranges
                .iter()
                .position(|(s, e)| (*s..=*e).contains(&hash))
                .unwrap();
            assert_eq!(shard, shard_of_4, "{key}");
        }
    }

    #[test]
    fn uniform_ranges_cover_the_space_without_gaps() {
        for n in [1u32, 2, 3, 4, 7, 16, 500] {
            let r = uniform_ranges(n);
            assert_eq!(r.len(), n as usize);
            assert_eq!(r[0].0, 0);
            assert_eq!(r.last().unwrap().1, u128::MAX);
            for w in r.windows(2) {
                assert_eq!(w[0].1 + 1, w[1].0, "n={n}");
            }
        }
        // As Kinesis prints them.
        assert_eq!(
            uniform_ranges(4)[1].0,
            85_070_591_730_234_615_865_843_651_857_942_052_864
        );
        assert_eq!(
            uniform_ranges(3)[1].0,
            113_427_455_640_312_821_154_458_202_477_256_070_485
        );
        assert_eq!(
            uniform_ranges(3)[2].0,
            226_854_911_280_625_642_308_916_404_954_512_140_970
        );
    }

    #[test]
    fn hash_keys_parse_as_decimal_u128() {
        assert_eq!(parse("k", "0").unwrap(), 0);
        assert_eq!(parse("k", &u128::MAX.to_string()).unwrap(), u128::MAX);
        assert!(parse("k", "340282366920938463463374607431768211456").is_err());
        assert!(parse("k", "-1").is_err());
        assert_eq!(
            parse("explicit_hash_key", "x")
                .unwrap_err()
                .field
                .as_deref(),
            Some("explicit_hash_key")
        );
    }
}
