//! The experiment aggregate: a named, tagged container of runs, unique by name per tenant.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::core::names::{self, MAX_DESCRIPTION_LENGTH, MAX_EXPERIMENT_TAGS};
use crate::core::tracking::MlflowLink;
use crate::core::validation::Validator;
use crate::core::{ExperimentId, Result, TenantId};

#[derive(Debug, Clone, PartialEq)]
pub struct Experiment {
    pub id: ExperimentId,
    pub tenant_id: TenantId,
    pub name: String,
    pub description: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
    /// Its copy in MLflow.
    pub mlflow: MlflowLink,
}

/// A validated request to create an experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct NewExperiment {
    name: String,
    description: Option<String>,
    tags: BTreeMap<String, String>,
}

impl NewExperiment {
    /// Checks every field and reports all broken rules together.
    pub fn parse(
        name: &str,
        description: Option<String>,
        tags: BTreeMap<String, String>,
    ) -> Result<Self> {
        let mut v = Validator::new();
        let name = v.check("name", names::parse_name(name));
        let description = description
            .map(|d| d.trim().to_owned())
            .filter(|d| !d.is_empty());
        if let Some(d) = &description {
            v.check(
                "description",
                names::validate_length(d, MAX_DESCRIPTION_LENGTH),
            );
        }
        names::validate_tags(
            &mut v,
            "tags",
            &tags,
            MAX_EXPERIMENT_TAGS,
            names::MAX_EXPERIMENT_TAG_VALUE_LENGTH,
        );
        v.finish(|| Self {
            name: name.unwrap_or_default(),
            description,
            tags,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Experiment {
    /// A new experiment owned by `tenant`, first version.
    pub fn create(tenant: TenantId, new: NewExperiment, now: DateTime<Utc>) -> Self {
        Self {
            id: ExperimentId::generate(),
            tenant_id: tenant,
            name: new.name,
            description: new.description,
            tags: new.tags,
            created_at: now,
            updated_at: now,
            version: 1,
            mlflow: MlflowLink::default(),
        }
    }
}

/// Filters for listing experiments.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExperimentFilter {
    /// Only experiments whose name starts with this text.
    pub name_prefix: Option<String>,
    /// Only experiments carrying this tag; with a value, only where the tag has that value.
    pub tag: Option<TagFilter>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TagFilter {
    pub key: String,
    pub value: Option<String>,
}

impl TagFilter {
    /// Parses `key` or `key:value`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (key, value) = match text.split_once(':') {
            Some((k, v)) => (k, Some(v.to_owned())),
            None => (text, None),
        };
        names::validate_key(key).map_err(|e| format!("tag key {e}; use key or key:value"))?;
        Ok(Self {
            key: key.to_owned(),
            value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Error;

    #[test]
    fn a_valid_experiment_keeps_its_trimmed_name_and_tags() {
        let tags = BTreeMap::from([("team".to_owned(), "vision".to_owned())]);

        let new = NewExperiment::parse(" churn ", Some("  ".into()), tags.clone()).unwrap();
        let experiment = Experiment::create(TenantId::generate(), new, Utc::now());

        assert_eq!(experiment.name, "churn");
        assert_eq!(experiment.description, None);
        assert_eq!(experiment.tags, tags);
        assert_eq!(experiment.version, 1);
    }

    #[test]
    fn every_invalid_field_is_reported_at_once() {
        let tags = BTreeMap::from([("bad key!".to_owned(), "x".to_owned())]);

        let err = NewExperiment::parse("", Some("d".repeat(5001)), tags).unwrap_err();

        let Error::Validation(errors) = err else {
            panic!("expected validation error")
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "description", "tags[\"bad key!\"] (key)"]);
    }

    #[test]
    fn tag_filters_take_a_key_or_a_key_and_value() {
        assert_eq!(
            TagFilter::parse("team:vision").unwrap(),
            TagFilter {
                key: "team".into(),
                value: Some("vision".into())
            }
        );
        assert_eq!(TagFilter::parse("team").unwrap().value, None);
        assert!(TagFilter::parse("bad key!").is_err());
    }
}
