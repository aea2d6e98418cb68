//! Request fields that several services read alike, and the page tokens
//! their list calls answer with.

/// A field a request may leave empty: `None` when it is, otherwise what
/// `parse` makes of it.
pub(super) fn optional<T, E>(
    given: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<Option<T>, E> {
    if given.is_empty() {
        Ok(None)
    } else {
        parse(given).map(Some)
    }
}

/// The token of the page after `page`: made from its last item by
/// `token_of` when there is `more`, empty otherwise.
pub(super) fn next_token<T>(more: bool, page: &[T], token_of: impl FnOnce(&T) -> String) -> String {
    if more {
        page.last().map(token_of).unwrap_or_default()
    } else {
        String::new()
    }
}
