//! Reading an API's rejection: `WWW-Authenticate` challenges (RFC 6750 §3, RFC 9449 §7.1) and
//! JSON error bodies, and the one rule that says whether a new token may help.
//!
//! The adapters use [`classify`] to decide whether an answer means "this token is no good"
//! (drop it, fetch one new token, send the request again once) or something a new token cannot
//! fix. It is public so code that is not a middleware (a websocket client, say) can apply the
//! same rule.
//!
//! # The rule
//!
//! The cost of the two mistakes is not symmetric: a needless replay costs one token request and
//! one API call (and the cache limits how often), a missed one leaves a token the API refuses in
//! the cache until it expires. So the rule replays **unless there is positive evidence that a
//! new token cannot help**:
//!
//! - **401**: a token rejection ([`Rejection::TokenRejected`]) unless a `Bearer` or `DPoP`
//!   challenge, or else the JSON body's `error` string, names one of the codes in
//!   [`NEW_TOKEN_CANNOT_FIX`] ([`Rejection::Unfixable`]). Every other code counts, `invalid_token`
//!   and custom ones alike, and so does an `error` object. A 401 with no code at all (no body,
//!   HTML, text, JSON without an `error` string, or the reason phrase `"Unauthorized"` in it) is
//!   [`Rejection::NoErrorCode`], which counts unless configured otherwise.
//! - **400 or 403**: a token rejection only when a `Bearer` or `DPoP` challenge says
//!   `error="invalid_token"` (some gateways answer an expired token that way); otherwise not a
//!   rejection, and the body is not read.
//! - **DPoP**: `use_dpop_nonce` asks for the same token with a new proof
//!   ([`Rejection::UseDpopNonce`]); `invalid_dpop_proof` cannot be fixed by a new token.
//! - Anything else is not a rejection.
//!
//! Challenges are read as servers really send them: parameters separated by spaces instead of
//! commas (AWS HTTP API JWT authorizers), single-quoted values, any case in scheme and parameter
//! names, several challenges in one header and several headers.
//!
//! The challenge parser is written here, not taken from a crate, on purpose: the parsers on
//! crates.io (`http-auth`'s `ChallengeParser`, `www_authenticate_parser`; `headers` has no
//! `WWW-Authenticate`) follow RFC 7235's grammar and stop at the shapes above, which real
//! servers send and whose `error` must still be read: that leniency is this crate's rule, not a
//! grammar's. It never panics, runs in linear time and has a fuzz target (`www_authenticate`).
//! JSON bodies are read with `serde_json`.
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
//!     HeaderValue::from_static(r#"Bearer scope="" error="invalid_token" error_description="the token has expired""#),
//! );
//! assert_eq!(classify(StatusCode::UNAUTHORIZED, &headers, None), Rejection::TokenRejected);
//!
//! // Spring Boot's error body: a reason phrase, not a code.
//! let spring = br#"{"timestamp":"2025-01-01T00:00:00.000+00:00","status":401,"error":"Unauthorized","path":"/api"}"#;
//! assert_eq!(classify(StatusCode::UNAUTHORIZED, &HeaderMap::new(), Some(spring)), Rejection::NoErrorCode);
//!
//! // A custom code still says the token was refused.
//! let custom = br#"{"error":"token_expired"}"#;
//! assert_eq!(classify(StatusCode::UNAUTHORIZED, &HeaderMap::new(), Some(custom)), Rejection::TokenRejected);
//!
//! // Positive evidence that a new token cannot help.
//! let scope = br#"{"error":"insufficient_scope"}"#;
//! assert_eq!(
//!     classify(StatusCode::UNAUTHORIZED, &HeaderMap::new(), Some(scope)),
//!     Rejection::Unfixable("insufficient_scope".into()),
//! );
//! ```

use http::{HeaderMap, StatusCode};

/// The error codes that say a new token cannot fix the problem: `insufficient_scope` and
/// `invalid_request` (RFC 6750 §3.1), `insufficient_user_authentication` (RFC 9470),
/// `insufficient_claims` (Microsoft's continuous access evaluation: the token request would
/// need the challenge's `claims`), and `invalid_dpop_proof` (RFC 9449: the proof, not the
/// token). Compared without regard to case.
pub const NEW_TOKEN_CANNOT_FIX: [&str; 5] = [
    "insufficient_scope",
    "invalid_request",
    "insufficient_user_authentication",
    "insufficient_claims",
    "invalid_dpop_proof",
];

