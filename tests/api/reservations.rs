//! Path reservations under a lease: conflicts between agents, their end with the lease, claim-next
//! passing over a task whose declared paths are held, `why` saying so, and stale fences refused.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::leases::outlive;
use crate::support::Server;

/// Claims task `id` for `token` with a lease of `seconds`; returns the claim.
async fn claim(server: &Server, token: &str, id: i64, seconds: u64) -> Value {
    let (status, claim) = server
        .post(
            token,
            &format!("/tasks/{id}/claim"),
            json!({"lease_seconds": seconds}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{claim}");
    claim
}

fn fence(claim: &Value) -> i64 {
    claim["lease"]["fence"].as_i64().unwrap()
}

#[tokio::test]
async fn overlapping_exclusive_reservations_conflict_and_end_with_the_lease() {
    let server = Server::start().await;
    let a = server.agent("claude-1", &[]).await;
    let b = server.agent("codex-2", &[]).await;
    let one = server.task(json!({"title": "auth middleware"})).await["id"]
        .as_i64()
        .unwrap();
    let two = server.task(json!({"title": "login page"})).await["id"]
        .as_i64()
        .unwrap();
    let first = claim(&server, &a, one, 1).await;
    let second = claim(&server, &b, two, 600).await;

    let (status, held) = server
        .post(
            &a,
            &format!("/tasks/{one}/reservations"),
            json!({"fence": fence(&first), "paths": ["src/auth/**"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{held}");
    assert_eq!(
        (held["holder"].as_str(), held["exclusive"].as_bool()),
        (Some("claude-1"), Some(true))
    );
    assert_eq!(held["paths"], json!(["src/auth/**"]));

    // The second agent's overlapping pattern is refused, naming holder, task and patterns.
    let before = server.all_events().await.len();
    let (status, refused) = server
        .post(
            &b,
            &format!("/tasks/{two}/reservations"),
            json!({"fence": fence(&second), "paths": ["docs/**", "src/auth/login.rs"], "exclusive": false}),
        )
        .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (StatusCode::CONFLICT, Some("conflict")),
        "{refused}"
    );
    let detail = refused["detail"].as_str().unwrap();
    for part in [
        "src/auth/login.rs",
        "src/auth/**",
        &format!("task #{one}"),
        "claude-1",
    ] {
        assert!(detail.contains(part), "{detail}");
    }
    assert_eq!(
        server.all_events().await.len(),
        before,
        "a refused reservation records nothing"
    );
    // Paths that do not overlap are fine, shared or not.
    let (status, docs) = server
        .post(
            &b,
            &format!("/tasks/{two}/reservations"),
            json!({"fence": fence(&second), "paths": ["docs/**"], "exclusive": false}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{docs}");

    // Who holds what.
    let (_, found) = server.get(&b, "/reservations?path=src%2Fauth%2Flogin.rs").await;
    let holders: Vec<&str> = found["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["holder"].as_str().unwrap())
        .collect();
    assert_eq!(holders, ["claude-1"]);
    let (_, all) = server.get(&b, "/reservations").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2);

    // The first lease runs out: its reservation ends, with an event, and the path is free.
    outlive(&first).await;
    assert_eq!(server.app_store.reap_expired_leases().await.unwrap(), 1);
    let (_, found) = server.get(&b, "/reservations?path=src/auth/login.rs").await;
    assert_eq!(found["items"], json!([]), "{found}");
    let ended = server
        .all_events()
        .await
        .into_iter()
        .find(|e| e.kind() == "reservation.released" && e.task_id == Some(one));
    assert_eq!(ended.expect("the end is recorded").data()["reason"], "expired");
    let (status, now_mine) = server
        .post(
            &b,
            &format!("/tasks/{two}/reservations"),
            json!({"fence": fence(&second), "paths": ["src/auth/login.rs"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{now_mine}");

    // Releasing by id ends it; completing ends the rest.
    let rid = now_mine["id"].as_i64().unwrap();
    let (status, gone) = server
        .call(
            Some(&b),
            reqwest::Method::DELETE,
            &format!("/tasks/{two}/reservations/{rid}?fence={}", fence(&second)),
            None,
        )
        .await;
    assert_eq!(
        (status, gone["id"].as_i64()),
        (StatusCode::OK, Some(rid)),
        "{gone}"
    );
    let (status, _) = server
        .post(
            &b,
            &format!("/tasks/{two}/complete"),
            json!({"fence": fence(&second), "summary": "done"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, all) = server.get(&b, "/reservations").await;
    assert_eq!(all["items"], json!([]));
    let reasons: Vec<String> = server
        .all_events()
        .await
        .into_iter()
        .filter(|e| e.kind() == "reservation.released" && e.task_id == Some(two))
        .map(|e| e.data()["reason"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(reasons, ["released", "completed"]);
    server.stop().await;
}

#[tokio::test]
async fn a_stale_fence_can_neither_reserve_nor_release() {
    let server = Server::start().await;
    let a = server.agent("a", &[]).await;
    let b = server.agent("b", &[]).await;
    let id = server.task(json!({"title": "t"})).await["id"].as_i64().unwrap();
    let first = claim(&server, &a, id, 1).await;
    let (status, made) = server
        .post(
            &a,
            &format!("/tasks/{id}/reservations"),
            json!({"fence": fence(&first), "paths": ["a/**"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    outlive(&first).await;
    let second = claim(&server, &b, id, 600).await;
    let (status, body) = server
        .post(
            &a,
            &format!("/tasks/{id}/reservations"),
            json!({"fence": fence(&first), "paths": ["b/**"]}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("lease_lost")),
        "{body}"
    );
    let (status, body) = server
        .call(
            Some(&a),
            reqwest::Method::DELETE,
            &format!("/tasks/{id}/reservations/{}?fence={}", made["id"], fence(&first)),
            None,
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("lease_lost")),
        "{body}"
    );
    // The takeover ended the old lease's reservation; the new holder has none.
    let (_, all) = server.get(&b, "/reservations").await;
    assert_eq!(all["items"], json!([]));
    // Bad patterns change nothing.
    let (status, body) = server
        .post(
            &b,
            &format!("/tasks/{id}/reservations"),
            json!({"fence": fence(&second), "paths": ["/etc/passwd"]}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_input")),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test]
async fn claim_next_passes_over_a_task_whose_paths_are_reserved_and_why_says_so() {
    let server = Server::start().await;
    let a = server.agent("claude-2", &[]).await;
    let b = server.agent("codex-1", &[]).await;
    // Declared paths are reserved by the claim itself.
    let held = server
        .task(json!({"title": "rework sessions", "priority": "P1", "paths": ["src/auth/**"]}))
        .await["id"]
        .as_i64()
        .unwrap();
    let first = claim(&server, &a, held, 600).await;
    let (_, mine) = server.get(&a, &format!("/reservations?task={held}")).await;
    assert_eq!(mine["items"][0]["paths"], json!(["src/auth/**"]), "{mine}");

    let blocked = server
        .task(json!({"title": "fix login", "priority": "P0", "paths": ["./src/auth/login.rs"]}))
        .await;
    assert_eq!(blocked["paths"], json!(["src/auth/login.rs"]));
    let blocked = blocked["id"].as_i64().unwrap();
    let free = server
        .task(json!({"title": "docs", "priority": "P3", "paths": ["docs/**"]}))
        .await["id"]
        .as_i64()
        .unwrap();

    // The P0 task waits; the P3 one is handed out.
    let (status, next) = server.post(&b, "/claims/next", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{next}");
    assert_eq!(next["task"]["id"].as_i64(), Some(free));
    let (_, why) = server.get(&b, &format!("/tasks/{blocked}/why")).await;
    assert_eq!(why["claimable"], false, "{why}");
    let reasons = why["reasons"].to_string();
    assert!(
        reasons.contains(&format!(
            "waiting: src/auth/** is reserved by task #{held} (claude-2)"
        )),
        "{reasons}"
    );
    // Claiming it by id is refused the same way.
    let (status, body) = server
        .post(&b, &format!("/tasks/{blocked}/claim"), json!({}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("conflict")),
        "{body}"
    );

    // A long poll waiting for it is handed it once the holder lets go.
    let poller = {
        let (url, token) = (server.url.clone(), b.clone());
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{url}/api/v1/claims/next"))
                .bearer_auth(token)
                .json(&json!({"wait_seconds": 60}))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    let (status, _) = server
        .post(
            &a,
            &format!("/tasks/{held}/release"),
            json!({"fence": fence(&first)}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let got = poller.await.unwrap();
    assert_eq!(got["task"]["id"].as_i64(), Some(blocked), "{got}");
    let (_, why) = server.get(&b, &format!("/tasks/{held}/why")).await;
    assert_eq!(
        why["claimable"], false,
        "the released task now waits for the login fix: {why}"
    );
    server.stop().await;
}

/// Runs the CLI as `token`; returns whether it succeeded and what it printed.
async fn cli(server: &Server, token: &str, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskyard"))
        .args(args)
        .env("TASKYARD_URL", &server.url)
        .env("TASKYARD_TOKEN", token)
        .env_remove("TASKYARD_TASK_ID")
        .env_remove("TASKYARD_FENCE")
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn the_cli_reserves_lists_and_releases() {
    let server = Server::start().await;
    let a = server.agent("claude-1", &[]).await;
    let b = server.agent("codex-2", &[]).await;
    let one = server.task(json!({"title": "one"})).await["id"].as_i64().unwrap();
    let two = server.task(json!({"title": "two"})).await["id"].as_i64().unwrap();
    let first = claim(&server, &a, one, 600).await;
    let second = claim(&server, &b, two, 600).await;
    let (f1, f2) = (fence(&first).to_string(), fence(&second).to_string());
    let (one_s, two_s) = (one.to_string(), two.to_string());

    let (ok, said) = cli(
        &server,
        &a,
        &["reserve", "src/auth/**", "--task", &one_s, "--fence", &f1],
    )
    .await;
    assert!(
        ok && said.contains("reserved: reservation #") && said.contains("src/auth/**"),
        "{said}"
    );
    let (ok, said) = cli(
        &server,
        &b,
        &[
            "reserve",
            "src/auth/x.rs",
            "--shared",
            "--task",
            &two_s,
            "--fence",
            &f2,
        ],
    )
    .await;
    assert!(
        !ok && said.contains("reserved by task #") && said.contains("claude-1"),
        "{said}"
    );
    let (ok, said) = cli(&server, &b, &["reservations", "list", "--path", "src/auth/x.rs"]).await;
    assert!(
        ok && said.contains("claude-1") && said.contains("exclusive"),
        "{said}"
    );

    let (_, listed) = server.get(&a, "/reservations").await;
    let rid = listed["items"][0]["id"].to_string();
    let (ok, said) = cli(
        &server,
        &a,
        &["reservations", "release", &rid, "--task", &one_s, "--fence", &f1],
    )
    .await;
    assert!(ok && said.contains("released"), "{said}");
    let (ok, said) = cli(&server, &b, &["reservations", "list"]).await;
    assert!(ok && said.contains("no reservations"), "{said}");

    // The handoff of a task released with a note.
    let (status, _) = server
        .post(
            &a,
            &format!("/tasks/{one}/release"),
            json!({"fence": fence(&first), "note": "wrong repo"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (ok, said) = cli(&server, &b, &["task", "handoff", &one_s]).await;
    assert!(ok && said.contains("claude-1, released: wrong repo"), "{said}");
    server.stop().await;
}

#[tokio::test]
async fn subtasks_work_on_what_their_parent_reserved_and_a_lapsed_lease_is_in_nobodys_way() {
    let server = Server::start().await;
    let lead = server.agent("lead", &[]).await;
    let helper = server.agent("helper", &[]).await;
    let parent = server
        .task(json!({"title": "auth rework", "paths": ["src/**"]}))
        .await["id"]
        .as_i64()
        .unwrap();
    let held = claim(&server, &lead, parent, 1).await;
    // The parent delegates its paths: a subtask declaring some of them is handed out.
    let sub = server
        .task(json!({"title": "login form", "parent_id": parent, "paths": ["src/auth/**"]}))
        .await["id"]
        .as_i64()
        .unwrap();
    let (status, next) = server
        .post(&helper, "/claims/next", json!({"lease_seconds": 600}))
        .await;
    assert_eq!(
        (status, next["task"]["id"].as_i64()),
        (StatusCode::OK, Some(sub)),
        "{next}"
    );

    // The parent's lease runs out; an unrelated task's claim is judged without it, and the
    // lapsed holder learns its lease is gone.
    outlive(&held).await;
    let other = server
        .task(json!({"title": "unrelated", "paths": ["src/billing/**"]}))
        .await["id"]
        .as_i64()
        .unwrap();
    let (status, body) = server
        .post(&helper, &format!("/tasks/{other}/claim"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ended = server
        .all_events()
        .await
        .into_iter()
        .find(|e| e.kind() == "reservation.released" && e.task_id == Some(parent));
    assert_eq!(
        ended.expect("the lapsed lease's reservation ended").data()["reason"],
        "expired"
    );
    let (status, body) = server
        .post(
            &lead,
            &format!("/tasks/{parent}/progress"),
            json!({"fence": fence(&held)}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("lease_lost")),
        "{body}"
    );
    server.stop().await;
}
