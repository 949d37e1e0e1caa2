//! Recipes for authorization servers seen in the wild: AWS Cognito and Duende IdentityServer.
//!
//! Each recipe only sets the token URL, after checking its inputs; everything else (client id,
//! secret, scopes, tenant) is set as usual, and [`build`](ClientCredentialsBuilder::build)
//! applies the same rules as to a token URL set by hand (HTTPS, plain HTTP only on loopback).
//!
//! # Example
//!
//! ```
//! use client_credentials::ClientCredentials;
//!
//! let credentials = ClientCredentials::builder()
//!     .aws_cognito("my-domain", "eu-south-2")?
//!     .client_id("my-app-client")
//!     .client_secret(std::env::var("CLIENT_SECRET").unwrap_or_default())
//!     .scopes("https://api.example.com/accounts.read")
//!     .build()?;
//! # let _ = credentials;
//! # Ok::<(), client_credentials::ConfigError>(())
//! ```

use url::Url;

use super::url::base_url;
use crate::{ClientCredentialsBuilder, ConfigError};

/// The Cognito token path, on the prefix domain and on custom domains alike.
const COGNITO_TOKEN_PATH: &str = "/oauth2/token";
/// The IdentityServer token path, below the authority.
const DUENDE_TOKEN_PATH: &str = "/connect/token";

impl ClientCredentialsBuilder {
    /// AWS Cognito, on the domain Cognito hosts for a user pool: the token URL becomes
    /// `https://<domain_prefix>.auth.<region>.amazoncognito.com/oauth2/token`.
    ///
    /// `domain_prefix` is the user pool's domain prefix (1 to 63 lowercase letters, digits and
    /// hyphens, not starting or ending with a hyphen); `region` an AWS region such as
    /// `us-east-1` or `eu-south-2`. For a custom domain, or a partition with another DNS suffix,
    /// use [`aws_cognito_domain`](Self::aws_cognito_domain).
    ///
    /// # What Cognito expects and answers
    ///
    /// - The app client must have the client credentials grant enabled and a secret; otherwise
    ///   Cognito answers `400 {"error":"unauthorized_client"}` (or `invalid_client` for a wrong
    ///   id or secret), which [`Error::OAuth`](crate::Error::OAuth) keeps with its code.
    /// - Scopes are resource-server scopes such as `https://api.example.com/accounts.read`,
    ///   sent space-separated in `scope`; without any, Cognito grants all the scopes the app
    ///   client is allowed.
    /// - Both `client_secret_basic` (the default) and `client_secret_post` work.
    /// - The answer is `{"access_token":"eyJ...","expires_in":3600,"token_type":"Bearer"}`, with
    ///   no `scope` field.
    ///
    /// # What caching saves
    ///
    /// Cognito bills machine-to-machine authorization per token request (USD 2.25 per 1,000
    /// requests at the first tier of the May 2024 list price; check the current price). With
    /// Cognito's default 1-hour token and the default refresh at 75% of its lifetime, one
    /// service instance asks for a new token every 45 minutes (42 to 45 with the default 5%
    /// jitter): 24 h × 60 / 45 = **32 token requests a day** (at most 35), about 960 a month,
    /// roughly USD 2.16. Without a cache, every API call is a token request: an instance making
    /// 10 calls a second would make 864,000 token requests a day (about USD 1,944 a day).
    /// Several instances each keep their own cache, so the count is per instance; a
    /// [`ClientCredentials::from_source`](crate::ClientCredentials::from_source) in front of a
    /// shared store brings it down further.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidCognitoDomainPrefix`] or [`ConfigError::InvalidAwsRegion`] for a
    /// prefix or region with other characters.
    ///
    /// # Example
    ///
    /// ```
    /// use client_credentials::ClientCredentials;
    ///
    /// let builder = ClientCredentials::builder().aws_cognito("smart-capital", "us-east-1")?;
    /// assert!(ClientCredentials::builder().aws_cognito("evil.com/x", "us-east-1").is_err());
    /// # let _ = builder;
    /// # Ok::<(), client_credentials::ConfigError>(())
    /// ```
    pub fn aws_cognito(self, domain_prefix: &str, region: &str) -> Result<Self, ConfigError> {
        check_cognito_prefix(domain_prefix)?;
        check_aws_region(region)?;
        Ok(self.token_url(format!(
            "https://{domain_prefix}.auth.{region}.amazoncognito.com{COGNITO_TOKEN_PATH}"
        )))
    }