/// What an API's answer says about the token it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// Not a rejection of the token: it counts as the API having accepted the token.
    NotRejected,
    /// The API rejected the token and a new one may help: a 401 with `invalid_token`, a custom
    /// code or an `error` object, or a 400/403 whose challenge says `invalid_token`.
    TokenRejected,
    /// A 401 with no error code at all (AWS API Gateway's `{"message":"Unauthorized"}`, an
    /// empty body, HTML, Spring Boot's reason phrase). Counts as a token rejection unless
    /// [`bare_401_rejects_token(false)`](crate::ClientCredentialsBuilder::bare_401_rejects_token).
    NoErrorCode,
    /// A 401 naming a problem a new token cannot fix (one of [`NEW_TOKEN_CANNOT_FIX`]). The
    /// token itself was accepted.
    Unfixable(String),
    /// RFC 9449: the API wants a DPoP proof carrying its nonce (`DPoP-Nonce`): the same token,
    /// a new proof.
    UseDpopNonce,
}

impl Rejection {
    /// Whether the adapters drop the token and replay the request with a new one, given
    /// whether a 401 with no code counts.
    pub fn warrants_new_token(&self, bare_401_rejects: bool) -> bool {
        match self {
            Self::TokenRejected => true,
            Self::NoErrorCode => bare_401_rejects,
            Self::NotRejected | Self::Unfixable(_) | Self::UseDpopNonce => false,
        }
    }

    /// Whether the answer says the API accepted the token (anything but a rejection a new
    /// token may fix, given whether a 401 with no code counts).
    pub(crate) fn accepts_token(&self, bare_401_rejects: bool) -> bool {
        match self {
            Self::NotRejected | Self::Unfixable(_) | Self::UseDpopNonce => true,
            Self::TokenRejected => false,
            Self::NoErrorCode => !bare_401_rejects,
        }
    }
}

/// The most bytes of a 401 body that are read to look for a JSON `error` code. A longer body is
/// passed on intact and treated as carrying no code.
pub const MAX_INSPECTED_BODY: usize = 16 * 1024;

/// The statuses the rule looks at; any other is not a rejection, without reading a header.
pub(crate) fn may_be_rejection(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::UNAUTHORIZED | StatusCode::BAD_REQUEST | StatusCode::FORBIDDEN
    )
}

/// What the status and headers alone say; `None` means the body must be looked at (a 401
/// whose challenges carry no error code).
pub(crate) fn classify_headers(status: StatusCode, headers: &HeaderMap) -> Option<Rejection> {
    if !may_be_rejection(status) {
        return Some(Rejection::NotRejected);
    }
    let code = challenge_error(headers);
    if status == StatusCode::UNAUTHORIZED {
        return code.map(|code| verdict_of(&code));
    }
    Some(match code {
        Some(code) if code.eq_ignore_ascii_case("invalid_token") => Rejection::TokenRejected,
        _ => Rejection::NotRejected,
    })
}

/// Classifies an API's answer from its status, headers and (for a 401 whose challenges carry
/// no error code) up to [`MAX_INSPECTED_BODY`] bytes of its body, by the rule in the module
/// docs. Never panics, whatever the input.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: Option<&[u8]>) -> Rejection {
    if let Some(verdict) = classify_headers(status, headers) {
        return verdict;
    }
    match body.and_then(json_error) {
        Some(JsonError::Code(code)) if code.eq_ignore_ascii_case("unauthorized") => {
            // A reason phrase (Spring Boot's error body, NestJS, hapi), not a code.
            Rejection::NoErrorCode
        }
        Some(JsonError::Code(code)) => verdict_of(&code),
        Some(JsonError::Object) => Rejection::TokenRejected,
        None => Rejection::NoErrorCode,
    }
}

