//! Dashboard logins and failed authentication: sessions per principal, the login rate limit,
//! the throttle on guessing, and the session cookie's flags.

use reqwest::header::SET_COOKIE;
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
