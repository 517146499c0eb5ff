//! An HTTP fuzz of the whole OpenAPI surface with schemathesis (from PyPI): thousands of
//! generated requests, valid and not, against a real server with some data in it; no answer may
//! be a 5xx. Without schemathesis the test says SKIPPED outside CI and fails under `CI=true`.

use serde_json::json;

use crate::support::Server;

fn schemathesis_missing() -> bool {
    let found = std::process::Command::new("schemathesis")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return false;
    }
    crate::support::skipped(
        "the OpenAPI fuzz needs schemathesis (pip install schemathesis; .ci/run installs it)",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_generated_request_gets_a_server_error() {
    if schemathesis_missing() {
        return;
    }
    let server = Server::start().await;
    // Some data, so generated ids and keys sometimes hit something.
    let agent = server.agent("fuzz-agent", &[]).await;
    for i in 0..20 {
        let task = server
            .task(json!({"title": format!("task {i}"), "key": format!("key-{i}"), "priority": "P2"}))
            .await;
        if i % 3 == 0 {
            server
                .post(&agent, &format!("/tasks/{}/claim", task["id"]), json!({}))
                .await;
        }
    }
    let out = tokio::process::Command::new("schemathesis")
        .args(["run", &format!("{}/api/v1/openapi.json", server.url)])
        .args(["--url", &server.url])
        .args(["-H", &format!("Authorization: Bearer {}", server.admin)])
        .args([
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--workers",
            "2",
        ])
        .args(["--seed", "7311", "--no-color"])
        // GET /events streams forever; its parameters are still fuzzed up to the headers.
        .args(["--request-timeout", "5"])
        .output()
        .await
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}");
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, _) = server.get(&server.admin, "/stats").await;
    assert!(status.is_success(), "the server is still serving");
    server.stop().await;
}
