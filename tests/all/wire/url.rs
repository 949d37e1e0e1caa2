//! Token URLs must be HTTPS; plain HTTP only for loopback hosts.

use client_credentials::{ClientCredentials, ConfigError};
use wiremock::MockServer;

use super::common::token_url;
use crate::support::{mount_token, CLIENT_ID, CLIENT_SECRET};

fn build(url: &str) -> Result<ClientCredentials, ConfigError> {
    ClientCredentials::builder()
        .token_url(url)
        .client_id(CLIENT_ID)
        .client_secret(CLIENT_SECRET)
        .build()
}

#[test]
fn plain_http_on_a_non_loopback_host_is_refused() {
    let refused = [
        "http://auth.example.com/oauth2/token",
        "http://my-domain.auth.us-east-1.amazoncognito.com/oauth2/token",
        "http://10.0.0.1/connect/token",
        "http://192.168.1.10:8080/connect/token",
        "http://localhost.evil.example/token",
        "http://127.0.0.1.nip.io/token",
        "HTTP://AUTH.EXAMPLE.COM/oauth2/token",
        "http://[2001:db8::1]/token",
        "http://auth.example.com/oauth2/token?client_secret=leaked-in-query",
    ];
    for url in refused {
        let error = build(url).expect_err(url);
        assert!(
            matches!(error, ConfigError::InsecureTokenUrl(_)),
            "{url}: {error:?}"
        );
        let message = error.to_string();
        assert!(message.contains("HTTPS"), "{url}: {message}");
        assert!(
            message.to_lowercase().contains("/token"),
            "{url}: names the URL: {message}"
        );
        assert!(!message.contains("leaked-in-query"), "{url}: {message}");
        assert!(!message.contains(CLIENT_SECRET), "{url}: {message}");
        // The explicit, loudly named opt-in accepts it.
        assert!(
            ClientCredentials::builder()
                .token_url(url)
                .client_id(CLIENT_ID)
                .client_secret(CLIENT_SECRET)
                .danger_allow_insecure_http(true)
                .build()
                .is_ok(),
            "{url}"
        );
    }
}

#[test]
fn https_and_loopback_http_are_accepted() {
    for url in [
        "https://my-domain.auth.us-east-1.amazoncognito.com/oauth2/token",
        "https://login.example.com/connect/token",
        "http://127.0.0.1:8080/oauth2/token",
        "http://127.0.0.2/oauth2/token",
        "http://localhost:9000/connect/token",
        "http://[::1]:9000/connect/token",
    ] {
        assert!(build(url).is_ok(), "{url}: {:?}", build(url).err());
    }
}

#[tokio::test]
async fn loopback_http_token_url_fetches_a_token() {
    let auth = MockServer::start().await;
    mount_token(&auth, "tok-leak-loopback", 3600).await;
    let url = token_url(&auth);
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let credentials = build(&url).unwrap();
    assert_eq!(
        credentials.access_token().await.unwrap().secret(),
        "tok-leak-loopback"
    );
}
