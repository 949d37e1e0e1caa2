//! The token request on the wire (RFC 6749 §4.4.2, §2.3.1): method, headers, client
//! authentication, form body.

use client_credentials::{AuthMethod, ClientCredentials};
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use super::common::*;
use crate::support::token_body;

const AUDIENCE: &str = "https://api.example.com/";
const RESOURCE: &str = "https://rs.example.com/v1?x=1&y=a b";

fn header<'a>(request: &'a Request, name: &http::HeaderName) -> Vec<&'a str> {
    request
        .headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().expect("visible ASCII header"))
        .collect()
}

/// Checks what every token request has, whatever the client authentication.
fn assert_common_shape(request: &Request) {
    assert_eq!(request.method, http::Method::POST);
    assert_eq!(request.url.path(), "/oauth2/token");
    assert_eq!(
        request.url.query(),
        None,
        "parameters go in the body, not the URL"
    );
    assert_eq!(
        header(request, &CONTENT_TYPE),
        ["application/x-www-form-urlencoded"]
    );
    assert_eq!(header(request, &ACCEPT), ["application/json"]);
}

/// RFC 6749 §2.3.1 on the server side: base64-decode, split at the first `:`, form-decode
/// each half.
fn decode_basic(value: &str) -> (String, String) {
    use base64::Engine as _;
    let encoded = value.strip_prefix("Basic ").expect("Basic scheme");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("valid base64");
    let raw = String::from_utf8(raw).expect("UTF-8");
    let (id, secret) = raw.split_once(':').expect("id:secret");
    let decode = |s: &str| -> String {
        form_urlencoded::parse(format!("v={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    (decode(id), decode(secret))
}

struct Case {
    name: &'static str,
    method: AuthMethod,
    scopes: &'static [&'static str],
    params: &'static [(&'static str, &'static str)],
    /// Expected form pairs besides the client credentials of `client_secret_post`.
    form: &'static [(&'static str, &'static str)],
}

const CASES: &[Case] = &[
    Case {
        name: "basic, scopes and extra parameters",
        method: AuthMethod::ClientSecretBasic,
        scopes: &["accounts.read", "https://api.example.com/accounts.write"],
        params: &[("audience", AUDIENCE), ("resource", RESOURCE)],
        form: &[
            ("grant_type", "client_credentials"),
            (
                "scope",
                "accounts.read https://api.example.com/accounts.write",
            ),
            ("audience", AUDIENCE),
            ("resource", RESOURCE),
        ],
    },
    Case {
        name: "basic, no scopes, no parameters",
        method: AuthMethod::ClientSecretBasic,
        scopes: &[],
        params: &[],
        form: &[("grant_type", "client_credentials")],
    },
    Case {
        name: "post, scopes and extra parameters",
        method: AuthMethod::ClientSecretPost,
        scopes: &["accounts.read", "https://api.example.com/accounts.write"],
        params: &[("audience", AUDIENCE), ("resource", RESOURCE)],
        form: &[
            ("grant_type", "client_credentials"),
            (
                "scope",
                "accounts.read https://api.example.com/accounts.write",
            ),
            ("audience", AUDIENCE),
            ("resource", RESOURCE),
        ],
    },
    Case {
        name: "post, no scopes, no parameters",
        method: AuthMethod::ClientSecretPost,
        scopes: &[],
        params: &[],
        form: &[("grant_type", "client_credentials")],
    },
];

#[tokio::test]
async fn token_request_wire_format_for_basic_and_post() {
    for case in CASES {
        let name = case.name;
        let auth = MockServer::start().await;
        let mut expected_form: Vec<(&str, &str)> = case.form.to_vec();
        if case.method == AuthMethod::ClientSecretPost {
            expected_form.push(("client_id", ODD_ID));
            expected_form.push(("client_secret", ODD_SECRET));
        }
        // The mock answers only a request whose decoded form is exactly the expected one.
        Mock::given(method("POST"))
            .and(path("/oauth2/token"))
            .and(FormBody::exactly(&expected_form))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(token_body("tok-leak-wire", 3600)),
            )
            .expect(1)
            .named(name)
            .mount(&auth)
            .await;
        let mut builder = ClientCredentials::builder()
            .token_url(token_url(&auth))
            .client_id(ODD_ID)
            .client_secret(ODD_SECRET)
            .auth_method(case.method)
            .scopes(
                case.scopes
                    .iter()
                    .copied()
                    .collect::<client_credentials::Scopes>(),
            );
        for (k, v) in case.params {
            builder = builder.param(*k, *v);
        }
        let credentials = builder.build().unwrap();
        let token = credentials.access_token().await.unwrap();
        assert_eq!(token.secret(), "tok-leak-wire", "{name}");

        let request = only_request(&auth).await;
        assert_common_shape(&request);
        let form = form_pairs(&request.body);
        assert_eq!(form, pairs(&expected_form), "{name}");
        assert_eq!(
            form.iter().any(|(k, _)| k == "scope"),
            !case.scopes.is_empty(),
            "{name}: scope is sent exactly when scopes are configured"
        );
        let body = std::str::from_utf8(&request.body).expect("form bodies are ASCII");
        match case.method {
            AuthMethod::ClientSecretBasic => {
                let authorization = header(&request, &AUTHORIZATION);
                assert_eq!(
                    authorization,
                    [format!(
                        "Basic {}",
                        base64_pair(ODD_ID_FORM, ODD_SECRET_FORM)
                    )],
                    "{name}: base64(form-urlencode(id) \":\" form-urlencode(secret))"
                );
                // And a server following RFC 6749 §2.3.1 reads back the original values.
                assert_eq!(
                    decode_basic(authorization[0]),
                    (ODD_ID.to_owned(), ODD_SECRET.to_owned()),
                    "{name}"
                );
                assert!(!body.contains("client_secret"), "{name}: {body}");
                assert!(!body.contains("client_id"), "{name}: {body}");
            }
            AuthMethod::ClientSecretPost => {
                assert!(
                    header(&request, &AUTHORIZATION).is_empty(),
                    "{name}: no Authorization header with client_secret_post"
                );
                // The raw body carries the hand-encoded forms: a literal `+` or `%` would be
                // misread by the server as a space or an escape.
                assert!(
                    body.contains(&format!("client_id={ODD_ID_FORM}")),
                    "{name}: {body}"
                );
                assert!(
                    body.contains(&format!("client_secret={ODD_SECRET_FORM}")),
                    "{name}"
                );
            }
            _ => unreachable!("only the two methods are tested"),
        }
        if !case.scopes.is_empty() {
            // Space-separated, form-encoded as `+`.
            assert!(
                body.contains("scope=accounts.read+https%3A%2F%2Fapi.example.com%2Faccounts.write"),
                "{name}: {body}"
            );
        }
    }
}

#[tokio::test]
async fn basic_without_form_encoding_sends_id_and_secret_raw() {
    let auth = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body("tok-leak-raw", 3600)))
        .expect(1)
        .mount(&auth)
        .await;
    let credentials = ClientCredentials::builder()
        .token_url(token_url(&auth))
        .client_id(ODD_ID)
        .client_secret(ODD_SECRET)
        .form_encode_basic_credentials(false)
        .build()
        .unwrap();
    assert_eq!(
        credentials.access_token().await.unwrap().secret(),
        "tok-leak-raw"
    );
    let request = only_request(&auth).await;
    assert_common_shape(&request);
    assert_eq!(
        header(&request, &AUTHORIZATION),
        [format!("Basic {}", base64_pair(ODD_ID, ODD_SECRET))]
    );
    assert_eq!(
        form_pairs(&request.body),
        pairs(&[("grant_type", "client_credentials")])
    );
}

#[tokio::test]
async fn repeated_parameters_and_duplicate_scopes() {
    let auth = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body("tok-leak-rep", 3600)))
        .expect(1)
        .mount(&auth)
        .await;
    let credentials = crate::support::builder(&auth)
        // `scopes` replaces what was set before (as `RequestOptions::scopes` does).
        .scopes("replaced")
        .scopes(["a", "b", "a"])
        .param("resource", "https://one.example/")
        .param("resource", "https://two.example/")
        .build()
        .unwrap();
    credentials.access_token().await.unwrap();
    let request = only_request(&auth).await;
    // RFC 8707 allows several `resource` parameters; scopes are sent once each, in order, the
    // ones set by the last call only.
    let raw: Vec<(String, String)> = form_urlencoded::parse(&request.body).into_owned().collect();
    let resources: Vec<&str> = raw
        .iter()
        .filter(|(k, _)| k == "resource")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(resources, ["https://one.example/", "https://two.example/"]);
    let scope: Vec<&str> = raw
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(scope, ["a b"]);
}
