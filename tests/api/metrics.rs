//! `GET /metrics`: who may scrape it, and figures that move as work happens, read back with the
//! Prometheus Python client's OpenMetrics parser.

use std::process::Stdio;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::support::{skipped, Server};

const PARSER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/metrics/parse.py");

/// Why the parser cannot run here, if it cannot.
async fn parser_missing() -> Option<String> {
    match tokio::process::Command::new("python3")
        .args([PARSER, "--probe"])
        .output()
        .await
    {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(String::from_utf8_lossy(&out.stdout).trim().to_string()),
        Err(err) => Some(format!("no python3: {err}")),
    }
}

/// Scrapes with `token`; the status, and the body.
async fn scrape(server: &Server, token: Option<&str>) -> (StatusCode, String, String) {
    let mut req = reqwest::Client::new().get(format!("{}/metrics", server.url));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let kind = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, kind, resp.text().await.unwrap())
}

/// The samples of an OpenMetrics text, as the Python parser reads them.
async fn parse(text: &str) -> Vec<Value> {
    let mut child = tokio::process::Command::new("python3")
        .arg(PARSER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .await
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "the parser refused the text: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The value of sample `name` whose labels include `labels`.
fn value(samples: &[Value], name: &str, labels: Value) -> f64 {
    samples
        .iter()
        .find(|s| {
            s["name"] == name
                && labels
                    .as_object()
                    .unwrap()
                    .iter()
                    .all(|(k, v)| &s["labels"][k] == v)
        })
        .unwrap_or_else(|| panic!("no sample {name} {labels}"))["value"]
        .as_f64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_as_work_happens() {
    if let Some(why) = parser_missing().await {
        if skipped(&format!(
            "the metrics test needs the Python prometheus_client ({why}; python3 -m pip install prometheus_client==0.21.1)"
        )) {
            return;
        }
    }
    let server = Server::start_with(|c| {
        c.server.metrics_token = Some(taskyard::config::Secret::new("scraper-only-token-0123456789"));
    })
    .await;
    let agent = server.agent("worker", &[]).await;
    let viewer = server.agent_with_role("watcher", &[], "viewer").await;

    // Who may scrape: any valid token, or the metrics token (below); nobody else. (The first
    // scrape that gets through reads the registry's figures; they are reused for 5 s.)
    assert_eq!(scrape(&server, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        scrape(&server, Some("no-such-token")).await.0,
        StatusCode::UNAUTHORIZED
    );

    // Work in project "shop": three claimed, two completed, one failed for good; one left open.
    for i in 0..4 {
        server
            .task(json!({"title": format!("job {i}"), "project": "shop", "priority": "P2"}))
            .await;
    }
    for outcome in ["complete", "complete", "fail"] {
        let (status, claim) = server
            .post(&agent, "/claims/next", json!({"projects": ["shop"]}))
            .await;
        assert_eq!(status, StatusCode::OK, "{claim}");
        let (id, fence) = (claim["task"]["id"].clone(), claim["lease"]["fence"].clone());
        let body = match outcome {
            "complete" => json!({"fence": fence, "summary": "done"}),
            _ => json!({"fence": fence, "reason": "broken", "retryable": false}),
        };
        let (status, answer) = server.post(&agent, &format!("/tasks/{id}/{outcome}"), body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }

    // A project name with a quote and a backslash must not break the exposition.
    let odd = server
        .task(json!({"title": "odd", "project": "we\"ird\\", "priority": "P3"}))
        .await["id"]
        .clone();
    let (status, _) = server
        .post(&agent, &format!("/tasks/{odd}/claim"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, _, text) = scrape(&server, Some(&viewer)).await;
    assert_eq!(status, StatusCode::OK);
    let samples = parse(&text).await;
    let shop = json!({"project": "shop"});
    assert_eq!(value(&samples, "taskyard_claims_total", shop.clone()), 3.0);
    let odd = json!({"project": "we\"ird\\"});
    assert_eq!(value(&samples, "taskyard_claims_total", odd), 1.0);
    assert_eq!(value(&samples, "taskyard_completions_total", shop.clone()), 2.0);
    assert_eq!(value(&samples, "taskyard_failures_total", shop.clone()), 1.0);
    assert_eq!(
        value(&samples, "taskyard_tasks", json!({"status": "completed"})),
        2.0
    );
    assert_eq!(
        value(&samples, "taskyard_tasks", json!({"status": "failed"})),
        1.0
    );
    assert_eq!(
        value(&samples, "taskyard_tasks", json!({"status": "available"})),
        1.0
    );
    assert_eq!(
        value(&samples, "taskyard_open_tasks", json!({"priority": "P2"})),
        1.0
    );
    assert_eq!(
        value(&samples, "taskyard_claim_next_wait_seconds_count", json!({})),
        3.0
    );
    assert_eq!(
        value(&samples, "taskyard_claim_next_latency_seconds_count", json!({})),
        3.0
    );
    let created = json!({"route": "/api/v1/tasks", "method": "POST", "status": "201"});
    assert_eq!(value(&samples, "taskyard_http_requests_total", created), 5.0);
    let commits = value(&samples, "taskyard_writer_commit_seconds_count", json!({}));
    assert!(commits >= 10.0, "every change commits: {commits}");
    assert!(value(&samples, "taskyard_writer_batch_changes_sum", json!({})) >= commits);
    assert!(value(&samples, "process_resident_memory_bytes", json!({})) > 1e6);
    assert!(value(&samples, "process_cpu_seconds_total", json!({})) > 0.0);

    let (status, kind, _) = scrape(&server, Some("scraper-only-token-0123456789")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    let (status, _) = server.get("scraper-only-token-0123456789", "/tasks").await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the metrics token reads nothing else"
    );

    // Counters move at once: a claim whose lease runs out, taken over by the next claim.
    let (status, claim) = server
        .post(
            &agent,
            "/claims/next",
            json!({"projects": ["shop"], "lease_seconds": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{claim}");
    crate::leases::outlive(&claim).await;
    let (status, again) = server
        .post(&agent, "/claims/next", json!({"projects": ["shop"]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["task"]["id"], claim["task"]["id"]);
    let samples = parse(&scrape(&server, Some(&viewer)).await.2).await;
    assert_eq!(value(&samples, "taskyard_claims_total", shop.clone()), 5.0);
    assert_eq!(value(&samples, "taskyard_lease_expiries_total", shop), 1.0);
    let scrapes = json!({"route": "/metrics", "method": "GET", "status": "200"});
    assert_eq!(value(&samples, "taskyard_http_requests_total", scrapes), 2.0);
}
