//! Reading an API's rejection: RFC 6750 §3 `WWW-Authenticate` challenges and JSON error bodies.
//!
//! The adapters use [`classify`] to decide whether a `401` means "this token is no good" (drop
//! it, fetch one new token, send the request again once) or something a new token cannot fix.
//! It is public so code that is not a middleware (a websocket client, say) can apply the same
//! rule.
//!
//! # Example
//!
//! ```
//! use client_credentials::challenge::{classify, Rejection};
//! use http::{HeaderMap, HeaderValue, StatusCode};
//!
//! let mut headers = HeaderMap::new();
//! headers.insert(
//!     http::header::WWW_AUTHENTICATE,
//!     HeaderValue::from_static(r#"Basic realm="x", Bearer error="invalid_token""#),
//! );
//! assert_eq!(classify(StatusCode::UNAUTHORIZED, &headers, None), Rejection::InvalidToken);
//! assert_eq!(
//!     classify(StatusCode::UNAUTHORIZED, &HeaderMap::new(), Some(br#"{"error":"missing_bearer_token"}"#)),
//!     Rejection::Other("missing_bearer_token".into()),
//! );
//! ```

use http::{HeaderMap, StatusCode};

/// What an API's answer says about the token it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// Not a rejection of the token: any status other than 401, or a 401 handled elsewhere.
    NotRejected,
    /// 401 with `error="invalid_token"` (header) or `{"error":"invalid_token"}` (body): the
    /// token is expired, revoked or malformed. A new token may succeed.
    InvalidToken,
    /// 401 with no error code anywhere, as AWS API Gateway answers (`{"message":"Unauthorized"}`).
    /// A new token may succeed; the adapters replay the request unless told not to.
    NoErrorCode,
    /// 401 or 403 with another code (`insufficient_scope`, `missing_bearer_token`,
    /// `invalid_request`, ...): a new token will not help. Never replayed.
    Other(String),
}

impl Rejection {
    /// Whether the adapters replay with a new token, given whether a bare 401 counts.
    pub fn warrants_new_token(&self, bare_401_rejects: bool) -> bool {
        match self {
            Self::InvalidToken => true,
            Self::NoErrorCode => bare_401_rejects,
            Self::NotRejected | Self::Other(_) => false,
        }
    }
}

/// The most bytes of a 401 body that are read to look for a JSON `error` code. A longer body is
/// passed on intact and treated as carrying no code.
pub const MAX_INSPECTED_BODY: usize = 16 * 1024;

/// What the headers alone say; `None` means the body must be looked at.
pub(crate) fn classify_headers(status: StatusCode, headers: &HeaderMap) -> Option<Rejection> {
    if status == StatusCode::FORBIDDEN {
        return Some(Rejection::Other(
            bearer_error(headers).unwrap_or_else(|| "forbidden".to_owned()),
        ));
    }
    if status != StatusCode::UNAUTHORIZED {
        return Some(Rejection::NotRejected);
    }
    match bearer_error(headers) {
        Some(code) if code == "invalid_token" => Some(Rejection::InvalidToken),
        Some(code) => Some(Rejection::Other(code)),
        None => None,
    }
}

/// Classifies an API's answer from its status, headers and (for a 401 whose headers carry no
/// error code) up to [`MAX_INSPECTED_BODY`] bytes of its body.
///
/// `403` is never a token problem that a new token fixes. A `401` is [`Rejection::InvalidToken`]
/// when a `Bearer` challenge or a JSON body says `invalid_token`, [`Rejection::Other`] when either
/// carries another code, and [`Rejection::NoErrorCode`] otherwise. Never panics, whatever the
/// input.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: Option<&[u8]>) -> Rejection {
    if let Some(verdict) = classify_headers(status, headers) {
        return verdict;
    }
    match body.and_then(json_error_code) {
        Some(code) if code == "invalid_token" => Rejection::InvalidToken,
        Some(code) => Rejection::Other(code),
        None => Rejection::NoErrorCode,
    }
}

/// `grpc-status: 16` (`UNAUTHENTICATED`) in a header map: the trailers of a gRPC response, or
/// the headers of a trailers-only one.
#[cfg_attr(not(feature = "tower"), allow(dead_code))]
pub(crate) fn is_grpc_unauthenticated(headers: &HeaderMap) -> bool {
    headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"16")
}

