//! What may be shown of things that come from outside: a URL without what could hold a secret,
//! and server text cut and escaped so it cannot flood or forge log lines.
//!
//! Every error message and log field that quotes a URL or something a server sent goes through
//! here, so the rule is written once: [`url_label`] for URLs, [`shown`] for text.

use std::fmt;

use url::Url;

/// The most characters of server text (an error code, a description, a token type, a metadata
/// value) that an error message or log line shows.
pub(crate) const MAX_SHOWN_CHARS: usize = 200;

/// Scheme, host, port and path of a URL: never user info, query or fragment, which may hold
/// credentials.
pub(crate) fn url_label(url: &Url) -> String {
    let mut label = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        label.push(':');
        label.push_str(&port.to_string());
    }
    label.push_str(url.path());
    label
}

/// What may be shown of a string that did not parse as a URL: nothing after `?` or `#`, and no
/// user info.
pub(crate) fn unparsed_url_label(input: &str) -> String {
    let cut = input.trim().split(['?', '#']).next().unwrap_or("");
    let cut = match (cut.find("://"), cut.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}{}", &cut[..scheme_end + 3], &cut[at + 1..])
        }
        _ => cut.to_owned(),
    };
    shown(&cut).to_string()
}

/// Server text for a message: control characters and quotes escaped, then cut to at most
/// [`MAX_SHOWN_CHARS`] characters of what is shown (escapes count at their shown length, so
/// text of control characters cannot make a longer line). Formats without allocating.
pub(crate) fn shown(text: &str) -> Shown<'_> {
    Shown(text)
}

/// See [`shown`].
pub(crate) struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut left = MAX_SHOWN_CHARS;
        for c in self.0.chars() {
            let escaped = c.escape_debug();
            let Some(rest) = left.checked_sub(escaped.len()) else {
                break; // an escape is never cut in two
            };
            left = rest;
            fmt::Display::fmt(&escaped, f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_user_info_query_and_fragment() {
        let cases = [
            (
                "https://user:pw@auth.example.com:8443/oauth2/token?secret=x#f",
                "https://auth.example.com:8443/oauth2/token",
            ),
            ("http://127.0.0.1/t", "http://127.0.0.1/t"),
            ("https://[::1]:9000/", "https://[::1]:9000/"),
        ];
        for (input, expected) in cases {
            assert_eq!(url_label(&Url::parse(input).unwrap()), expected, "{input}");
        }
        let unparsed = [
            ("https://u:pw@host/x?q#f", "https://host/x"),
            ("not a url?secret", "not a url"),
            ("host/path#frag", "host/path"),
            // An `@` before the scheme's `://` is no user info: nothing is cut.
            ("ops@example/x://y", "ops@example/x://y"),
        ];
        for (input, expected) in unparsed {
            assert_eq!(unparsed_url_label(input), expected, "{input}");
        }
    }

    #[test]
    fn server_text_is_cut_and_escaped() {
        let long = format!("a\nb\"c{}", "x".repeat(1_000));
        let out = shown(&long).to_string();
        assert!(out.starts_with("a\\nb\\\"c"), "{out}");
        assert!(!out.contains('\n'));
        // `a`, `\n`, `b`, `\"`, `c`: 7 characters shown.
        assert_eq!(
            out.chars().filter(|&c| c == 'x').count(),
            MAX_SHOWN_CHARS - 7
        );
        assert_eq!(out.chars().count(), MAX_SHOWN_CHARS);
        // Escapes count at their shown length, and are not cut in two.
        let controls = shown(&"\u{1}".repeat(1_000)).to_string();
        assert_eq!(controls, "\\u{1}".repeat(MAX_SHOWN_CHARS / 5));
        let odd = shown(&format!("{}\u{1}", "y".repeat(MAX_SHOWN_CHARS - 2))).to_string();
        assert_eq!(odd, "y".repeat(MAX_SHOWN_CHARS - 2));
        // Characters, not bytes: 200 of a three-byte character.
        let wide = shown(&"\u{fffd}".repeat(1_000)).to_string();
        assert_eq!(wide.chars().count(), MAX_SHOWN_CHARS);
        assert_eq!(shown("").to_string(), "");
        assert_eq!(shown("invalid_token").to_string(), "invalid_token");
    }
}
