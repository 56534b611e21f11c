//! The claims a bearer token carries, and the scopes they grant.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Reading any resource of the tenant.
pub const SCOPE_READ: &str = "mlops:read";
/// Creating or changing resources of the tenant.
pub const SCOPE_WRITE: &str = "mlops:write";

/// Token claims. `tenants` (a list) or `tenant_id` (one) say which tenants the bearer may act
/// for; `scope` (space-separated, RFC 8693) or `scp` (a list) say what it may do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scp: Vec<String>,
}

impl Claims {
    /// True when the token names `tenant` among its tenants.
    pub fn covers_tenant(&self, tenant: Uuid) -> bool {
        self.tenants
            .iter()
            .map(String::as_str)
            .chain(self.tenant_id.as_deref())
            .any(|t| Uuid::parse_str(t).is_ok_and(|t| t == tenant))
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .any(|s| s == scope)
            || self.scp.iter().any(|s| s == scope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(json: serde_json::Value) -> Claims {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn tenants_may_be_a_list_or_a_single_claim() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();

        let listed = claims(serde_json::json!({"sub": "x", "exp": 1, "tenants": [a.to_string()]}));
        let single = claims(serde_json::json!({"sub": "x", "exp": 1, "tenant_id": b.to_string()}));

        assert!(listed.covers_tenant(a) && !listed.covers_tenant(b));
        assert!(single.covers_tenant(b) && !single.covers_tenant(a));
    }

    #[test]
    fn scopes_may_be_a_string_or_a_list() {
        let spaced = claims(serde_json::json!({"sub": "x", "exp": 1, "scope": "a mlops:read"}));
        let listed = claims(serde_json::json!({"sub": "x", "exp": 1, "scp": ["mlops:write"]}));

        assert!(spaced.has_scope(SCOPE_READ) && !spaced.has_scope(SCOPE_WRITE));
        assert!(listed.has_scope(SCOPE_WRITE) && !listed.has_scope(SCOPE_READ));
    }
}
