//! Dashboard logins and failed authentication: sessions per principal, the login rate limit,
//! the throttle on guessing, and the session cookie's flags.

use reqwest::header::{COOKIE, RETRY_AFTER, SET_COOKIE};
use reqwest::StatusCode;

use crate::dashboard::http;
use crate::support::{Server, ADMIN_TOKEN};

#[tokio::test]
async fn the_session_cookie_is_secure_whenever_the_public_url_is_https() {
    let server = Server::start_with(|c| c.server.public_url = Some("https://yard.example.com".into())).await;
    // Reached at its own address (a tunnel, a health check), not under the public host name.
    let resp = http()
        .post(format!("http://{}/login", server.addr))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let set = resp.headers()[SET_COOKIE].to_str().unwrap();
    assert!(set.ends_with("; Secure"), "{set}");
}

#[test]
fn a_short_admin_token_is_refused_with_a_clear_message() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_taskyard"))
        .args(["config", "check"])
        .current_dir(tempfile::tempdir().unwrap().path())
        .env("TASKYARD_ADMIN_TOKEN", "only-twenty-six-characters")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("TASKYARD_ADMIN_TOKEN") && err.contains("at least 32"),
        "{err}"
    );
}

/// Sends the dashboard's login form with `token`, following no redirect.
pub(crate) async fn post_login(server: &Server, token: &str) -> reqwest::Response {
    http()
        .post(format!("{}/login", server.url))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
}

/// Logs in with `token`; returns the status, the session cookie (`name=value`) if one was set,
/// and the Retry-After header if any.
async fn log_in(server: &Server, token: &str) -> (StatusCode, Option<String>, Option<String>) {
    let resp = post_login(server, token).await;
    let header = |name| {
        resp.headers()
            .get(name)
            .map(|v: &reqwest::header::HeaderValue| v.to_str().unwrap().to_string())
    };
    let cookie = header(SET_COOKIE).map(|c| c.split(';').next().unwrap().to_string());
    (resp.status(), cookie, header(RETRY_AFTER))
}

/// True while the session behind `cookie` still opens the dashboard.
async fn session_lives(server: &Server, cookie: &str) -> bool {
    let page = http()
        .get(format!("{}/", server.url))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap();
    page.status() == StatusCode::OK
}

#[tokio::test]
async fn logging_in_over_and_over_ends_only_ones_own_oldest_sessions() {
    let server = Server::start_with(|c| {
        c.server.max_sessions_per_principal = 3;
        c.server.login_burst = 10_000;
    })
    .await;
    let viewer = server.agent_with_role("peeker", &[], "viewer").await;
    let (_, admin, _) = log_in(&server, ADMIN_TOKEN).await;
    let admin = admin.expect("the admin is logged in");
    let mut first = None;
    let mut last = None;
    for _ in 0..1_001 {
        let (status, cookie, _) = log_in(&server, &viewer).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        first.get_or_insert(cookie.clone());
        last = cookie;
    }
    assert!(
        session_lives(&server, &admin).await,
        "the admin's session survives"
    );
    assert!(session_lives(&server, &last.unwrap()).await);
    assert!(
        !session_lives(&server, &first.unwrap().unwrap()).await,
        "the viewer's oldest session made room for its newer ones"
    );
}

#[tokio::test]
async fn logins_are_rate_limited_per_address() {
    let server = Server::start_with(|c| {
        c.server.login_burst = 3;
        c.server.login_per_minute = 1.0;
    })
    .await;
    for _ in 0..3 {
        assert_eq!(log_in(&server, ADMIN_TOKEN).await.0, StatusCode::SEE_OTHER);
    }
    let (status, cookie, retry_after) = log_in(&server, ADMIN_TOKEN).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(cookie.is_none() && retry_after.is_some());
    // One-time codes are tried at the same rate.
    let code = http()
        .get(format!("{}/login?code=guess", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(code.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn guessing_tokens_is_throttled_per_address_but_known_tokens_keep_working() {
    let server = Server::start_with(|c| {
        c.server.auth_failures_burst = 5;
        c.server.auth_failures_per_second = 0.01;
    })
    .await;
    let worker = server.agent("worker", &[]).await;
    let unused = server.agent("unused", &[]).await;
    assert_eq!(server.get(&worker, "/tasks").await.0, StatusCode::OK);
    for i in 0..5 {
        let (status, _) = server.get(&format!("ty_guess_{i}"), "/tasks").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let guess = reqwest::Client::new()
        .get(format!("{}/api/v1/tasks", server.url))
        .bearer_auth("ty_guess_5")
        .send()
        .await
        .unwrap();
    assert_eq!(guess.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(guess.headers().contains_key(RETRY_AFTER));
    let problem: serde_json::Value = guess.json().await.unwrap();
    assert_eq!(problem["code"], "rate_limited", "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("server.auth_failures_burst"),
        "{problem}"
    );
    // Refused without being checked: a good token new to this address, and logins...
    assert_eq!(
        server.get(&unused, "/tasks").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(log_in(&server, &unused).await.0, StatusCode::TOO_MANY_REQUESTS);
    // ...but tokens already at work from here go on working.
    assert_eq!(server.get(&worker, "/tasks").await.0, StatusCode::OK);
    assert_eq!(server.get(&server.admin, "/tasks").await.0, StatusCode::OK);
    assert_eq!(log_in(&server, ADMIN_TOKEN).await.0, StatusCode::SEE_OTHER);
}
