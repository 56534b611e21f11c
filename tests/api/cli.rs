use std::process::Command;

use reqwest::StatusCode;

use crate::helpers::{expect_problem, expect_status};

const BIN: &str = env!("CARGO_BIN_EXE_aumos-mlops-lifecycle");

fn command(data_dir: &std::path::Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AUMOS_DATA_DIR", data_dir);
    command
}

/// Waits until the server on `port` answers `/live`.
async fn wait_until_live(port: u16) {
    for _ in 0..100 {
        if reqwest::get(format!("http://127.0.0.1:{port}/live"))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the server did not start");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn a_development_token_from_the_cli_is_accepted_by_a_server_without_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let tenant = uuid::Uuid::now_v7().to_string();
    let port = free_port();

    let output = command(dir.path())
        .args(["token", "--tenant", &tenant])
        .output()
        .unwrap();
    let reader = command(dir.path())
        .args(["token", "--tenant", &tenant, "--scope", "mlops:read"])
        .output()
        .unwrap();
    let mut server = command(dir.path())
        .env("AUMOS_HTTP__PORT", port.to_string())
        .env("AUMOS_HTTP__HOST", "127.0.0.1")
        .env("AUMOS_LOG_LEVEL", "warn")
        .spawn()
        .unwrap();
    wait_until_live(port).await;

    assert!(output.status.success());
    let token = String::from_utf8(output.stdout).unwrap();
    assert_eq!(token.lines().count(), 1, "the token alone on stdout");
    let reader = String::from_utf8(reader.stdout).unwrap();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/api/v1/experiments");
    let create = |token: &str| {
        client
            .post(&url)
            .bearer_auth(token.trim())
            .header("X-Tenant-ID", &tenant)
            .json(&serde_json::json!({"name": "from-cli"}))
            .send()
    };
    let created = create(&token).await.unwrap();
    let refused = create(&reader).await.unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
    expect_status(created, StatusCode::CREATED).await;
    expect_problem(refused, StatusCode::FORBIDDEN).await;
    assert!(
        dir.path().join("mlops.db").exists(),
        "the embedded database lives in the data dir"
    );
}

#[test]
fn the_token_command_refuses_to_run_in_production() {
    let dir = tempfile::tempdir().unwrap();

    let output = command(dir.path())
        .env("AUMOS_ENVIRONMENT", "production")
        .env(
            "AUMOS_AUTH__JWT_SECRET",
            "a-production-secret-of-sufficient-length-42",
        )
        .args(["token", "--tenant", &uuid::Uuid::now_v7().to_string()])
        .output()
        .unwrap();

    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("production"));
}

#[test]
fn a_bad_setting_stops_start_up_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();

    let output = command(dir.path())
        .env("AUMOS_HTTP__PORT", "eighty")
        .output()
        .unwrap();

    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("AUMOS_HTTP__PORT"));
}

#[test]
fn the_openapi_command_prints_the_document() {
    let dir = tempfile::tempdir().unwrap();

    let output = command(dir.path()).arg("openapi").output().unwrap();

    let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(document["paths"]["/api/v1/experiments"].is_object());
}

#[test]
fn migrate_prepares_the_embedded_database_and_exits() {
    let dir = tempfile::tempdir().unwrap();

    let status = command(dir.path())
        .env("AUMOS_LOG_LEVEL", "warn")
        .arg("migrate")
        .status()
        .unwrap();

    assert!(status.success());
    assert!(dir.path().join("mlops.db").exists());
}
