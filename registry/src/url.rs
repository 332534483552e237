//! The little URL handling the registry protocol needs: escaping query values, adding query
//! parameters to a `Location` the registry handed out, and resolving a relative `Location`.

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub(crate) fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `url` with `key=value` added to its query.
pub(crate) fn with_query(url: &str, key: &str, value: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{key}={}", query_escape(value))
}

/// A `Location` header resolved against the origin (`scheme://host[:port]`) of the request
/// that returned it: absolute URLs are kept, `/path` is joined to the origin.
pub(crate) fn resolve_location(origin: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_owned()
    } else if location.starts_with('/') {
        format!("{origin}{location}")
    } else {
        format!("{origin}/{location}")
    }
}

/// The `scheme://host[:port]` part of an absolute URL.
pub(crate) fn origin_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_table() {
        assert_eq!(query_escape("sha256:ab"), "sha256%3Aab");
        assert_eq!(query_escape("a/b c"), "a%2Fb%20c");
        assert_eq!(
            with_query(
                "http://h/v2/x/blobs/uploads/u?_state=s",
                "digest",
                "sha256:1"
            ),
            "http://h/v2/x/blobs/uploads/u?_state=s&digest=sha256%3A1"
        );
        assert_eq!(with_query("http://h/p", "a", "b"), "http://h/p?a=b");
        assert_eq!(
            resolve_location("http://h:5000", "/v2/x/blobs/uploads/u"),
            "http://h:5000/v2/x/blobs/uploads/u"
        );
        assert_eq!(
            resolve_location("http://h:5000", "https://other/x"),
            "https://other/x"
        );
        assert_eq!(origin_of("https://h:1/v2/x?y"), "https://h:1");
        assert_eq!(origin_of("https://h"), "https://h");
    }
}
