//! The URL rules, written once: what a token URL, an issuer, a vendor's base URL and an
//! allowed origin may be.

use url::Url;

use crate::text::url_label;

/// What is wrong with a URL that credentials would be sent to (or discovered from).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Problem {
    NoHost,
    UserInfo,
    /// Plain HTTP to a host that is not loopback, without the explicit opt-in.
    Insecure,
    Scheme,
    QueryOrFragment,
}

impl Problem {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Self::NoHost => "no host",
            Self::UserInfo => "credentials in the URL are not allowed",
            Self::Insecure => {
                "not HTTPS; plain HTTP is allowed only for loopback hosts (or with \
                 `danger_allow_insecure_http`)"
            }
            Self::Scheme => "the scheme must be https (or http for a loopback host)",
            Self::QueryOrFragment => "a query or fragment is not allowed",
        }
    }

    /// The [`ConfigError`](crate::ConfigError) for a token URL with this problem.
    pub(crate) fn into_config_error(self, url: &Url) -> crate::ConfigError {
        let shown = url_label(url);
        match self {
            Self::Insecure => crate::ConfigError::InsecureTokenUrl(shown),
            other => crate::ConfigError::InvalidTokenUrl(format!("{shown}: {}", other.reason())),
        }
    }
}

/// The one rule: a host, no user info (it would be sent to the server and shown nowhere
/// else), HTTPS (plain HTTP only to a loopback host, or with the explicit opt-in), and, where
/// the URL names a base rather than an endpoint, no query or fragment.
pub(crate) fn check(url: &Url, allow_insecure_http: bool, base_only: bool) -> Result<(), Problem> {
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Problem::NoHost);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Problem::UserInfo);
    }
    match url.scheme() {
        "https" => {}
        "http" if allow_insecure_http || is_loopback(url) => {}
        "http" => return Err(Problem::Insecure),
        _ => return Err(Problem::Scheme),
    }
    if base_only && (url.query().is_some() || url.fragment().is_some()) {
        return Err(Problem::QueryOrFragment);
    }
    Ok(())
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// A token URL: [`check`] as an endpoint.
pub(crate) fn token_url(raw: &str, allow_insecure_http: bool) -> Result<Url, crate::ConfigError> {
    let url = Url::parse(raw.trim()).map_err(|e| {
        crate::ConfigError::InvalidTokenUrl(format!(
            "{}: {e}",
            crate::text::unparsed_url_label(raw)
        ))
    })?;
    check(&url, allow_insecure_http, false).map_err(|p| p.into_config_error(&url))?;
    Ok(url)
}

/// A base URL given to a vendor recipe: a host alone is taken as HTTPS. Plain HTTP passes
/// here (for loopback test servers); `build()` applies the token URL rule.
pub(crate) fn base_url(input: &str, what: &str) -> Result<Url, crate::ConfigError> {
    let input = input.trim();
    let with_scheme = if input.contains("://") {
        input.to_owned()
    } else {
        format!("https://{input}")
    };
    let invalid = |shown: String, reason: &dyn std::fmt::Display| {
        crate::ConfigError::InvalidTokenUrl(format!("{what} `{shown}`: {reason}"))
    };
    let url = Url::parse(&with_scheme)
        .map_err(|e| invalid(crate::text::unparsed_url_label(input), &e))?;
    check(&url, true, true).map_err(|p| invalid(url_label(&url), &p.reason()))?;
    Ok(url)
}

/// A request origin: scheme, host and port (the scheme's default when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// `scheme://host[:port]`, with no path beyond `/` and no query.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let url = Url::parse(s).ok()?;
        if !matches!(url.path(), "" | "/") || url.query().is_some() {
            return None;
        }
        Self::from_parts(Some(url.scheme()), url.host_str(), url.port())
    }

    pub(crate) fn from_parts(
        scheme: Option<&str>,
        host: Option<&str>,
        port: Option<u16>,
    ) -> Option<Self> {
        let scheme = scheme?.to_ascii_lowercase();
        let port = match (port, scheme.as_str()) {
            (Some(p), _) => p,
            (None, "https") => 443,
            (None, "http") => 80,
            _ => return None,
        };
        let host = host?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if host.is_empty() {
            return None;
        }
        Some(Self { scheme, host, port })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_table() {
        // (url, allow insecure http, base only, verdict)
        let cases: &[(&str, bool, bool, Result<(), Problem>)] = &[
            (
                "https://auth.example.com/oauth2/token",
                false,
                false,
                Ok(()),
            ),
            ("https://auth.example.com/t?x=1", false, false, Ok(())),
            (
                "https://auth.example.com/t?x=1",
                false,
                true,
                Err(Problem::QueryOrFragment),
            ),
            (
                "https://auth.example.com/#f",
                false,
                true,
                Err(Problem::QueryOrFragment),
            ),
            ("http://127.0.0.1:8080/token", false, false, Ok(())),
            ("http://127.1.2.3/token", false, false, Ok(())),
            ("http://localhost/token", false, false, Ok(())),
            ("http://[::1]:9000/token", false, false, Ok(())),
            (
                "http://auth.example.com/token",
                false,
                false,
                Err(Problem::Insecure),
            ),
            (
                "http://10.0.0.1/token",
                false,
                false,
                Err(Problem::Insecure),
            ),
            (
                "http://localhost.evil.com/t",
                false,
                false,
                Err(Problem::Insecure),
            ),
            ("http://auth.example.com/token", true, false, Ok(())),
            (
                "ftp://auth.example.com/token",
                false,
                false,
                Err(Problem::Scheme),
            ),
            (
                "https://user:pw@auth.example.com/t",
                false,
                false,
                Err(Problem::UserInfo),
            ),
            (
                "https://user@auth.example.com/t",
                true,
                false,
                Err(Problem::UserInfo),
            ),
            ("mailto:x@y", true, false, Err(Problem::NoHost)),
        ];
        for &(url, insecure, base, expected) in cases {
            assert_eq!(
                check(&Url::parse(url).unwrap(), insecure, base),
                expected,
                "{url}"
            );
        }
    }

    #[test]
    fn errors_never_show_user_info() {
        for raw in [
            "https://user:pw@auth.example.com/t",
            "http://u:pw@x.example/t",
            "https://u:pw@[bad",
        ] {
            let err = token_url(raw, false).unwrap_err().to_string();
            assert!(!err.contains("pw"), "{err}");
        }
        let err = base_url("https://u:pw@login.example.com", "authority").unwrap_err();
        assert!(!err.to_string().contains("pw"), "{err}");
    }

    #[test]
    fn origins() {
        let a = Origin::parse("https://API.example.com").unwrap();
        assert_eq!(
            a,
            Origin::from_parts(Some("https"), Some("api.example.com"), Some(443)).unwrap()
        );
        assert_eq!(
            Origin::parse("http://[::1]:8080/").unwrap(),
            Origin::from_parts(Some("http"), Some("[::1]"), Some(8080)).unwrap()
        );
        for bad in [
            "nope",
            "https://a.example/path",
            "https://a.example/?q",
            "ftp://a.example",
        ] {
            assert!(Origin::parse(bad).is_none(), "{bad}");
        }
    }
}
