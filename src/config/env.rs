//! Building the configuration from environment variables.

use super::ClientCredentialsBuilder;
use crate::{AuthMethod, ConfigError, TenantId};

/// The default prefix of the environment variables read by
/// [`ClientCredentialsBuilder::from_env`].
pub const DEFAULT_ENV_PREFIX: &str = "OAUTH_";

impl ClientCredentialsBuilder {
    /// A builder filled from environment variables named with the prefix `OAUTH_`:
    ///
    /// | variable | setting |
    /// |---|---|
    /// | `OAUTH_TOKEN_URL` | [`token_url`](Self::token_url) |
    /// | `OAUTH_CLIENT_ID` | [`client_id`](Self::client_id) |
    /// | `OAUTH_CLIENT_SECRET` | [`client_secret`](Self::client_secret) |
    /// | `OAUTH_CLIENT_SECRET_FILE` | [`client_secret_file`](Self::client_secret_file): read again when it changes |
    /// | `OAUTH_PREVIOUS_CLIENT_SECRET` | [`previous_client_secret`](Self::previous_client_secret) |
    /// | `OAUTH_CLIENT_ASSERTION_FILE` | [`client_assertion_file`](Self::client_assertion_file): workload identity federation |
    /// | `OAUTH_SCOPE` | [`scopes`](Self::scopes), space-separated |
    /// | `OAUTH_AUTH_METHOD` | [`auth_method`](Self::auth_method): `client_secret_basic`, `client_secret_post`, ... |
    /// | `OAUTH_ISSUER` | [`issuer`](Self::issuer) |
    /// | `OAUTH_TENANT_ID` | [`tenant_id`](Self::tenant_id) |
    /// | `OAUTH_AUDIENCE` | [`param`](Self::param)`("audience", ..)` |
    /// | `OAUTH_RESOURCE` | [`param`](Self::param)`("resource", ..)` (RFC 8707) |
    ///
    /// Unset variables leave the setting as it is; later setters override. Fails on a variable
    /// that is set but not Unicode, an unknown `OAUTH_AUTH_METHOD`, or an `OAUTH_TENANT_ID`
    /// that cannot be a header value.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_env_prefixed(DEFAULT_ENV_PREFIX)
    }

    /// Like [`from_env`](Self::from_env) with another prefix (`PARTNER_` reads
    /// `PARTNER_TOKEN_URL`, ...), for services that talk to several partners.
    pub fn from_env_prefixed(prefix: &str) -> Result<Self, ConfigError> {
        Self::new().env_lookup(prefix, |name| match std::env::var(name) {
            Ok(value) => Ok(Some(value)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::InvalidEnv {
                name: name.to_owned(),
                reason: "not valid Unicode".to_owned(),
            }),
        })
    }

    pub(crate) fn env_lookup(
        mut self,
        prefix: &str,
        lookup: impl Fn(&str) -> Result<Option<String>, ConfigError>,
    ) -> Result<Self, ConfigError> {
        let var = |suffix: &str| lookup(&format!("{prefix}{suffix}"));
        let invalid = |suffix: &str, reason: String| ConfigError::InvalidEnv {
            name: format!("{prefix}{suffix}"),
            reason,
        };
        if let Some(v) = var("TOKEN_URL")? {
            self = self.token_url(v);
        }
        if let Some(v) = var("CLIENT_ID")? {
            self = self.client_id(v);
        }
        if let Some(v) = var("CLIENT_SECRET")? {
            self = self.client_secret(v);
        }
        if let Some(v) = var("CLIENT_SECRET_FILE")? {
            self = self.client_secret_file(v);
        }
        if let Some(v) = var("PREVIOUS_CLIENT_SECRET")? {
            self = self.previous_client_secret(v);
        }
        if let Some(v) = var("CLIENT_ASSERTION_FILE")? {
            self = self.client_assertion_file(v);
        }
        if let Some(v) = var("SCOPE")? {
            self = self.scopes(v);
        }
        if let Some(v) = var("AUTH_METHOD")? {
            let method = AuthMethod::parse(v.trim()).ok_or_else(|| {
                invalid(
                    "AUTH_METHOD",
                    format!(
                        "`{}` is not a method this crate implements (client_secret_basic, \
                         client_secret_post, client_secret_jwt, private_key_jwt, \
                         tls_client_auth, self_signed_tls_client_auth)",
                        crate::text::shown(&v)
                    ),
                )
            })?;
            self = self.auth_method(method);
        }
        if let Some(v) = var("TENANT_ID")? {
            let tenant = TenantId::new(&v).map_err(|e| invalid("TENANT_ID", e.to_string()))?;
            self = self.tenant_id(tenant);
        }
        if let Some(v) = var("ISSUER")? {
            self = self.issuer(v);
        }
        if let Some(v) = var("AUDIENCE")? {
            self = self.param("audience", v);
        }
        if let Some(v) = var("RESOURCE")? {
            self = self.param("resource", v);
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Scopes;

    fn lookup_in(
        vars: &'static [(&'static str, &'static str)],
    ) -> impl Fn(&str) -> Result<Option<String>, ConfigError> {
        move |name| {
            Ok(vars
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned()))
        }
    }

    #[test]
    fn environment_variables() {
        static VARS: [(&str, &str); 8] = [
            ("P_TOKEN_URL", "https://auth.example/token"),
            ("P_CLIENT_ID", "the-id"),
            ("P_CLIENT_SECRET", "the-secret"),
            ("P_SCOPE", "a  b"),
            ("P_AUTH_METHOD", "client_secret_post"),
            ("P_TENANT_ID", "acme"),
            ("P_AUDIENCE", "https://api"),
            ("P_RESOURCE", "https://res"),
        ];
        let b = ClientCredentialsBuilder::new()
            .env_lookup("P_", lookup_in(&VARS))
            .unwrap();
        let s = &b.source;
        assert_eq!(s.token_url.as_deref(), Some("https://auth.example/token"));
        assert_eq!(s.client_id.as_deref(), Some("the-id"));
        assert_eq!(
            s.client_secret.as_ref().map(|s| s.expose_secret()),
            Some("the-secret")
        );
        assert_eq!(b.common.scopes, Scopes::new(["a", "b"]));
        assert_eq!(s.auth_method, Some(AuthMethod::ClientSecretPost));
        assert_eq!(b.common.tenant, Some(TenantId::from_static("acme")));
        assert_eq!(
            s.params,
            [
                ("audience".to_owned(), "https://api".to_owned()),
                ("resource".to_owned(), "https://res".to_owned())
            ]
        );
        assert!(!format!("{b:?}").contains("the-secret"));
        assert!(b.build().is_ok());
    }

    #[test]
    fn the_secret_file_and_the_previous_secret() {
        static VARS: [(&str, &str); 4] = [
            ("P_TOKEN_URL", "https://auth.example/token"),
            ("P_CLIENT_ID", "the-id"),
            (
                "P_CLIENT_SECRET_FILE",
                "/var/run/secrets/partner/client-secret",
            ),
            ("P_PREVIOUS_CLIENT_SECRET", "the-old-secret"),
        ];
        let b = ClientCredentialsBuilder::new()
            .env_lookup("P_", lookup_in(&VARS))
            .unwrap();
        assert_eq!(
            b.source.client_secret_file.as_deref(),
            Some(std::path::Path::new(
                "/var/run/secrets/partner/client-secret"
            ))
        );
        assert_eq!(
            b.source
                .previous_client_secret
                .as_ref()
                .map(|s| s.expose_secret()),
            Some("the-old-secret")
        );
        assert!(!format!("{b:?}").contains("the-old-secret"));
        // The file is read by build(): there is none here.
        let err = b.build().unwrap_err();
        assert!(
            matches!(&err, ConfigError::CredentialFile(m) if m.contains("client-secret: entity not found")),
            "{err:?}"
        );
    }

    #[test]
    fn unusable_variables_are_named() {
        static METHOD: [(&str, &str); 1] = [("P_AUTH_METHOD", "none")];
        static TENANT: [(&str, &str); 1] = [("P_TENANT_ID", "bad\nvalue")];
        for (vars, name) in [(&METHOD[..], "P_AUTH_METHOD"), (&TENANT[..], "P_TENANT_ID")] {
            let vars: &'static [(&str, &str)] = vars;
            let err = ClientCredentialsBuilder::new()
                .env_lookup("P_", lookup_in(vars))
                .unwrap_err();
            assert!(
                matches!(err, ConfigError::InvalidEnv { name: ref n, .. } if n == name),
                "{err:?}"
            );
        }
    }
}
