//! The controller across processes: a restart resumes at the same step, and replicas sharing
//! one PostgreSQL database apply every step exactly once.

use super::*;

/// Each deployment of `ids` walked 10, 20, ... 100 exactly once and succeeded.
async fn assert_every_step_once(app: &TestApp, ids: &[String]) {
    for id in ids {
        let history = history(app, id).await;
        assert_eq!(
            candidate_weights(&history, "canary"),
            vec![10, 20, 30, 40, 50, 60, 70, 80, 90, 100],
            "deployment {id}: {history:#?}"
        );
        let kinds = kinds(&history);
        assert_eq!(
            kinds.iter().filter(|k| *k == "succeeded").count(),
            1,
            "{kinds:?}"
        );
    }
}

#[tokio::test]
async fn a_new_process_resumes_a_rollout_at_the_step_the_old_one_left() {
    let database = create_database().await;
    let first = spawn_on(&database).await;
    let model = promoted_model(&first).await;
    let health = HealthEndpoint::start().await;
    let mut body = canary(&model, "production", &health);
    body["analysis"]["step_interval_seconds"] = json!(0.5);
    let id = create(&first, &body).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_until(&first, &id, Duration::from_secs(10), |d| {
        d["traffic_split"]["canary"].as_u64() >= Some(40)
    })
    .await;
    let tenant = first.tenant;

    drop(first);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut second = spawn_on(&database).await;
    second.tenant = tenant;
    let resumed_from = deployment(&second, &id).await;
    let done = wait_for_end(&second, &id).await;

    let left_at = resumed_from["traffic_split"]["canary"].as_u64().unwrap();
    assert!(
        (40..100).contains(&left_at),
        "stopped mid-rollout at {left_at}"
    );
    assert_eq!(done["status"], "succeeded", "{done}");
    // No step repeated and none skipped across the restart.
    assert_every_step_once(&second, std::slice::from_ref(&id)).await;
}

/// A service in a process of its own, so that it can be killed.
struct ServiceProcess {
    child: std::process::Child,
    _data_dir: tempfile::TempDir,
}

impl ServiceProcess {
    async fn start(database: &PgDatabase, secret: &str, port: u16) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_aumos-mlops-lifecycle"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AUMOS_DATA_DIR", data_dir.path())
            .env("AUMOS_HTTP__HOST", "127.0.0.1")
            .env("AUMOS_HTTP__PORT", port.to_string())
            .env("AUMOS_LOG_LEVEL", "warn")
            .env("AUMOS_AUTH__JWT_SECRET", secret)
            .env("AUMOS_KAFKA__BROKERS", "")
            .env("AUMOS_MLOPS_MLFLOW_TRACKING_URI", shared_mlflow())
            .env("AUMOS_MLFLOW__POLL_INTERVAL_MS", "100")
            .env("AUMOS_MLOPS_PROBE_ALLOWED_NETWORKS", "127.0.0.0/8")
            .env("AUMOS_DATABASE__URL", &database.app_url)
            .env("AUMOS_DATABASE__MIGRATION_URL", &database.owner_url)
            .spawn()
            .expect("the service binary starts");
        // Owned at once, so the process is killed and reaped even if it never comes up.
        let process = Self {
            child,
            _data_dir: data_dir,
        };
        for _ in 0..200 {
            let live = reqwest::get(format!("http://127.0.0.1:{port}/live")).await;
            if live.is_ok_and(|r| r.status().is_success()) {
                return process;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the service process did not start");
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_process_killed_mid_rollout_is_followed_at_the_same_step() {
    let database = create_database().await;
    let secret = format!("test-secret-{}", uuid::Uuid::new_v4().simple());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let process = ServiceProcess::start(&database, &secret, port).await;
    let first = TestApp::remote(format!("http://127.0.0.1:{port}"), &secret, None);
    let model = promoted_model(&first).await;
    let health = HealthEndpoint::start().await;
    let mut body = canary(&model, "production", &health);
    body["analysis"]["step_interval_seconds"] = json!(0.5);
    let id = create(&first, &body).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_until(&first, &id, Duration::from_secs(10), |d| {
        d["traffic_split"]["canary"].as_u64() >= Some(40)
    })
    .await;

    // SIGKILL: no graceful stop, whatever the process held stays held until its lease lapses.
    drop(process);
    let mut second = spawn_on(&database).await;
    second.tenant = first.tenant;
    let resumed_from = deployment(&second, &id).await;
    let done = wait_for_end(&second, &id).await;

    let left_at = resumed_from["traffic_split"]["canary"].as_u64().unwrap();
    assert!(
        (40..100).contains(&left_at),
        "killed mid-rollout at {left_at}"
    );
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_every_step_once(&second, std::slice::from_ref(&id)).await;
}

#[tokio::test]
async fn two_processes_on_one_database_apply_every_step_exactly_once() {
    let database = create_database().await;
    let first = spawn_on(&database).await;
    let mut second = spawn_on(&database).await;
    second.tenant = first.tenant;
    let model = promoted_model(&first).await;
    let health = HealthEndpoint::start().await;

    let mut ids = Vec::new();
    for n in 0..20 {
        let body = canary(&model, &format!("region-{n}"), &health);
        // Half are created through each process.
        let app = if n % 2 == 0 { &first } else { &second };
        ids.push(create(app, &body).await["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        let done = wait_for_end(&first, id).await;
        assert_eq!(done["status"], "succeeded", "{done}");
    }

    assert_every_step_once(&second, &ids).await;
}
