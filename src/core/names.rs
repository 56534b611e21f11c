//! Rules for names, keys and values shared by experiments and runs.
//!
//! Keys follow MLflow's rules so that everything stored here can later be logged to an MLflow
//! server unchanged: letters, digits, `_ - . / : ` and spaces, at most 250 characters, and
//! nothing that reads as a path escaping its directory.

use std::collections::BTreeMap;

use crate::core::validation::Validator;

pub const MAX_KEY_LENGTH: usize = 250;
pub const MAX_PARAM_VALUE_LENGTH: usize = 6000;
pub const MAX_RUN_TAG_VALUE_LENGTH: usize = 8000;
pub const MAX_EXPERIMENT_TAG_VALUE_LENGTH: usize = 5000;
pub const MAX_EXPERIMENT_TAGS: usize = 100;
pub const MAX_NAME_LENGTH: usize = 200;
pub const MAX_DESCRIPTION_LENGTH: usize = 5000;

/// Checks a metric, param or tag key.
pub fn validate_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("must not be empty".into());
    }
    let length = key.chars().count();
    if length > MAX_KEY_LENGTH {
        return Err(format!(
            "must be at most {MAX_KEY_LENGTH} characters, got {length}"
        ));
    }
    if let Some(bad) = key
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':' | ' ')))
    {
        return Err(format!(
            "may contain only letters, digits, spaces and _ - . / :, found {bad:?}"
        ));
    }
    if key.starts_with('/') || key.split('/').any(|part| part == "..") {
        return Err("must not start with / or contain a .. path segment".into());
    }
    Ok(())
}

/// Checks a value's length in characters.
pub fn validate_length(value: &str, max: usize) -> Result<(), String> {
    let length = value.chars().count();
    if length > max {
        return Err(format!("must be at most {max} characters, got {length}"));
    }
    Ok(())
}

/// A display name: trimmed, 1 to 200 characters, no control characters.
pub fn parse_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    validate_length(name, MAX_NAME_LENGTH)?;
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(name.to_owned())
}

/// Validates a tag map, recording errors under `field["key"]`.
pub fn validate_tags(
    v: &mut Validator,
    field: &str,
    tags: &BTreeMap<String, String>,
    max_tags: usize,
    max_value: usize,
) {
    if tags.len() > max_tags {
        v.push(
            field,
            format!("at most {max_tags} tags are allowed, got {}", tags.len()),
        );
    }
    for (key, value) in tags {
        let path = format!("{field}[{key:?}]");
        if let Err(e) = validate_key(key) {
            v.push(format!("{path} (key)"), e);
        }
        if let Err(e) = validate_length(value, max_value) {
            v.push(path, e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_accept_mlflow_style_names() {
        for key in [
            "accuracy",
            "val/loss",
            "lr_0.01",
            "epoch time",
            "a-b:c",
            "précision",
        ] {
            assert_eq!(validate_key(key), Ok(()), "{key}");
        }
    }

    #[test]
    fn keys_reject_empty_long_odd_and_escaping_names() {
        let long = "k".repeat(251);

        for key in [
            "",
            long.as_str(),
            "a\"b",
            "x;drop",
            "/abs",
            "a/../b",
            "new\nline",
        ] {
            assert!(validate_key(key).is_err(), "{key:?} should be rejected");
        }
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(parse_name("  churn  "), Ok("churn".to_owned()));
        assert!(parse_name("   ").is_err());
        assert!(parse_name(&"n".repeat(201)).is_err());
        assert!(parse_name("tab\there").is_err());
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        assert!(validate_length(&"é".repeat(6000), MAX_PARAM_VALUE_LENGTH).is_ok());
        assert!(validate_length(&"é".repeat(6001), MAX_PARAM_VALUE_LENGTH).is_err());
    }
}