/// The `error` member of a JSON object body, if the body is one and has a string `error`.
pub(crate) fn json_error_code(body: &[u8]) -> Option<String> {
    if body.len() > MAX_INSPECTED_BODY {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: Option<serde_json::Value>,
    }
    let parsed: ErrorBody = serde_json::from_slice(body).ok()?;
    match parsed.error? {
        serde_json::Value::String(code) => Some(code),
        _ => None,
    }
}

/// The `error` parameter of the first `Bearer` challenge that has one, across every
/// `WWW-Authenticate` header.
pub(crate) fn bearer_error(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(parse_challenges)
        .filter(|c| c.scheme.eq_ignore_ascii_case("bearer"))
        .find_map(|c| c.param("error").map(str::to_owned))
}

/// One challenge of a `WWW-Authenticate` header (RFC 9110 §11.6.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The auth scheme as sent (`Bearer`, `Basic`, ...). Compare it without regard to case.
    pub scheme: String,
    /// The auth parameters in order, names lower-cased, quoted values unescaped. A `token68`
    /// appears as a parameter with an empty name.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// The value of a parameter (name compared without regard to case).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses one `WWW-Authenticate` header value into its challenges.
///
/// Lenient by design: parameters may come in any order, values quoted or not, several
/// challenges in one header, odd spacing. Text that fits no rule is skipped; the parser never
/// panics and runs in linear time.
///
/// ```
/// use client_credentials::challenge::parse_challenges;
///
/// let challenges = parse_challenges(r#"Basic realm="x", Bearer error=invalid_token, realm="api""#);
/// assert_eq!(challenges.len(), 2);
/// assert_eq!(challenges[1].param("error"), Some("invalid_token"));
/// assert_eq!(challenges[1].param("realm"), Some("api"));
/// ```
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut rest = header;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_ascii_whitespace());
        if rest.is_empty() {
            return out;
        }
        let (word, after) = split_token(rest);
        if word.is_empty() {
            // Not a token character (a stray quote or '='): skip one character.
            let skip = rest.chars().next().map_or(1, char::len_utf8);
            rest = &rest[skip..];
            continue;
        }
        let after_ws = after.trim_start_matches([' ', '\t']);
        if let Some(len) = token68_len(word, after, out.last()) {
            // `Basic dGVzdA==`: the challenge's token68, kept whole under an empty name.
            if let Some(current) = out.last_mut() {
                current.params.push((String::new(), rest[..len].to_owned()));
            }
            rest = &rest[len..];
        } else if let Some(value_part) = after_ws.strip_prefix('=') {
            // `name=value`: a parameter of the current challenge.
            let value_part = value_part.trim_start_matches([' ', '\t']);
            let (value, remaining) = if let Some(quoted) = value_part.strip_prefix('"') {
                read_quoted(quoted)
            } else {
                let end = value_part
                    .find(|c: char| c == ',' || c.is_ascii_whitespace())
                    .unwrap_or(value_part.len());
                (value_part[..end].to_owned(), &value_part[end..])
            };
            if let Some(current) = out.last_mut() {
                current.params.push((word.to_ascii_lowercase(), value));
            }
            rest = remaining;
        } else {
            out.push(Challenge {
                scheme: word.to_owned(),
                params: Vec::new(),
            });
            rest = after;
        }
    }
}

/// The length of a token68 (RFC 9110 §11.2: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" /
/// "/" ) *"="`) made of `word` and the `=` padding that follows it, when it is one: right after
/// a scheme that has no parameter yet, padded (`==`), or with nothing but a `,` or the end
/// after its `=` (a parameter always has a value).
fn token68_len(word: &str, after: &str, current: Option<&Challenge>) -> Option<usize> {
    if !current.is_some_and(|c| c.params.is_empty()) || !after.starts_with('=') {
        return None;
    }
    if word.contains(|c: char| !(c.is_ascii_alphanumeric() || "-._~+/".contains(c))) {
        return None;
    }
    let padding = after.len() - after.trim_start_matches('=').len();
    let next = after[padding..].trim_start_matches([' ', '\t']);
    (padding > 1 || next.is_empty() || next.starts_with(',')).then_some(word.len() + padding)
}

/// Splits a leading RFC 9110 token (tchar+, plus the token68 characters '/' and '+').
fn split_token(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~/".contains(c)))
        .unwrap_or(s.len());
    s.split_at(end)
}

