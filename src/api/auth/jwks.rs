//! Verification keys fetched from a JWKS endpoint, cached, and refreshed on a schedule or when a
//! token names a key the cache does not hold yet (at most once per `MIN_REFETCH`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::Mutex;
use url::Url;

/// Unknown key ids never make the service fetch the JWKS more often than this.
const MIN_REFETCH: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct VerificationKey {
    pub key: DecodingKey,
    pub algorithm: Algorithm,
}

struct Cache {
    keys: HashMap<String, VerificationKey>,
    fetched_at: Option<Instant>,
}

pub struct JwksKeys {
    url: Url,
    refresh: Duration,
    client: reqwest::Client,
    cache: Mutex<Cache>,
}

impl JwksKeys {
    pub fn new(url: Url, refresh: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            url,
            refresh,
            client,
            cache: Mutex::new(Cache {
                keys: HashMap::new(),
                fetched_at: None,
            }),
        }
    }

    /// The key for `kid`, fetching the set when it is stale or lacks that key.
    pub async fn key(&self, kid: &str) -> Option<VerificationKey> {
        let mut cache = self.cache.lock().await;
        let age = cache.fetched_at.map(|t| t.elapsed());
        let stale = age.is_none_or(|a| a >= self.refresh);
        let missing = !cache.keys.contains_key(kid) && age.is_none_or(|a| a >= MIN_REFETCH);
        if stale || missing {
            match self.fetch().await {
                Ok(keys) => {
                    tracing::debug!(jwks.keys = keys.len(), "verification keys refreshed");
                    cache.keys = keys;
                }
                Err(error) => {
                    tracing::warn!(%error, jwks.url = %self.url, "cannot refresh verification keys; \
                        keeping the cached ones");
                }
            }
            cache.fetched_at = Some(Instant::now());
        }
        cache.keys.get(kid).cloned()
    }

    async fn fetch(&self) -> anyhow::Result<HashMap<String, VerificationKey>> {
        let set: JwkSet = self
            .client
            .get(self.url.clone())
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            let algorithm = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                    Algorithm::ES256
                }
                AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P384 => {
                    Algorithm::ES384
                }
                _ => continue,
            };
            // A key that declares its algorithm is only accepted with that algorithm.
            let algorithm = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok())
                .unwrap_or(algorithm);
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.insert(kid, VerificationKey { key, algorithm });
            }
        }
        Ok(keys)
    }
}
