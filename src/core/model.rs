//! Registered models: the runs promoted into MLflow's model registry, by name, with their
//! versions and the aliases (such as `champion`) pointing at them. A deployment names a model
//! and one of its versions.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::core::events::{AggregateKind, DomainEvent};
use crate::core::tracking::RegisteredVersion;
use crate::core::validation::Validator;
use crate::core::{ExperimentId, ModelId, RunId, TenantId};

pub const DEFAULT_ALIAS: &str = "champion";
pub const MAX_MODEL_NAME_LENGTH: usize = 100;
pub const MAX_ALIAS_LENGTH: usize = 100;

#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub id: ModelId,
    pub tenant_id: TenantId,
    /// The name the tenant chose.
    pub name: String,
    /// The registered model's name in MLflow (namespaced by tenant).
    pub mlflow_name: String,
    /// Alias → version number.
    pub aliases: BTreeMap<String, i64>,
    /// Oldest first.
    pub versions: Vec<ModelVersion>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Model {
    /// The aliases pointing at `version`.
    pub fn aliases_of(&self, version: i64) -> Vec<String> {
        self.aliases
            .iter()
            .filter(|(_, v)| **v == version)
            .map(|(alias, _)| alias.clone())
            .collect()
    }
}

/// One promoted run: a version of a registered model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelVersion {
    pub version: i64,
    pub run_id: RunId,
    pub experiment_id: ExperimentId,
    pub mlflow_run_id: String,
    /// Where the model's files are, as MLflow knows it: `runs:/<mlflow run id>/model`.
    pub source: String,
    pub created_at: DateTime<Utc>,
}

/// A validated request to promote a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromotionRequest {
    pub model_name: String,
    pub alias: String,
}

impl PromotionRequest {
    /// Checks the model name and alias; every broken rule is reported.
    pub fn parse(v: &mut Validator, model_name: &str, alias: Option<&str>) -> Self {
        let model_name = model_name.trim();
        v.check("model_name", check_model_name(model_name));
        let alias = alias.map(str::trim).unwrap_or(DEFAULT_ALIAS);
        v.check("alias", check_alias(alias));
        Self {
            model_name: model_name.to_owned(),
            alias: alias.to_owned(),
        }
    }
}

/// MLflow refuses `/` and `:` in registered model names; the service keeps to letters,
/// digits, `_`, `-` and `.` so the namespaced name is always valid there.
fn check_model_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.chars().count() > MAX_MODEL_NAME_LENGTH {
        return Err(format!(
            "must be at most {MAX_MODEL_NAME_LENGTH} characters"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "may contain only letters, digits, '_', '-' and '.', found {bad:?}"
        ));
    }
    Ok(())
}

/// MLflow's alias rules: letters, digits, `_` and `-`; not `latest` and not `v<number>`,
/// which MLflow reserves for version references.
fn check_alias(alias: &str) -> Result<(), String> {
    if alias.is_empty() || alias.len() > MAX_ALIAS_LENGTH {
        return Err(format!("must be 1 to {MAX_ALIAS_LENGTH} characters"));
    }
    if let Some(bad) = alias
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-')))
    {
        return Err(format!(
            "may contain only letters, digits, '_' and '-', found {bad:?}"
        ));
    }
    let lower = alias.to_ascii_lowercase();
    let version_like =
        lower.len() > 1 && lower.starts_with('v') && lower[1..].chars().all(|c| c.is_ascii_digit());
    if lower == "latest" || version_like {
        return Err(format!(
            "{alias:?} is reserved by MLflow for version references"
        ));
    }
    Ok(())
}

/// What a successful promotion records.
#[derive(Debug, Clone, PartialEq)]
pub struct Promotion {
    pub tenant: TenantId,
    /// The model's id if it is new; an existing model of that name keeps its own.
    pub proposed_model_id: ModelId,
    pub model_name: String,
    pub alias: String,
    pub run_id: RunId,
    pub experiment_id: ExperimentId,
    pub mlflow_run_id: String,
    pub registered: RegisteredVersion,
    pub at: DateTime<Utc>,
}

impl Promotion {
    /// The event recording that `version` of model `model` now carries the alias.
    pub fn event(&self, model: ModelId) -> DomainEvent {
        let data = json!({
            "model_id": model,
            "model_name": self.model_name,
            "version": self.registered.version,
            "alias": self.alias,
            "run_id": self.run_id,
            "experiment_id": self.experiment_id,
            "mlflow_name": self.registered.name,
            "source": self.registered.source,
        });
        DomainEvent::new(
            self.tenant,
            AggregateKind::Model,
            *model.as_uuid(),
            "version_promoted",
            data,
            self.at,
        )
    }
}

/// Which way a metric is better when picking the best run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Max,
    Min,
}

impl std::str::FromStr for Direction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "max" => Ok(Self::Max),
            "min" => Ok(Self::Min),
            other => Err(format!("expected max or min, got {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_promotion_defaults_to_the_champion_alias() {
        let mut v = Validator::new();

        let request = PromotionRequest::parse(&mut v, "churn-model", None);

        assert!(v.is_empty());
        assert_eq!(request.alias, "champion");
    }

    #[test]
    fn names_and_aliases_mlflow_would_refuse_are_reported_together() {
        let mut v = Validator::new();

        PromotionRequest::parse(&mut v, "team/churn", Some("v2"));

        let err = v.finish(|| ()).unwrap_err();
        let text = format!("{err:?}");
        assert!(
            text.contains("model_name") && text.contains("alias"),
            "{text}"
        );
    }

    #[test]
    fn aliases_are_listed_under_their_version() {
        let model = Model {
            id: ModelId::generate(),
            tenant_id: TenantId::generate(),
            name: "m".into(),
            mlflow_name: "t.m".into(),
            aliases: BTreeMap::from([("champion".into(), 2), ("challenger".into(), 3)]),
            versions: Vec::new(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };

        assert_eq!(model.aliases_of(2), ["champion"]);
        assert!(model.aliases_of(1).is_empty());
    }
}