/// The verdict on a 401 naming `code`.
fn verdict_of(code: &str) -> Rejection {
    if code.eq_ignore_ascii_case("use_dpop_nonce") {
        Rejection::UseDpopNonce
    } else if NEW_TOKEN_CANNOT_FIX
        .iter()
        .any(|c| c.eq_ignore_ascii_case(code))
    {
        Rejection::Unfixable(code.to_owned())
    } else {
        Rejection::TokenRejected
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

/// The `error` member of a JSON object body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum JsonError {
    /// A string: a code (or a reason phrase).
    Code(String),
    /// An object (Google's and Microsoft Graph's `{"error":{"code":..,"message":..}}`).
    Object,
}

/// The `error` member of a JSON object body, when it is a string or an object.
pub(crate) fn json_error(body: &[u8]) -> Option<JsonError> {
    if body.len() > MAX_INSPECTED_BODY {
        return None;
    }
    // A map, not a struct: serde would read a struct from a JSON array too (Salesforce answers
    // `[{"errorCode":..}]`, which has no `error` member).
    let mut object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).ok()?;
    match object.remove("error")? {
        serde_json::Value::String(code) => Some(JsonError::Code(code)),
        serde_json::Value::Object(_) => Some(JsonError::Object),
        _ => None,
    }
}

