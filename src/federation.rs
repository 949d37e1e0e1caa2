//! Workload identity federation recipes: the platforms that issue a workload a JWT, and how the
//! builder is set for each. The assertion itself is handled by [`crate::rotation`] (files,
//! environment variables, providers); this module adds the GitHub Actions provider and the
//! Azure workload identity recipe.

use std::fmt;
use std::time::Duration;

use crate::config::ClientCredentialsBuilder;
use crate::{BoxFuture, ClientSecret, ConfigError, CredentialProvider, Error};

/// The largest answer of the GitHub Actions token service read (64 KiB).
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// How long one request to the GitHub Actions token service may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The GitHub Actions OIDC token of the running job, as a client assertion: asked of the
/// job's token service (`ACTIONS_ID_TOKEN_REQUEST_URL`, authenticated with
/// `ACTIONS_ID_TOKEN_REQUEST_TOKEN`; the workflow needs `permissions: id-token: write`) with
/// the audience the authorization server expects.
///
/// Made by [`ClientCredentialsBuilder::github_actions_assertion`]; public for a source of
/// your own that wants the same token.
#[derive(Clone)]
pub struct GitHubActionsToken {
    client: reqwest::Client,
    url: url::Url,
    request_token: ClientSecret,
}

impl fmt::Debug for GitHubActionsToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHubActionsToken")
            .field("url", &crate::text::url_label(&self.url))
            .field("request_token", &self.request_token)
            .finish()
    }
}

impl GitHubActionsToken {
    /// From the job's environment (`ACTIONS_ID_TOKEN_REQUEST_URL`,
    /// `ACTIONS_ID_TOKEN_REQUEST_TOKEN`), for `audience`.
    pub fn from_env(audience: &str) -> Result<Self, ConfigError> {
        let var = |name: &str| {
            std::env::var(name).map_err(|_| ConfigError::InvalidEnv {
                name: name.to_owned(),
                reason: "not set (GitHub Actions sets it for a job with `permissions: id-token: \
                         write`)"
                    .to_owned(),
            })
        };
        Self::new(
            &var("ACTIONS_ID_TOKEN_REQUEST_URL")?,
            ClientSecret::new(var("ACTIONS_ID_TOKEN_REQUEST_TOKEN")?),
            audience,
        )
    }

    /// From the token service's URL and request token, for `audience`.
    pub fn new(
        request_url: &str,
        request_token: ClientSecret,
        audience: &str,
    ) -> Result<Self, ConfigError> {
        let mut url = url::Url::parse(request_url).map_err(|e| ConfigError::InvalidEnv {
            name: "ACTIONS_ID_TOKEN_REQUEST_URL".to_owned(),
            reason: e.to_string(),
        })?;
        if audience.is_empty() {
            return Err(ConfigError::OutOfRange(
                "github_actions_assertion needs the audience the authorization server expects",
            ));
        }
        url.query_pairs_mut().append_pair("audience", audience);
        let client = crate::endpoint::http_client(None)
            .map_err(|e| ConfigError::HttpClient(e.without_url().to_string()))?;
        Ok(Self {
            client,
            url,
            request_token,
        })
    }

    async fn fetch(&self) -> Result<ClientSecret, Error> {
        #[derive(serde::Deserialize)]
        struct Answer {
            value: String,
        }
        let failed = |reason: String| {
            Error::from_source(format!("the GitHub Actions token service {reason}"))
        };
        let mut authorization =
            http::HeaderValue::try_from(format!("bearer {}", self.request_token.expose_secret()))
                .map_err(|_| failed("request token is not a header value".to_owned()))?;
        authorization.set_sensitive(true);
        let mut response = self
            .client
            .get(self.url.clone())
            .timeout(REQUEST_TIMEOUT)
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::AUTHORIZATION, authorization)
            .send()
            .await
            .map_err(|e| failed(format!("could not be reached: {}", e.without_url())))?;
        let status = response.status();
        let body = crate::endpoint::read_limited(&mut response, MAX_ANSWER_BYTES)
            .await
            .map_err(|_| failed("answer could not be read".to_owned()))?;
        if !status.is_success() {
            return Err(failed(format!("answered HTTP {status}")));
        }
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|_| failed("answer has no `value` string".to_owned()))?;
        Ok(ClientSecret::new(answer.value))
    }
}

impl CredentialProvider for GitHubActionsToken {
    fn credential(&self) -> BoxFuture<'_, Result<ClientSecret, Error>> {
        Box::pin(self.fetch())
    }
}

/// The workload identity federation recipes.
impl ClientCredentialsBuilder {
    /// GitHub Actions: the job's OIDC token (for `audience`, the value the authorization
    /// server's federated credential expects) as the client assertion, asked of the job's
    /// token service when needed (see [`GitHubActionsToken`]). Fails when the job has no
    /// `ACTIONS_ID_TOKEN_REQUEST_URL` or `ACTIONS_ID_TOKEN_REQUEST_TOKEN` (the workflow needs
    /// `permissions: id-token: write`).
    pub fn github_actions_assertion(self, audience: &str) -> Result<Self, ConfigError> {
        Ok(self.client_assertion_provider(GitHubActionsToken::from_env(audience)?))
    }

