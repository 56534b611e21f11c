//! Probes variants' health endpoints over HTTP: a 2xx answer within the timeout is healthy.
//!
//! Redirects are not followed (a 3xx counts as unhealthy: it could point anywhere), no proxy
//! from the environment is used, and every address a host name resolves to is checked
//! against the probe target policy before connecting, so a name that resolves to the cloud's
//! metadata service is refused like the address itself would be.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

use crate::core::deployment::probe_target::ProbeTargetPolicy;
use crate::core::deployment::ProbeResult;
use crate::core::ports::HealthProber;

/// Health answers are read up to this size (so the connection can be reused), then dropped.
const MAX_BODY_BYTES: usize = 64 * 1024;

pub struct HttpProber {
    http: reqwest::Client,
    policy: Arc<ProbeTargetPolicy>,
    timeout: Duration,
}

/// Resolves host names and keeps only the addresses the policy allows.
struct CheckedResolver {
    policy: Arc<ProbeTargetPolicy>,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refusal = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|addr| match policy.check_address(addr.ip()) {
                    Ok(()) => true,
                    Err(why) => {
                        refusal.get_or_insert(why);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = refusal.unwrap_or_else(|| "it has no address".to_owned());
                return Err(format!("{host} cannot be probed: {why}").into());
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

impl HttpProber {
    pub fn new(policy: ProbeTargetPolicy, timeout: Duration) -> anyhow::Result<Self> {
        let policy = Arc::new(policy);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(30))
            .dns_resolver(Arc::new(CheckedResolver {
                policy: policy.clone(),
            }))
            .user_agent(concat!(
                "aumos-mlops-lifecycle-probe/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()?;
        Ok(Self {
            http,
            policy,
            timeout,
        })
    }

    /// Addresses written into the URL skip name resolution, so they are checked here.
    fn check_literal(&self, url: &Url) -> Result<(), String> {
        match url.host() {
            Some(Host::Ipv4(ip)) => self.policy.check_address(ip.into()),
            Some(Host::Ipv6(ip)) => self.policy.check_address(ip.into()),
            _ => Ok(()),
        }
    }

    async fn fetch(&self, url: Url) -> Result<(), String> {
        self.check_literal(&url)?;
        let mut response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| self.describe(&e))?;
        let status = response.status();
        let mut read = 0;
        while read < MAX_BODY_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => read += chunk.len(),
                Ok(None) => break,
                Err(e) => return Err(self.describe(&e)),
            }
        }
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {}", status.as_u16()))
        }
    }

    fn describe(&self, error: &reqwest::Error) -> String {
        if error.is_timeout() {
            return format!("no answer within {} ms", self.timeout.as_millis());
        }
        if error.is_connect() {
            let mut source = std::error::Error::source(error);
            while let Some(inner) = source {
                let text = inner.to_string();
                if text.contains("cannot be probed") {
                    return text;
                }
                source = inner.source();
            }
            return "connection refused or unreachable".into();
        }
        error.to_string()
    }
}

#[async_trait]
impl HealthProber for HttpProber {
    async fn probe(&self, url: &str) -> ProbeResult {
        let at = chrono::Utc::now();
        let started = Instant::now();
        let outcome = match Url::parse(url) {
            Ok(url) => self.fetch(url).await,
            Err(e) => Err(format!("not a URL: {e}")),
        };
        ProbeResult {
            at,
            ok: outcome.is_ok(),
            latency_ms: u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX),
            detail: outcome.err(),
        }
    }
}
