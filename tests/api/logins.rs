//! Dashboard logins and failed authentication: sessions per principal, the login rate limit,
//! the throttle on guessing, the session cookie's flags, and sessions and login codes kept in
//! the registry (they outlive a restart, a code works once, a session ended by another server
//! ends the streams it opened here).

use reqwest::header::{COOKIE, LOCATION, RETRY_AFTER, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::json;
use taskyard::http::session::{Sessions, COOKIE as SESSION_COOKIE};
use taskyard::token::hash_token;

use crate::dashboard::{http, login};
use crate::events::read_to_end;
use crate::support::{test_config, Server, ADMIN_TOKEN};

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

/// Another server's view of the sessions in `server`'s registry: what it does there, `server`
/// hears nothing of.
fn elsewhere(server: &Server) -> Sessions {
    Sessions::new(server.app_store.clone(), 16)
}

/// Follows the one-time login link with `code`.
async fn redeem(server: &Server, code: &str) -> reqwest::Response {
    http()
        .get(format!("{}/login?code={code}", server.url))
        .send()
        .await
        .unwrap()
}

/// Opens the event stream with the session cookie `cookie`.
async fn open_events(server: &Server, cookie: &str) -> reqwest::Response {
    let events = http()
        .get(format!("{}/api/v1/events", server.url))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    events
}

#[tokio::test]
async fn sessions_outlive_a_restart_and_a_login_code_works_once() {
    let server = Server::start().await;
    let (cookie, csrf) = login(&server, ADMIN_TOKEN).await;
    let code = elsewhere(&server)
        .login_code(hash_token(ADMIN_TOKEN))
        .await
        .unwrap();
    let dir = server.stop().await.expect("the data folder outlives the server");

    let server = Server::boot(test_config(dir.path())).await;
    assert!(
        session_lives(&server, &cookie).await,
        "the session outlived the restart"
    );
    let create = |csrf: &str| {
        http()
            .post(format!("{}/api/v1/tasks", server.url))
            .header(COOKIE, &cookie)
            .header("x-csrf-token", csrf)
            .json(&json!({"title": "after the restart"}))
            .send()
    };
    assert_eq!(
        create("0".repeat(64).as_str()).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        create(&csrf).await.unwrap().status(),
        StatusCode::CREATED,
        "its CSRF token still works"
    );

    // A code issued before the restart (or by another server) logs in here, once.
    let first = redeem(&server, &code).await;
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    assert_eq!(first.headers()[LOCATION], "/");
    let set = first.headers()[SET_COOKIE].to_str().unwrap();
    assert!(session_lives(&server, set.split(';').next().unwrap()).await);
    let again = redeem(&server, &code).await;
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED, "a code works once");
    assert!(again.headers().get(SET_COOKIE).is_none());
    server.stop().await;
    drop(dir);
}

#[tokio::test]
async fn a_session_ended_by_another_server_ends_the_streams_it_opened_here() {
    let server = Server::start().await;
    let (cookie, _) = login(&server, ADMIN_TOKEN).await;
    let events = open_events(&server, &cookie).await;

    let value = cookie.strip_prefix(&format!("{SESSION_COOKIE}=")).unwrap();
    elsewhere(&server).remove(value).await.unwrap();
    assert!(!session_lives(&server, &cookie).await);
    read_to_end(events, "the event stream of a session ended elsewhere").await;
    server.stop().await;
}

#[tokio::test]
async fn servers_sharing_a_database_share_sessions_and_login_codes() {
    if !crate::backend::postgres() {
        println!("on PostgreSQL only: servers share a registry only on a database server");
        return;
    }
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Server::boot(test_config(dir_a.path())).await;
    // The second server's data folder names the first one's database.
    let url = crate::backend::database_url(dir_a.path()).unwrap();
    let mut config = test_config(dir_b.path());
    config.server.database_url = Some(taskyard::config::DatabaseUrl::parse(&url).unwrap());
    let b = Server::boot(config).await;

    let (cookie, _) = login(&a, ADMIN_TOKEN).await;
    assert!(
        session_lives(&b, &cookie).await,
        "a cookie from one server works on the other"
    );
    let code = elsewhere(&a).login_code(hash_token(ADMIN_TOKEN)).await.unwrap();
    let (on_a, on_b) = tokio::join!(redeem(&a, &code), redeem(&b, &code));
    let mut answers = [on_a.status(), on_b.status()];
    answers.sort();
    assert_eq!(
        answers,
        [StatusCode::SEE_OTHER, StatusCode::UNAUTHORIZED],
        "the code works once"
    );

    // Logging out on one server ends the streams the session opened on the other.
    let events = open_events(&a, &cookie).await;
    let out = http()
        .post(format!("{}/logout", b.url))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    read_to_end(
        events,
        "the event stream of a session that logged out on another server",
    )
    .await;
    assert!(!session_lives(&a, &cookie).await);
    b.stop().await;
    a.stop().await;
}