/// Reads a quoted-string body (after the opening quote); returns the unescaped value and the
/// text after the closing quote. An unterminated string runs to the end.
fn read_quoted(s: &str) -> (String, &str) {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (value, &s[i + 1..]),
            '\\' => {
                if let Some((_, escaped)) = chars.next() {
                    value.push(escaped);
                }
            }
            c => value.push(c),
        }
    }
    (value, "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(http::header::WWW_AUTHENTICATE, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn reads_bearer_error_in_every_shape() {
        let cases: &[(&[&'static str], Option<&str>)] = &[
            (
                &[r#"Bearer realm="example", error="invalid_token", error_description="expired""#],
                Some("invalid_token"),
            ),
            (
                &[r#"Bearer error="invalid_token", realm="example""#],
                Some("invalid_token"),
            ),
            (&[r#"Bearer error=invalid_token"#], Some("invalid_token")),
            (
                &[r#"bearer   error = "invalid_token""#],
                Some("invalid_token"),
            ),
            (
                &[r#"Basic realm="x", Bearer error="invalid_token""#],
                Some("invalid_token"),
            ),
            (
                &[
                    r#"Basic realm="x""#,
                    r#"Bearer error="insufficient_scope", scope="a b""#,
                ],
                Some("insufficient_scope"),
            ),
            (
                &[r#"Bearer realm="a, b", error="invalid_token""#],
                Some("invalid_token"),
            ),
            (
                &[r#"Bearer realm="say \"hi\"", error="invalid_token""#],
                Some("invalid_token"),
            ),
            (
                &[r#"Basic dGVzdA==, Bearer error="invalid_token""#],
                Some("invalid_token"),
            ),
            (&[r#"Bearer realm="api""#], None),
            (&[r#"Basic error="invalid_token""#], None),
            (&[r#"Bearer error="unterminated"#], Some("unterminated")),
            (&[""], None),
        ];
        for (values, expected) in cases {
            assert_eq!(
                bearer_error(&headers(values)).as_deref(),
                *expected,
                "{values:?}"
            );
        }
    }

    #[test]
    fn classifies_status_headers_and_body() {
        let un = StatusCode::UNAUTHORIZED;
        let none = HeaderMap::new();
        let cases: Vec<(StatusCode, HeaderMap, Option<&[u8]>, Rejection)> = vec![
            (StatusCode::OK, none.clone(), None, Rejection::NotRejected),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                none.clone(),
                None,
                Rejection::NotRejected,
            ),
            (
                un,
                headers(&[r#"Bearer error="invalid_token""#]),
                None,
                Rejection::InvalidToken,
            ),
            (
                un,
                none.clone(),
                Some(br#"{"error":"invalid_token"}"#),
                Rejection::InvalidToken,
            ),
            (
                un,
                none.clone(),
                Some(br#"{"error":"missing_bearer_token"}"#),
                Rejection::Other("missing_bearer_token".into()),
            ),
            (
                un,
                none.clone(),
                Some(br#"{"message":"Unauthorized"}"#),
                Rejection::NoErrorCode,
            ),
            (un, none.clone(), Some(b"not json"), Rejection::NoErrorCode),
            (
                un,
                none.clone(),
                Some(br#"{"error":42}"#),
                Rejection::NoErrorCode,
            ),
            (un, none.clone(), None, Rejection::NoErrorCode),
            (
                StatusCode::FORBIDDEN,
                none.clone(),
                Some(br#"{"error":"insufficient_scope"}"#),
                Rejection::Other("forbidden".into()),
            ),
            (
                StatusCode::FORBIDDEN,
                headers(&[r#"Bearer error="insufficient_scope""#]),
                None,
                Rejection::Other("insufficient_scope".into()),
            ),
            // The header wins over the body.
            (
                un,
                headers(&[r#"Bearer error="invalid_request""#]),
                Some(br#"{"error":"invalid_token"}"#),
                Rejection::Other("invalid_request".into()),
            ),
        ];
        for (status, headers, body, expected) in cases {
            assert_eq!(
                classify(status, &headers, body),
                expected,
                "{status} {headers:?} {body:?}"
            );
        }
    }

    #[test]
    fn replay_rule() {
        assert!(Rejection::InvalidToken.warrants_new_token(false));
        assert!(Rejection::NoErrorCode.warrants_new_token(true));
        assert!(!Rejection::NoErrorCode.warrants_new_token(false));
        assert!(!Rejection::Other("insufficient_scope".into()).warrants_new_token(true));
        assert!(!Rejection::NotRejected.warrants_new_token(true));
    }
}