    /// AWS Cognito on a custom domain (or any full Cognito domain): the token URL becomes
    /// `<domain>/oauth2/token`.
    ///
    /// Accepts a host (`auth.example.com`, taken as HTTPS) or a base URL
    /// (`https://auth.example.com`, with or without a trailing `/`, or already ending in
    /// `/oauth2/token`). Everything [`aws_cognito`](Self::aws_cognito) says about Cognito
    /// applies.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidTokenUrl`] for something that is not a host or base URL: another
    /// path, a query, a fragment, user info, or a scheme other than HTTP(S).
    ///
    /// # Example
    ///
    /// ```
    /// use client_credentials::ClientCredentials;
    ///
    /// let builder = ClientCredentials::builder().aws_cognito_domain("https://auth.example.com")?;
    /// # let _ = builder;
    /// # Ok::<(), client_credentials::ConfigError>(())
    /// ```
    pub fn aws_cognito_domain(self, domain: &str) -> Result<Self, ConfigError> {
        let url = base_url(domain, "Cognito domain")?;
        let path = url.path().trim_end_matches('/');
        if !(path.is_empty() || path == COGNITO_TOKEN_PATH) {
            return Err(ConfigError::InvalidTokenUrl(format!(
                "Cognito domain `{}`: expected a host or base URL, not the path `{}`",
                crate::text::url_label(&url),
                crate::text::shown(path)
            )));
        }
        Ok(self.token_url(token_url(&url, "", COGNITO_TOKEN_PATH)))
    }

    /// Duende IdentityServer (and IdentityServer4): the token URL becomes
    /// `<authority>/connect/token`.
    ///
    /// `authority` is the IdentityServer base URL, possibly with a path base
    /// (`https://login.example.com/identity` → `https://login.example.com/identity/connect/token`);
    /// a bare host is taken as HTTPS, and a URL already ending in `/connect/token` is kept.
    ///
    /// # What IdentityServer expects and answers
    ///
    /// - Scopes are API scopes such as `idp_api`; the answer echoes them:
    ///   `{"access_token":"...","expires_in":3600,"token_type":"Bearer","scope":"idp_api"}`.
    /// - Both `client_secret_basic` (the default) and `client_secret_post` work.
    /// - Multi-tenant APIs behind it often want `X-Tenant-Id`: set
    ///   [`tenant_id`](Self::tenant_id), or per request with
    ///   [`RequestOptions::tenant_id`](crate::RequestOptions::tenant_id).
    /// - Failures are `400 {"error":"invalid_client","error_description":"Invalid client
    ///   credentials"}` (or `invalid_scope`); [`Error::OAuth`](crate::Error::OAuth) keeps the
    ///   code and the description.
    ///
    /// Setting the issuer with [`discover`](Self::discover) works as well: IdentityServer
    /// publishes `/.well-known/openid-configuration`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidTokenUrl`] for something that is not a URL with a host, or that
    /// has a query, fragment or user info.
    ///
    /// # Example
    ///
    /// ```
    /// use client_credentials::ClientCredentials;
    ///
    /// let credentials = ClientCredentials::builder()
    ///     .duende("https://prod.personifyauth.com")?
    ///     .client_id("my-client")
    ///     .client_secret(std::env::var("CLIENT_SECRET").unwrap_or_default())
    ///     .scopes("idp_api")
    ///     .tenant_id(client_credentials::TenantId::from_static("acme"))
    ///     .build()?;
    /// # let _ = credentials;
    /// # Ok::<(), client_credentials::ConfigError>(())
    /// ```
    pub fn duende(self, authority: &str) -> Result<Self, ConfigError> {
        let url = base_url(authority, "IdentityServer authority")?;
        let path = url.path().trim_end_matches('/');
        let base = path.strip_suffix(DUENDE_TOKEN_PATH).unwrap_or(path);
        Ok(self.token_url(token_url(&url, base, DUENDE_TOKEN_PATH)))
    }
}

