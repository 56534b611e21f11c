//! The settings as a whole: defaults, names in errors, secrets, and `.env.example`.

use super::*;

fn load(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
    Settings::from_vars(
        vars.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

#[test]
fn no_configuration_gives_the_embedded_development_defaults() {
    let settings = load(&[]).unwrap();

    assert_eq!(settings.service_name, "aumos-mlops-lifecycle");
    assert_eq!(settings.environment, Environment::Development);
    assert_eq!(settings.http.port, 8000);
    assert_eq!(settings.http.host.to_string(), "0.0.0.0");
    assert!(matches!(&settings.database.backend,
        DatabaseBackend::Sqlite { path } if path == &PathBuf::from("data/mlops.db")));
    assert_eq!(settings.kafka.brokers, vec!["localhost:9092".to_owned()]);
    assert_eq!(
        settings.mlops.mlflow_tracking_uri.unwrap().as_str(),
        "http://localhost:5000/"
    );
    assert_eq!(settings.mlops.feast_registry_path, "data/registry.db");
    assert!((settings.mlops.canary_error_threshold - 0.05).abs() < f64::EPSILON);
    assert_eq!(settings.mlops.canary_step_percent, 10);
    assert_eq!(settings.mlops.max_concurrent_retraining_jobs, 5);
    assert!(matches!(
        settings.auth.keys,
        KeySource::DevelopmentSecretFile(_)
    ));
}

#[test]
fn nested_and_flat_variables_are_read() {
    let settings = load(&[
        ("AUMOS_HTTP__PORT", "9100"),
        ("AUMOS_DATABASE__URL", "postgres://app@db/aumos"),
        ("AUMOS_MLOPS_CANARY_STEP_PERCENT", "25"),
        ("AUMOS_KAFKA__BROKERS", "a:9092, b:9092"),
    ])
    .unwrap();

    assert_eq!(settings.http.port, 9100);
    assert!(matches!(
        settings.database.backend,
        DatabaseBackend::Postgres { .. }
    ));
    assert_eq!(settings.mlops.canary_step_percent, 25);
    assert_eq!(
        settings.kafka.brokers,
        vec!["a:9092".to_owned(), "b:9092".to_owned()]
    );
}

#[test]
fn a_bad_value_is_reported_with_the_variable_name() {
    let port = load(&[("AUMOS_HTTP__PORT", "eighty")]).unwrap_err();
    let threshold = load(&[("AUMOS_MLOPS_CANARY_ERROR_THRESHOLD", "1.5")]).unwrap_err();
    let step = load(&[("AUMOS_MLOPS_CANARY_STEP_PERCENT", "0")]).unwrap_err();
    let db = load(&[("AUMOS_DATABASE__URL", "mysql://x")]).unwrap_err();

    assert_eq!(port.variable, "AUMOS_HTTP__PORT");
    assert!(port.to_string().contains("eighty"));
    assert_eq!(threshold.variable, "AUMOS_MLOPS_CANARY_ERROR_THRESHOLD");
    assert_eq!(step.variable, "AUMOS_MLOPS_CANARY_STEP_PERCENT");
    assert_eq!(db.variable, "AUMOS_DATABASE__URL");
}

#[test]
fn empty_brokers_and_tracking_uri_turn_those_integrations_off() {
    let settings = load(&[
        ("AUMOS_KAFKA__BROKERS", ""),
        ("AUMOS_MLOPS_MLFLOW_TRACKING_URI", ""),
    ])
    .unwrap();

    assert!(settings.kafka.brokers.is_empty());
    assert!(settings.mlops.mlflow_tracking_uri.is_none());
}

#[test]
fn production_refuses_to_start_without_a_token_key() {
    let err = load(&[("AUMOS_ENVIRONMENT", "production")]).unwrap_err();

    assert_eq!(err.variable, "AUMOS_AUTH__JWT_SECRET");
}

#[test]
fn short_secrets_are_refused() {
    let err = load(&[("AUMOS_AUTH__JWT_SECRET", "short")]).unwrap_err();

    assert_eq!(err.variable, "AUMOS_AUTH__JWT_SECRET");
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let settings = load(&[
        (
            "AUMOS_AUTH__JWT_SECRET",
            "a-very-secret-value-of-enough-length-123",
        ),
        (
            "AUMOS_DATABASE__URL",
            "postgres://app:hunter2-password@db/aumos",
        ),
    ])
    .unwrap();

    let printed = format!("{settings:?}");

    assert!(!printed.contains("a-very-secret-value"), "{printed}");
    assert!(!printed.contains("hunter2-password"), "{printed}");
}

#[test]
fn unknown_aumos_variables_are_reported() {
    let settings = load(&[("AUMOS_HTTP_PORT", "1")]).unwrap();

    assert_eq!(
        settings.unknown_variables,
        vec!["AUMOS_HTTP_PORT".to_owned()]
    );
}

#[test]
fn env_example_lists_every_variable() {
    let example = include_str!("../../.env.example");

    for (name, default, _) in all_variables() {
        let line = format!("{name}={default}");
        assert!(
            example.lines().any(|l| l.trim_start_matches("# ") == line),
            ".env.example lacks `{line}`"
        );
    }
}

#[test]
fn deployment_defaults_come_from_their_variables() {
    let settings = load(&[
        ("AUMOS_MLOPS_CANARY_STEP_PERCENT", "25"),
        ("AUMOS_MLOPS_PROBE_INTERVAL_SECONDS", "0.5"),
        ("AUMOS_MLOPS_PROBE_ALLOWED_NETWORKS", "169.254.10.0/24"),
        ("AUMOS_CONTROLLER__ENABLED", "false"),
    ])
    .unwrap();

    let defaults = &settings.rollout.defaults;
    assert_eq!(defaults.analysis.step_percent, 25);
    assert_eq!(defaults.analysis.probe_interval_ms, 500);
    assert!(defaults
        .probe_targets
        .check_url("http://169.254.10.7/health")
        .is_ok());
    assert!(!settings.rollout.controller.enabled);
}

#[test]
fn an_analysis_window_shorter_than_a_probe_interval_is_refused() {
    let error = load(&[
        ("AUMOS_MLOPS_PROBE_INTERVAL_SECONDS", "10"),
        ("AUMOS_MLOPS_ANALYSIS_WINDOW_SECONDS", "5"),
    ])
    .unwrap_err();
    let bad_network = load(&[("AUMOS_MLOPS_PROBE_ALLOWED_NETWORKS", "10.0.0.0/99")]).unwrap_err();

    assert!(
        error
            .to_string()
            .contains("AUMOS_MLOPS_ANALYSIS_WINDOW_SECONDS"),
        "{error}"
    );
    assert!(
        bad_network
            .to_string()
            .contains("AUMOS_MLOPS_PROBE_ALLOWED_NETWORKS"),
        "{bad_network}"
    );
}
