use aumos_mlops_lifecycle::api::auth::{mint, SCOPE_READ, SCOPE_WRITE};
use aumos_mlops_lifecycle::settings::Secret;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{claims, expect_problem, expect_status, Backend, TestApp};

const RSA_KEY: &[u8] = include_bytes!("../fixtures/jwks-test-key.pem");
const JWKS: &str = include_str!("../fixtures/jwks-test.json");

async fn call(
    app: &TestApp,
    method: Method,
    token: Option<&str>,
    tenant: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .client
        .request(method.clone(), app.url("/api/v1/experiments"));
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    if let Some(tenant) = tenant {
        request = request.header("X-Tenant-ID", tenant);
    }
    if method == Method::POST {
        request = request.json(&json!({"name": format!("e-{}", Uuid::now_v7())}));
    }
    request.send().await.unwrap()
}

/// Asserts 401 with a Bearer challenge.
async fn expect_unauthorized(response: reqwest::Response) {
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    expect_problem(response, StatusCode::UNAUTHORIZED).await;
    assert!(
        challenge.unwrap_or_default().starts_with("Bearer realm="),
        "WWW-Authenticate is set"
    );
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test]
async fn requests_without_a_valid_bearer_token_are_unauthorized() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let tenant = app.tenant.to_string();
    let read_write = [SCOPE_READ, SCOPE_WRITE];
    let expired = mint(&app.secret, &claims(app.tenant, &read_write, now() - 3600)).unwrap();
    let mut future = claims(app.tenant, &read_write, now() + 3600);
    future.nbf = Some(now() + 600);
    let not_yet = mint(&app.secret, &future).unwrap();
    let other_secret = Secret::new("another-secret-that-is-long-enough-0123456789");
    let forged = mint(
        &other_secret,
        &claims(app.tenant, &read_write, now() + 3600),
    )
    .unwrap();
    let payload = URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&claims(app.tenant, &read_write, now() + 3600)).unwrap());
    let unsigned = format!(
        "{}.{payload}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#)
    );

    let cases = [
        call(&app, Method::GET, None, Some(&tenant)).await,
        call(&app, Method::GET, Some("not-a-jwt"), Some(&tenant)).await,
        call(&app, Method::GET, Some(&expired), Some(&tenant)).await,
        call(&app, Method::GET, Some(&not_yet), Some(&tenant)).await,
        call(&app, Method::GET, Some(&forged), Some(&tenant)).await,
        call(&app, Method::GET, Some(&unsigned), Some(&tenant)).await,
    ];

    for response in cases {
        expect_unauthorized(response).await;
    }
    let basic = app
        .client
        .get(app.url("/api/v1/experiments"))
        .header("Authorization", "Basic dXNlcjpwYXNz")
        .header("X-Tenant-ID", &tenant)
        .send()
        .await
        .unwrap();
    expect_unauthorized(basic).await;
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("AUMOS_AUTH__ISSUER", "https://id.example"),
            ("AUMOS_AUTH__AUDIENCE", "aumos-mlops"),
        ],
    )
    .await;
    let tenant = app.tenant.to_string();
    let token = |iss: &str, aud: &str| {
        let mut c = claims(app.tenant, &[SCOPE_READ], now() + 600);
        c.iss = Some(iss.into());
        c.aud = Some(aud.into());
        mint(&app.secret, &c).unwrap()
    };

    let right = call(
        &app,
        Method::GET,
        Some(&token("https://id.example", "aumos-mlops")),
        Some(&tenant),
    )
    .await;
    let wrong_issuer = call(
        &app,
        Method::GET,
        Some(&token("https://evil", "aumos-mlops")),
        Some(&tenant),
    )
    .await;
    let wrong_audience = call(
        &app,
        Method::GET,
        Some(&token("https://id.example", "other")),
        Some(&tenant),
    )
    .await;

    expect_status(right, StatusCode::OK).await;
    expect_unauthorized(wrong_issuer).await;
    expect_unauthorized(wrong_audience).await;
}

#[tokio::test]
async fn the_tenant_header_must_be_a_uuid_the_token_covers() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.token_for(app.tenant, &[SCOPE_READ, SCOPE_WRITE]);

    let missing = call(&app, Method::GET, Some(&token), None).await;
    let malformed = call(&app, Method::GET, Some(&token), Some("tenant-a")).await;
    let other = call(
        &app,
        Method::GET,
        Some(&token),
        Some(&Uuid::now_v7().to_string()),
    )
    .await;

    expect_problem(missing, StatusCode::BAD_REQUEST).await;
    expect_problem(malformed, StatusCode::BAD_REQUEST).await;
    expect_problem(other, StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn reading_and_writing_need_their_own_scopes() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let tenant = app.tenant.to_string();
    let reader = app.token_for(app.tenant, &[SCOPE_READ]);
    let writer = app.token_for(app.tenant, &[SCOPE_WRITE]);

    let read_with_reader = call(&app, Method::GET, Some(&reader), Some(&tenant)).await;
    let write_with_reader = call(&app, Method::POST, Some(&reader), Some(&tenant)).await;
    let read_with_writer = call(&app, Method::GET, Some(&writer), Some(&tenant)).await;
    let write_with_writer = call(&app, Method::POST, Some(&writer), Some(&tenant)).await;

    expect_status(read_with_reader, StatusCode::OK).await;
    let challenge = write_with_reader.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    expect_problem(write_with_reader, StatusCode::FORBIDDEN).await;
    assert!(challenge.contains("insufficient_scope"), "{challenge}");
    expect_problem(read_with_writer, StatusCode::FORBIDDEN).await;
    expect_status(write_with_writer, StatusCode::CREATED).await;
}

/// Serves the test JWKS and returns its URL.
async fn serve_jwks() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let router = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(|| async { ([("content-type", "application/json")], JWKS) }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://127.0.0.1:{port}/.well-known/jwks.json")
}

#[tokio::test]
async fn tokens_signed_with_a_key_from_the_jwks_are_accepted() {
    let jwks_url = serve_jwks().await;
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("AUMOS_AUTH__JWT_SECRET", ""),
            ("AUMOS_AUTH__JWKS_URL", &jwks_url),
        ],
    )
    .await;
    let tenant = app.tenant.to_string();
    let key = EncodingKey::from_rsa_pem(RSA_KEY).unwrap();
    let signed = |kid: &str| {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(
            &header,
            &claims(app.tenant, &[SCOPE_READ], now() + 600),
            &key,
        )
        .unwrap()
    };
    // An HS256 token "signed" with the public key must not pass as RS256 (algorithm confusion).
    let hs256 = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("test-key-1".into());
        let key = EncodingKey::from_secret(JWKS.as_bytes());
        jsonwebtoken::encode(
            &header,
            &claims(app.tenant, &[SCOPE_READ], now() + 600),
            &key,
        )
        .unwrap()
    };

    let known = call(
        &app,
        Method::GET,
        Some(&signed("test-key-1")),
        Some(&tenant),
    )
    .await;
    let unknown = call(
        &app,
        Method::GET,
        Some(&signed("rotated-away")),
        Some(&tenant),
    )
    .await;
    let confused = call(&app, Method::GET, Some(&hs256), Some(&tenant)).await;

    expect_status(known, StatusCode::OK).await;
    expect_unauthorized(unknown).await;
    expect_unauthorized(confused).await;
}