/// `scheme://host[:port]<base><suffix>`.
fn token_url(url: &Url, base: &str, suffix: &str) -> String {
    let mut out = url.clone();
    out.set_path(&format!("{base}{suffix}"));
    out.to_string()
}

/// A Cognito domain prefix: 1 to 63 of `a-z 0-9 -`, not starting or ending with `-`.
fn check_cognito_prefix(prefix: &str) -> Result<(), ConfigError> {
    let ok = (1..=63).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !prefix.starts_with('-')
        && !prefix.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::InvalidCognitoDomainPrefix(
            crate::text::shown(prefix).to_string(),
        ))
    }
}

/// An AWS region name: lowercase words joined by `-`, starting with a letter, ending in a
/// number (`us-east-1`, `us-gov-west-1`, `eu-south-2`).
fn check_aws_region(region: &str) -> Result<(), ConfigError> {
    let parts: Vec<&str> = region.split('-').collect();
    let ok = region.len() <= 32
        && parts.len() >= 3
        && parts.iter().all(|p| !p.is_empty())
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(ConfigError::InvalidAwsRegion(
            crate::text::shown(region).to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url_of(b: Result<ClientCredentialsBuilder, ConfigError>) -> Result<String, ConfigError> {
        b.map(|b| b.source.token_url.unwrap_or_default())
    }

    #[test]
    fn cognito_prefix_and_region() {
        let b = ClientCredentialsBuilder::new;
        let ok = [
            (
                "pryzma-dev-client",
                "us-east-1",
                "https://pryzma-dev-client.auth.us-east-1.amazoncognito.com/oauth2/token",
            ),
            (
                "smart-capital",
                "us-east-1",
                "https://smart-capital.auth.us-east-1.amazoncognito.com/oauth2/token",
            ),
            (
                "cps-poc-api-access",
                "eu-south-2",
                "https://cps-poc-api-access.auth.eu-south-2.amazoncognito.com/oauth2/token",
            ),
            (
                "a",
                "us-gov-west-1",
                "https://a.auth.us-gov-west-1.amazoncognito.com/oauth2/token",
            ),
            (
                "0abc9",
                "ap-southeast-2",
                "https://0abc9.auth.ap-southeast-2.amazoncognito.com/oauth2/token",
            ),
        ];
        for (prefix, region, expected) in ok {
            assert_eq!(
                url_of(b().aws_cognito(prefix, region)).unwrap(),
                expected,
                "{prefix} {region}"
            );
        }
        let long = "a".repeat(64);
        let bad_prefixes = [
            "",
            "My-Domain",
            "-lead",
            "trail-",
            "dot.ted",
            "evil.com/x",
            "sp ace",
            "a_b",
            "é",
            long.as_str(),
        ];
        for prefix in bad_prefixes {
            let err = url_of(b().aws_cognito(prefix, "us-east-1")).unwrap_err();
            assert!(
                matches!(err, ConfigError::InvalidCognitoDomainPrefix(_)),
                "{prefix:?}: {err}"
            );
        }
        let bad_regions = [
            "",
            "us-east",
            "us-east-1a",
            "US-EAST-1",
            "us-east-1/x",
            "us..east-1",
            "east-1",
            "us-east-1.evil.com",
            "us_east_1",
        ];
        for region in bad_regions {
            let err = url_of(b().aws_cognito("my-domain", region)).unwrap_err();
            assert!(
                matches!(err, ConfigError::InvalidAwsRegion(_)),
                "{region:?}: {err}"
            );
        }
    }

    #[test]
    fn cognito_custom_domains() {
        let b = ClientCredentialsBuilder::new;
        let ok = [
            ("auth.example.com", "https://auth.example.com/oauth2/token"),
            (
                "https://auth.example.com",
                "https://auth.example.com/oauth2/token",
            ),
            (
                "https://auth.example.com/",
                "https://auth.example.com/oauth2/token",
            ),
            (
                "https://auth.example.com/oauth2/token",
                "https://auth.example.com/oauth2/token",
            ),
            (
                " https://Auth.Example.com:8443 ",
                "https://auth.example.com:8443/oauth2/token",
            ),
            (
                "https://my-domain.auth.us-east-1.amazoncognito.com",
                "https://my-domain.auth.us-east-1.amazoncognito.com/oauth2/token",
            ),
            (
                "http://127.0.0.1:9000",
                "http://127.0.0.1:9000/oauth2/token",
            ),
        ];
        for (domain, expected) in ok {
            assert_eq!(
                url_of(b().aws_cognito_domain(domain)).unwrap(),
                expected,
                "{domain}"
            );
        }
        let bad = [
            "",
            "https://auth.example.com/other",
            "https://auth.example.com/?x=1",
            "https://auth.example.com/#f",
            "https://user:pw@auth.example.com",
            "ftp://auth.example.com",
            "https://",
        ];
        for domain in bad {
            let err = url_of(b().aws_cognito_domain(domain)).unwrap_err();
            assert!(
                matches!(err, ConfigError::InvalidTokenUrl(_)),
                "{domain:?}: {err}"
            );
            assert!(!err.to_string().contains("pw"), "{err}");
        }
    }

    #[test]
    fn duende_authorities() {
        let b = ClientCredentialsBuilder::new;
        let ok = [
            (
                "https://prod.personifyauth.com",
                "https://prod.personifyauth.com/connect/token",
            ),
            (
                "https://prod.personifyauth.com/",
                "https://prod.personifyauth.com/connect/token",
            ),
            (
                "prod.personifyauth.com",
                "https://prod.personifyauth.com/connect/token",
            ),
            (
                "https://login.example.com/identity/",
                "https://login.example.com/identity/connect/token",
            ),
            (
                "https://login.example.com/connect/token",
                "https://login.example.com/connect/token",
            ),
            (
                "http://localhost:5001",
                "http://localhost:5001/connect/token",
            ),
        ];
        for (authority, expected) in ok {
            assert_eq!(
                url_of(b().duende(authority)).unwrap(),
                expected,
                "{authority}"
            );
        }
        for authority in [
            "",
            "https://login.example.com/?acr=x",
            "https://u:pw@login.example.com",
            "mailto:x@y",
        ] {
            let err = url_of(b().duende(authority)).unwrap_err();
            assert!(
                matches!(err, ConfigError::InvalidTokenUrl(_)),
                "{authority:?}: {err}"
            );
            assert!(!err.to_string().contains("pw"), "{err}");
        }
    }

    #[test]
    fn recipes_build_with_the_usual_rules() {
        let creds = |b: ClientCredentialsBuilder| b.client_id("id").client_secret("s").build();
        assert!(creds(
            ClientCredentialsBuilder::new()
                .aws_cognito("my-domain", "us-east-1")
                .unwrap()
        )
        .is_ok());
        assert!(creds(
            ClientCredentialsBuilder::new()
                .duende("https://login.example.com")
                .unwrap()
        )
        .is_ok());
        // Plain HTTP on a public host passes the recipe's shape check but not `build`.
        let insecure = ClientCredentialsBuilder::new()
            .duende("http://login.example.com")
            .unwrap();
        assert!(matches!(
            creds(insecure).unwrap_err(),
            ConfigError::InsecureTokenUrl(_)
        ));
    }
}