/// The `error` parameter of the first `Bearer` or `DPoP` challenge that has one, across every
/// `WWW-Authenticate` header.
pub(crate) fn challenge_error(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(parse_challenges)
        .filter(|c| {
            c.scheme.eq_ignore_ascii_case("bearer") || c.scheme.eq_ignore_ascii_case("dpop")
        })
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
/// Lenient by design: parameters may come in any order, separated by commas or by spaces alone,
/// values double-quoted, single-quoted or bare, several challenges in one header, odd spacing. Text that fits no rule is skipped; the parser never
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
            } else if let Some((value, remaining)) = value_part
                .strip_prefix('\'')
                .and_then(|quoted| quoted.split_once('\''))
            {
                // Not RFC 9110, but sent: a single-quoted value, read to the closing quote. (A
                // `'` with no closing one is a token character, read as part of a bare value.)
                (value.to_owned(), remaining)
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

    /// RFC 9110 token68 (`Basic dGVzdA==`) is kept whole as a parameter with an empty name, and
    /// only where it can be one: right after a scheme with no parameter yet, made of token68
    /// characters, padded, or followed by nothing but a `,` or the end.
    #[test]
    fn token68_only_where_it_can_be_one() {
        type Params = Vec<(String, String)>;
        let params = |header: &str| -> Vec<Params> {
            parse_challenges(header)
                .into_iter()
                .map(|c| c.params)
                .collect()
        };
        let p = |pairs: &[(&str, &str)]| -> Params {
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        };
        let cases: [(&str, Vec<Params>); 7] = [
            // Padded: a token68, whatever follows it.
            (
                r#"Basic dGVzdA== realm="x""#,
                vec![p(&[("", "dGVzdA=="), ("realm", "x")])],
            ),
            // One `=` at the end, or before a `,`.
            (
                "Negotiate a-b.c_d~e+f/g=",
                vec![p(&[("", "a-b.c_d~e+f/g=")])],
            ),
            ("Negotiate abc=, Bearer", vec![p(&[("", "abc=")]), p(&[])]),
            // One `=` and a value after it: a parameter.
            (
                "Bearer error=invalid_token",
                vec![p(&[("error", "invalid_token")])],
            ),
            // Not after a parameter.
            (
                r#"Bearer realm="x", abc=="#,
                vec![p(&[("realm", "x"), ("abc", "=")])],
            ),
            // Not with a character outside token68 (`!` is a token character, not token68).
            ("Basic a!b==", vec![p(&[("a!b", "=")])]),
            // Not without an `=`: a scheme of its own.
            ("Basic abc", vec![p(&[]), p(&[])]),
        ];
        for (header, expected) in cases {
            assert_eq!(params(header), expected, "{header}");
        }
    }

    /// A JSON 401 body is read up to `MAX_INSPECTED_BODY` bytes (an error with a verbose detail
    /// of 10 KiB is read); one byte more and it is passed on unread, as carrying no code.
    #[test]
    fn bodies_are_read_up_to_the_limit() {
        let padded = |len: usize| {
            let (head, tail) = (br#"{"error":"insufficient_scope","detail":""#, br#""}"#);
            let mut body = head.to_vec();
            body.resize(len - tail.len(), b'x');
            body.extend_from_slice(tail);
            assert_eq!(body.len(), len);
            body
        };
        let none = HeaderMap::new();
        for len in [10 * 1024, MAX_INSPECTED_BODY] {
            assert_eq!(
                classify(StatusCode::UNAUTHORIZED, &none, Some(&padded(len))),
                Rejection::Unfixable("insufficient_scope".into()),
                "{len} bytes"
            );
        }
        assert_eq!(
            classify(
                StatusCode::UNAUTHORIZED,
                &none,
                Some(&padded(MAX_INSPECTED_BODY + 1))
            ),
            Rejection::NoErrorCode
        );
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
            // Spaces instead of commas (AWS HTTP API JWT authorizers).
            (
                &[
                    r#"Bearer scope="" error="invalid_token" error_description="the token has expired""#,
                ],
                Some("invalid_token"),
            ),
            // Single quotes, any case in scheme and names.
            (&[r#"BEARER Error='invalid_token'"#], Some("invalid_token")),
            (
                &[r#"bearer realm='my api', error_description='a b', ERROR='token_expired'"#],
                Some("token_expired"),
            ),
            (&[r#"Bearer error='unterminated"#], Some("'unterminated")),
            // DPoP challenges count as Bearer ones do.
            (
                &[r#"DPoP algs="ES256", error="use_dpop_nonce""#],
                Some("use_dpop_nonce"),
            ),
            (
                &[r#"Bearer realm="api", DPoP algs="ES256 PS256", error="invalid_token""#],
                Some("invalid_token"),
            ),
            // Another scheme's error does not count (hapi-auth-jwt2's default `Token`).
            (&[r#"Token error="Expired token""#], None),
            (&[r#"Bearer error="unterminated"#], Some("unterminated")),
            (&[""], None),
        ];
        for (values, expected) in cases {
            assert_eq!(
                challenge_error(&headers(values)).as_deref(),
                *expected,
                "{values:?}"
            );
        }
    }

    #[test]
    fn the_rule_table() {
        use Rejection::*;
        let un = StatusCode::UNAUTHORIZED;
        let none = HeaderMap::new();
        let unfixable = |c: &str| Unfixable(c.to_owned());
        let cases: Vec<(StatusCode, HeaderMap, Option<&[u8]>, Rejection)> = vec![
            // Not looked at.
            (StatusCode::OK, none.clone(), None, NotRejected),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                headers(&[r#"Bearer error="invalid_token""#]),
                None,
                NotRejected,
            ),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                none.clone(),
                Some(br#"{"error":"invalid_token"}"#),
                NotRejected,
            ),
            // 401 with a challenge code: the challenge decides.
            (
                un,
                headers(&[r#"Bearer error="invalid_token""#]),
                None,
                TokenRejected,
            ),
            (
                un,
                headers(&[r#"Bearer error="token_expired""#]),
                None,
                TokenRejected,
            ),
            (
                un,
                headers(&[
                    r#"Bearer error="Expired token received for JSON Web Token validation""#,
                ]),
                None,
                TokenRejected,
            ),
            (
                un,
                headers(&[r#"Bearer error="insufficient_scope""#]),
                None,
                unfixable("insufficient_scope"),
            ),
            (
                un,
                headers(&[r#"Bearer error="INVALID_REQUEST""#]),
                None,
                unfixable("INVALID_REQUEST"),
            ),
            (
                un,
                headers(&[r#"Bearer error="insufficient_user_authentication""#]),
                None,
                unfixable("insufficient_user_authentication"),
            ),
            (
                un,
                headers(&[r#"Bearer error="insufficient_claims", claims="e30=""#]),
                None,
                unfixable("insufficient_claims"),
            ),
            (
                un,
                headers(&[r#"DPoP error="invalid_dpop_proof""#]),
                None,
                unfixable("invalid_dpop_proof"),
            ),
            (
                un,
                headers(&[r#"DPoP error="use_dpop_nonce""#]),
                None,
                UseDpopNonce,
            ),
            // The challenge wins over the body.
            (
                un,
                headers(&[r#"Bearer error="invalid_request""#]),
                Some(br#"{"error":"invalid_token"}"#),
                unfixable("invalid_request"),
            ),
            (
                un,
                headers(&[r#"Bearer error="invalid_token""#]),
                Some(br#"{"error":"insufficient_scope"}"#),
                TokenRejected,
            ),
            // 401 without a challenge code: the body's `error`.
            (
                un,
                none.clone(),
                Some(br#"{"error":"invalid_token"}"#),
                TokenRejected,
            ),
            (
                un,
                headers(&["Bearer"]),
                Some(br#"{"error":"token_expired"}"#),
                TokenRejected,
            ),
            (
                un,
                none.clone(),
                Some(br#"{"error":"missing_bearer_token"}"#),
                TokenRejected,
            ),
            (
                un,
                none.clone(),
                Some(br#"{"error":"insufficient_scope"}"#),
                unfixable("insufficient_scope"),
            ),
            (
                un,
                none.clone(),
                Some(br#"{"error":{"code":"InvalidAuthenticationToken"}}"#),
                TokenRejected,
            ),
            (
                un,
                none.clone(),
                Some(br#"{"error":"Unauthorized","status":401}"#),
                NoErrorCode,
            ),
            (
                un,
                none.clone(),
                Some(br#"{"error":"unauthorized"}"#),
                NoErrorCode,
            ),
            (
                un,
                none.clone(),
                Some(br#"{"message":"Unauthorized"}"#),
                NoErrorCode,
            ),
            (un, none.clone(), Some(br#"{"error":42}"#), NoErrorCode),
            (
                un,
                none.clone(),
                Some(br#"[{"errorCode":"INVALID_SESSION_ID"}]"#),
                NoErrorCode,
            ),
            (
                un,
                none.clone(),
                Some(b"<html>Unauthorized</html>"),
                NoErrorCode,
            ),
            (un, none.clone(), Some(b""), NoErrorCode),
            (un, none.clone(), None, NoErrorCode),
            (
                un,
                headers(&[r#"Token error="Expired token""#]),
                Some(br#"{"error":"Unauthorized"}"#),
                NoErrorCode,
            ),
            // 400 and 403: only a challenge saying invalid_token.
            (
                StatusCode::FORBIDDEN,
                headers(&[r#"Bearer realm="x", error="invalid_token""#]),
                None,
                TokenRejected,
            ),
            (
                StatusCode::BAD_REQUEST,
                headers(&[r#"Bearer error="invalid_token""#]),
                None,
                TokenRejected,
            ),
            (
                StatusCode::FORBIDDEN,
                headers(&[r#"DPoP error="invalid_token""#]),
                None,
                TokenRejected,
            ),
            (
                StatusCode::FORBIDDEN,
                headers(&[r#"Bearer error="insufficient_scope""#]),
                None,
                NotRejected,
            ),
            (
                StatusCode::FORBIDDEN,
                none.clone(),
                Some(br#"{"error":"invalid_token"}"#),
                NotRejected,
            ),
            (
                StatusCode::BAD_REQUEST,
                headers(&[r#"Bearer error="invalid_request""#]),
                None,
                NotRejected,
            ),
            (StatusCode::BAD_REQUEST, none.clone(), None, NotRejected),
        ];
        for (status, headers, body, expected) in cases {
            assert_eq!(
                classify(status, &headers, body),
                expected,
                "{status} {headers:?} {:?}",
                body.map(String::from_utf8_lossy)
            );
        }
    }

    #[test]
    fn replay_and_acceptance() {
        use Rejection::*;
        // (verdict, replay when a bare 401 counts, when it does not, accepted when it counts, when not)
        let cases = [
            (TokenRejected, true, true, false, false),
            (NoErrorCode, true, false, false, true),
            (
                Unfixable("insufficient_scope".into()),
                false,
                false,
                true,
                true,
            ),
            (NotRejected, false, false, true, true),
            (UseDpopNonce, false, false, true, true),
        ];
        for (verdict, replay_bare, replay_no_bare, accepted_bare, accepted_no_bare) in cases {
            assert_eq!(verdict.warrants_new_token(true), replay_bare, "{verdict:?}");
            assert_eq!(
                verdict.warrants_new_token(false),
                replay_no_bare,
                "{verdict:?}"
            );
            assert_eq!(verdict.accepts_token(true), accepted_bare, "{verdict:?}");
            assert_eq!(
                verdict.accepts_token(false),
                accepted_no_bare,
                "{verdict:?}"
            );
        }
    }
}
