//! Verifies bearer tokens: signature, algorithm, expiry, not-before, issuer and audience.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{
    decode, decode_header, Algorithm, DecodingKey, EncodingKey, Header, Validation,
};

use crate::api::auth::claims::Claims;
use crate::api::auth::jwks::JwksKeys;
use crate::settings::{AuthSettings, KeySource, Secret};

/// Why a token was refused; the text goes into `WWW-Authenticate` and the problem detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidToken(pub String);

enum Keys {
    Shared(DecodingKey),
    Jwks(JwksKeys),
}

/// Checks tokens against the configured keys and claims.
pub struct Authenticator {
    keys: Keys,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
}

impl Authenticator {
    /// Builds the verifier; a development secret is read from (or first written to) its file.
    pub fn from_settings(settings: &AuthSettings) -> anyhow::Result<Self> {
        let keys = match &settings.keys {
            KeySource::Secret(secret) => {
                Keys::Shared(DecodingKey::from_secret(secret.expose().as_bytes()))
            }
            KeySource::DevelopmentSecretFile(path) => {
                let secret = development_secret(path)?;
                Keys::Shared(DecodingKey::from_secret(secret.expose().as_bytes()))
            }
            KeySource::Jwks { url, refresh } => Keys::Jwks(JwksKeys::new(url.clone(), *refresh)),
        };
        Ok(Self {
            keys,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            leeway: settings.leeway_seconds,
        })
    }

    pub async fn verify(&self, token: &str) -> Result<Claims, InvalidToken> {
        let header = decode_header(token)
            .map_err(|_| InvalidToken("the bearer token is not a well-formed JWT".into()))?;
        let (key, algorithm) = match &self.keys {
            Keys::Shared(key) => (key.clone(), Algorithm::HS256),
            Keys::Jwks(jwks) => {
                let kid = header
                    .kid
                    .as_deref()
                    .ok_or_else(|| InvalidToken("the token header has no `kid`".into()))?;
                let found = jwks
                    .key(kid)
                    .await
                    .ok_or_else(|| InvalidToken(format!("no verification key with kid {kid:?}")))?;
                (found.key, found.algorithm)
            }
        };
        if header.alg != algorithm {
            return Err(InvalidToken(format!(
                "tokens must be signed with {algorithm:?}, this one says {:?}",
                header.alg
            )));
        }
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &self.issuer {
            Some(issuer) => validation.set_issuer(&[issuer]),
            None => validation.iss = None,
        }
        match &self.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        decode::<Claims>(token, &key, &validation)
            .map(|data| data.claims)
            .map_err(describe)
    }
}

fn describe(error: jsonwebtoken::errors::Error) -> InvalidToken {
    use jsonwebtoken::errors::ErrorKind;
    let text = match error.kind() {
        ErrorKind::ExpiredSignature => "the token has expired",
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf is in the future)",
        ErrorKind::InvalidSignature => "the token signature does not verify",
        ErrorKind::InvalidIssuer => "the token was issued by an issuer this service does not trust",
        ErrorKind::InvalidAudience => "the token is meant for another audience",
        ErrorKind::MissingRequiredClaim(claim) => {
            return InvalidToken(format!("the token lacks the required `{claim}` claim"))
        }
        ErrorKind::InvalidAlgorithm => "the token is signed with an algorithm this service refuses",
        _ => "the bearer token is invalid",
    };
    InvalidToken(text.into())
}

/// Reads the development secret, creating it (readable by the owner only) on first use.
pub fn development_secret(path: &Path) -> anyhow::Result<Secret> {
    if let Ok(text) = std::fs::read_to_string(path) {
        return Ok(Secret::new(text.trim().to_owned()));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut bytes = [0u8; 48];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut bytes);
    let secret = URL_SAFE_NO_PAD.encode(bytes);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            std::io::Write::write_all(&mut file, secret.as_bytes())?;
            Ok(Secret::new(secret))
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(Secret::new(
            std::fs::read_to_string(path)?.trim().to_owned(),
        )),
        Err(e) => Err(anyhow::anyhow!(
            "cannot write the development secret {}: {e}",
            path.display()
        )),
    }
}

/// Signs `claims` with an HS256 secret (the `token` command and the tests use this).
pub fn mint(secret: &Secret, claims: &Claims) -> anyhow::Result<String> {
    let key = EncodingKey::from_secret(secret.expose().as_bytes());
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &key,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_development_secret_is_created_once_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dev-jwt-secret");

        let first = development_secret(&path).unwrap();
        let second = development_secret(&path).unwrap();

        assert_eq!(first, second);
        assert!(first.expose().len() >= 32);
    }
}