    /// Azure workload identity (AKS): the token URL, the client id and the client assertion
    /// file from the variables the workload identity webhook sets: `AZURE_CLIENT_ID`,
    /// `AZURE_TENANT_ID`, `AZURE_FEDERATED_TOKEN_FILE` and `AZURE_AUTHORITY_HOST` (default
    /// `https://login.microsoftonline.com/`), for Entra ID's v2.0 token endpoint
    /// (`{authority}{tenant}/oauth2/v2.0/token`). Set the scope to the API's `.default`
    /// (`api://<app id>/.default`).
    pub fn azure_workload_identity(self) -> Result<Self, ConfigError> {
        self.azure_lookup(|name| std::env::var(name).ok())
    }

    pub(crate) fn azure_lookup(
        self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let var = |name: &str| {
            lookup(name)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| ConfigError::InvalidEnv {
                    name: name.to_owned(),
                    reason: "not set (the Azure workload identity webhook sets it for a pod \
                             labelled azure.workload.identity/use: \"true\")"
                        .to_owned(),
                })
        };
        let client_id = var("AZURE_CLIENT_ID")?;
        let tenant = var("AZURE_TENANT_ID")?;
        let file = var("AZURE_FEDERATED_TOKEN_FILE")?;
        let authority = lookup("AZURE_AUTHORITY_HOST")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "https://login.microsoftonline.com/".to_owned());
        let token_url = format!(
            "{}/{}/oauth2/v2.0/token",
            authority.trim_end_matches('/'),
            tenant
        );
        Ok(self
            .token_url(token_url)
            .client_id(client_id)
            .client_assertion_file(file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_azure_recipe_reads_the_webhook_variables() {
        let vars = [
            ("AZURE_CLIENT_ID", "11111111-2222-3333-4444-555555555555"),
            ("AZURE_TENANT_ID", "contoso-tenant"),
            (
                "AZURE_FEDERATED_TOKEN_FILE",
                "/var/run/secrets/azure/tokens/azure-identity-token",
            ),
        ];
        let lookup = |extra: Option<(&'static str, &'static str)>| {
            move |name: &str| {
                vars.iter()
                    .chain(extra.iter())
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let b = ClientCredentialsBuilder::new()
            .azure_lookup(lookup(None))
            .unwrap();
        assert_eq!(
            b.source.token_url.as_deref(),
            Some("https://login.microsoftonline.com/contoso-tenant/oauth2/v2.0/token")
        );
        assert_eq!(
            b.source.client_id.as_deref(),
            Some("11111111-2222-3333-4444-555555555555")
        );
        assert!(matches!(
            &b.source.client_assertion,
            Some(crate::config::auth::AssertionChoice::File(p))
                if p.ends_with("azure-identity-token")
        ));
        let sovereign = ClientCredentialsBuilder::new()
            .azure_lookup(lookup(Some((
                "AZURE_AUTHORITY_HOST",
                "https://login.microsoftonline.us/",
            ))))
            .unwrap();
        assert_eq!(
            sovereign.source.token_url.as_deref(),
            Some("https://login.microsoftonline.us/contoso-tenant/oauth2/v2.0/token")
        );
        let missing = ClientCredentialsBuilder::new()
            .azure_lookup(|name| {
                (name != "AZURE_TENANT_ID")
                    .then(|| vars.iter().find(|(n, _)| *n == name))
                    .flatten()
                    .map(|(_, v)| (*v).to_owned())
            })
            .unwrap_err();
        assert!(
            matches!(&missing, ConfigError::InvalidEnv { name, .. } if name == "AZURE_TENANT_ID"),
            "{missing:?}"
        );
        // The same from the process environment (variables no other test reads).
        for (name, value) in vars {
            std::env::set_var(name, value);
        }
        let from_env = ClientCredentialsBuilder::new()
            .azure_workload_identity()
            .unwrap();
        for (name, _) in vars {
            std::env::remove_var(name);
        }
        assert_eq!(from_env.source.token_url, b.source.token_url);
        assert_eq!(from_env.source.client_id, b.source.client_id);
    }

    #[test]
    fn the_github_provider_needs_an_audience_and_hides_its_request_token() {
        let secret = ClientSecret::new("ghs-request-token-never-shown");
        assert!(GitHubActionsToken::new(
            "https://pipelines.actions.githubusercontent.com/x?api-version=2.0",
            secret.clone(),
            ""
        )
        .is_err());
        let provider = GitHubActionsToken::new(
            "https://pipelines.actions.githubusercontent.com/x?api-version=2.0",
            secret,
            "api://partner",
        )
        .unwrap();
        assert_eq!(
            provider.url.query(),
            Some("api-version=2.0&audience=api%3A%2F%2Fpartner")
        );
        let debug = format!("{provider:?}");
        assert!(
            !debug.contains("never-shown") && !debug.contains("api-version"),
            "{debug}"
        );
        assert!(
            debug.contains("GitHubActionsToken")
                && debug.contains("pipelines.actions.githubusercontent.com/x")
                && debug.contains("[redacted]"),
            "{debug}"
        );
    }
}
