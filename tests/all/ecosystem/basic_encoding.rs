//! `client_secret_basic` encoding: RFC 6749 §2.3.1 form-encodes id and secret before Base64 by
//! default; `form_encode_basic_credentials(false)` sends them as they are.

use base64::Engine as _;
use client_credentials::ClientCredentials;
use wiremock::MockServer;

use crate::support::*;

/// An id and a secret with characters form-encoding changes (space, `:`, `@`, `/`, `+`, `&`,
/// `=`, `%`, `~` and a non-ASCII letter).
const ID: &str = "partner app:7";
const SECRET: &str = "p@ss/w+rd&x=1%~é";

#[tokio::test]
async fn basic_credentials_are_form_encoded_unless_switched_off() {
    // (setting, the `id:secret` string inside the Base64)
    let cases = [
        (None, "partner+app%3A7:p%40ss%2Fw%2Brd%26x%3D1%25%7E%C3%A9"),
        (
            Some(true),
            "partner+app%3A7:p%40ss%2Fw%2Brd%26x%3D1%25%7E%C3%A9",
        ),
        (Some(false), "partner app:7:p@ss/w+rd&x=1%~é"),
    ];
    for (setting, expected) in cases {
        let server = MockServer::start().await;
        mount_token(&server, "tok", 3600).await;
        let mut builder = ClientCredentials::builder()
            .token_url(format!("{}/oauth2/token", server.uri()))
            .client_id(ID)
            .client_secret(SECRET);
        if let Some(encode) = setting {
            builder = builder.form_encode_basic_credentials(encode);
        }
        let credentials = builder.build().unwrap();
        credentials.access_token().await.unwrap();

        let requests = server.received_requests().await.unwrap();
        assert_eq!(requests.len(), 1);
        let value = requests[0]
            .headers
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap();
        let encoded = value.strip_prefix("Basic ").unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert_eq!(String::from_utf8(decoded).unwrap(), expected, "{setting:?}");
        // Neither way puts the credentials in the form body.
        let body = String::from_utf8(requests[0].body.clone()).unwrap();
        assert_eq!(body, "grant_type=client_credentials", "{setting:?}");
    }
}
