//! The rule most resource names and ids follow: a length and a set of
//! characters, ASCII letters and digits with some punctuation. Each
//! service picks its own length, punctuation and error.

use crate::error::DomainError;

/// The suffix that makes a queue or topic a FIFO one.
pub const FIFO_SUFFIX: &str = ".fifo";

/// True when `name` is 1 to `max` bytes of ASCII letters, digits and the
/// characters of `punctuation`.
pub fn is_valid(name: &str, max: usize, punctuation: &str) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || punctuation.contains(c))
}

/// Checks a queue or topic name: at most `max` characters of `[A-Za-z0-9_-]`,
/// a FIFO one ending in [`FIFO_SUFFIX`]. The error for `field`, with the
/// service's error `code`, states `rule` and what broke it.
pub fn validate_fifo_name(
    code: &str,
    field: &str,
    name: &str,
    max: usize,
    rule: &str,
) -> Result<(), DomainError> {
    let base = name.strip_suffix(FIFO_SUFFIX).unwrap_or(name);
    if name.is_empty() || name.len() > max || base.is_empty() {
        return Err(DomainError::invalid_with_code(
            code,
            field,
            format!("{rule} (got {} characters)", name.chars().count()),
        ));
    }
    if let Some(bad) = base
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(DomainError::invalid_with_code(
            code,
            field,
            format!("{rule} (got {bad:?})"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_needs_one_to_max_allowed_characters() {
        assert!(is_valid("a-b_9", 5, "-_"));
        assert!(!is_valid("", 5, "-_"));
        assert!(!is_valid("abcdef", 5, "-_"));
        assert!(!is_valid("a.b", 5, "-_"));
        assert!(!is_valid("ü", 5, "-_"));
    }
}
