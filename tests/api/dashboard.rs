//! The dashboard: its session, CSRF, Host and Origin rules over plain HTTP, streams that end
//! with the session that opened them, and a real headless Chromium (over WebDriver, through
//! chromedriver) logging in, seeing a task appear live, cancelling it, and logging no console
//! errors.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::header::{COOKIE, HOST, LOCATION, ORIGIN, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::events::{read_to_end, read_until_task};
use crate::spawn::{sleeping_run, wait_for, SleepingRun};
use crate::support::{Server, ADMIN_TOKEN};

/// A client that does not follow redirects, so login answers can be inspected.
pub(crate) fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Logs in with `token`; returns the session cookie (`name=value`) and the page's CSRF token.
pub(crate) async fn login(server: &Server, token: &str) -> (String, String) {
    let resp = crate::logins::post_login(server, token).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[LOCATION], "/");
    let set = resp.headers()[SET_COOKIE].to_str().unwrap().to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(flag), "{set}");
    }
    let cookie = set.split(';').next().unwrap().to_string();
    let page = http()
        .get(format!("{}/", server.url))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let html = page.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page carries its CSRF token")
        .to_string();
    (cookie, csrf)
}

#[tokio::test]
async fn sessions_need_csrf_and_refuse_other_sites_and_host_names() {
    let server = Server::start().await;
    // Not logged in: the page sends people to the login form.
    let resp = http().get(format!("{}/", server.url)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[LOCATION], "/login");
    let form = http().get(format!("{}/login", server.url)).send().await.unwrap();
    assert!(form.text().await.unwrap().contains("name=\"token\""));
    let wrong = http()
        .post(format!("{}/login", server.url))
        .form(&[("token", "not-a-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get(SET_COOKIE).is_none());
    // Another site cannot log the browser in (login CSRF), even with a good token.
    let foreign = http()
        .post(format!("{}/login", server.url))
        .header(ORIGIN, "http://evil.example")
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
    assert!(foreign.headers().get(SET_COOKIE).is_none());

    let (cookie, csrf) = login(&server, ADMIN_TOKEN).await;
    let api = |method: reqwest::Method, path: &str| {
        http()
            .request(method, format!("{}/api/v1{path}", server.url))
            .header(COOKIE, &cookie)
    };
    // Reads work with the cookie alone; a mutation needs the session's CSRF token.
    assert_eq!(
        api(reqwest::Method::GET, "/stats").send().await.unwrap().status(),
        StatusCode::OK
    );
    let body = json!({"title": "from the dashboard"});
    let resp = api(reqwest::Method::POST, "/tasks")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = api(reqwest::Method::POST, "/tasks")
        .header("x-csrf-token", "0".repeat(64))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = api(reqwest::Method::POST, "/tasks")
        .header("x-csrf-token", &csrf)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    // Another site's page, or a DNS-rebound host name, gets nothing even with the cookie.
    let resp = api(reqwest::Method::POST, "/tasks")
        .header("x-csrf-token", &csrf)
        .header(ORIGIN, "http://evil.example")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // A request a browser marks as coming from another site (an <img> on another port of the
    // same host, say) gets nothing either, even a read.
    let resp = api(reqwest::Method::GET, "/stats")
        .header("sec-fetch-site", "same-site")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let port = server.url.rsplit(':').next().unwrap().to_string();
    let resp = api(reqwest::Method::GET, "/stats")
        .header(HOST, format!("rebound.evil.example:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = http()
        .get(format!("{}/", server.url))
        .header(HOST, format!("rebound.evil.example:{port}"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // MCP takes bearer tokens only.
    let resp = http()
        .post(format!("{}/mcp", server.url))
        .header(COOKIE, &cookie)
        .header("x-csrf-token", &csrf)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let (_, tasks) = server.get(&server.admin, "/tasks").await;
    assert_eq!(
        tasks["items"].as_array().unwrap().len(),
        1,
        "only the one good request created a task"
    );

    // Logging out ends the session.
    let out = http()
        .post(format!("{}/logout", server.url))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let resp = api(reqwest::Method::GET, "/stats").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_out_ends_the_streams_the_session_opened() {
    // A run that stays alive, so its log can be followed.
    let SleepingRun {
        server,
        mut events,
        run_id,
        scripts: _scripts,
        ..
    } = sleeping_run().await;

    // Two browsers logged in with the same token; each opens streams with its cookie.
    let (leaving, _) = login(&server, ADMIN_TOKEN).await;
    let (staying, _) = login(&server, ADMIN_TOKEN).await;
    let open = |cookie: &str, path: String| {
        http()
            .get(format!("{}/api/v1{path}", server.url))
            .header(COOKIE, cookie)
            .send()
    };
    let leaving_events = open(&leaving, "/events".into()).await.unwrap();
    let leaving_log = open(&leaving, format!("/runs/{run_id}/log?follow=true"))
        .await
        .unwrap();
    let staying_events = open(&staying, "/events".into()).await.unwrap();
    for resp in [&leaving_events, &leaving_log, &staying_events] {
        assert_eq!(resp.status(), StatusCode::OK, "{}", resp.url());
    }

    let out = http()
        .post(format!("{}/logout", server.url))
        .header(COOKIE, &leaving)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    read_to_end(leaving_events, "the logged-out session's event stream").await;
    read_to_end(leaving_log, "the logged-out session's log follow").await;

    // The other session's stream lives on and delivers what happens after the logout; the run
    // lives on too, so the follow ended with the session, not with the run.
    let task = server.task(json!({"title": "after the logout"})).await;
    assert_eq!(read_until_task(staying_events, &task["id"]).await, "task.created");
    let (_, run) = server.get(&server.admin, &format!("/runs/{run_id}")).await;
    assert_eq!(run["status"], "running", "{run}");

    let (status, _) = server
        .post(&server.admin, &format!("/runs/{run_id}/kill"), json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    wait_for(&mut events, |e| e.kind() == "run.exited").await;
    server.stop().await;
}

/// chromedriver, stopped when dropped.
struct Driver {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const CHROMIUM: &str = "/usr/bin/chromium";

/// Starts chromedriver, or says loudly why not: a missing browser skips the test outside CI and
/// fails it under `CI=true`.
async fn driver() -> Option<Driver> {
    let found = std::path::Path::new(CHROMIUM).exists()
        && Command::new("chromedriver")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !found {
        let message = "the browser tests need Debian's chromium and chromium-driver \
            (apt-get install chromium chromium-driver)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{message}, and CI=true");
        }
        println!("SKIPPED: {message}");
        eprintln!("SKIPPED: {message}");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver {
        child,
        port,
        _profile: tempfile::tempdir().unwrap(),
    };
    crate::support::wait_until_up(&format!("http://127.0.0.1:{port}/status"), "chromedriver").await;
    Some(driver)
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = Capabilities::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--no-first-run", "--window-size=1280,900",
                     format!("--user-data-dir={}", driver._profile.path().display())]
        }),
    );
    caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a browser session starts")
}

/// chromedriver's console log of the page (`POST /session/{id}/se/log`).
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(json!({"type": "browser"}).to_string()))
    }
}

async fn find(client: &Client, css: &str) -> fantoccini::elements::Element {
    match client
        .wait()
        .at_most(Duration::from_secs(60))
        .for_element(Locator::Css(css))
        .await
    {
        Ok(element) => element,
        Err(e) => {
            let url = client
                .current_url()
                .await
                .map(|u| u.to_string())
                .unwrap_or_default();
            let page = client.source().await.unwrap_or_default();
            panic!("{css} did not appear ({e}) on {url}:\n{page}");
        }
    }
}

/// The text of the element `css` selects. The page re-renders as events arrive, so an element
/// found a moment ago may have been replaced; it is then looked up again.
async fn text(client: &Client, css: &str) -> String {
    loop {
        match find(client, css).await.text().await {
            Ok(text) => return text,
            Err(e) if e.is_stale_element_reference() => continue,
            Err(e) => panic!("reading {css}: {e}"),
        }
    }
}

/// Clicks the element `css` selects, looking it up again if the page replaced it meanwhile.
async fn click(client: &Client, css: &str) {
    loop {
        match find(client, css).await.click().await {
            Ok(()) => return,
            Err(e) if e.is_stale_element_reference() => continue,
            Err(e) => panic!("clicking {css}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_logs_in_sees_a_new_task_live_and_cancels_it() {
    let Some(driver) = driver().await else {
        return;
    };
    let scripts = tempfile::tempdir().unwrap();
    let server = Server::start_with(|c| {
        c.agent_types.insert(
            "development-lead".into(),
            crate::spawn::agent_type(scripts.path(), "quitter", "exit 3", |_| {}),
        );
    })
    .await;
    // A run that fails, for the runs view's error column and the task's timeline.
    let mut events = server.app_store.bus().subscribe();
    let urgent = server
        .task(json!({"title": "Fails at once", "priority": "P0", "max_attempts": 1}))
        .await;
    server.loops.context().spawner.assign().await.unwrap();
    crate::spawn::wait_for(&mut events, crate::spawn::exited(&urgent)).await;
    let client = browser(&driver).await;

    client.goto(&format!("{}/", server.url)).await.unwrap();
    let token = find(&client, "input#token").await;
    token.send_keys(ADMIN_TOKEN).await.unwrap();
    click(&client, "button[type=submit]").await;
    click(&client, "nav a[href='#/board']").await;
    find(&client, "#data .board").await;

    // A task created through the API shows up on the open board, without a reload.
    let marker: Value = client
        .execute("window.__marker = 42; return 1;", vec![])
        .await
        .unwrap();
    assert_eq!(marker, json!(1));
    let task = server
        .task(json!({"title": "Shown live on the board", "priority": "P1"}))
        .await;
    let card = format!("a.task[data-task='{}']", task["id"]);
    assert!(text(&client, &card).await.contains("Shown live on the board"));
    let same_page: Value = client.execute("return window.__marker;", vec![]).await.unwrap();
    assert_eq!(same_page, json!(42), "the page was not reloaded");

    // Open it and cancel it: the status changes on the page.
    click(&client, &card).await;
    find(&client, "dl.fields .status-available").await;
    click(&client, "button[data-act='cancel']").await;
    find(&client, "dl.fields .status-cancelled").await;
    let (_, t) = server.get(&server.admin, &format!("/tasks/{}", task["id"])).await;
    assert_eq!(t["status"], "cancelled");

    // Every view renders, and nothing was logged as an error along the way.
    for view in [
        "#/",
        "#/queue",
        "#/agents",
        "#/runs",
        "#/loops",
        "#/notifications",
    ] {
        client
            .execute(&format!("location.hash = '{view}'; return 1;"), vec![])
            .await
            .unwrap();
        // The view is mounted (its nav link marked), then its data arrives.
        find(&client, &format!("nav a[aria-current='page'][href='{view}']")).await;
        find(&client, "#data > *").await;
        if view == "#/" {
            find(&client, "svg.chart").await;
            // The nodes sharing the registry: this one, leading.
            let node = server.app_store.options().node.clone();
            let nodes = text(&client, "section[aria-labelledby='h-nodes'] table").await;
            assert!(nodes.contains(&node) && nodes.contains("leader"), "{nodes}");
        }
        if view == "#/agents" {
            // An admin deactivates an agent from its row; its token stops working.
            let doomed = server.agent("doomed", &[]).await;
            let (_, page) = server.get(&server.admin, "/agents").await;
            let id = page["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["name"] == "doomed")
                .unwrap()["id"]
                .clone();
            click(&client, &format!("button[data-deactivate='{id}']")).await;
            let status = text(&client, "#data span.bad").await;
            assert_eq!(status, "deactivated");
            assert_eq!(server.get(&doomed, "/tasks").await.0, StatusCode::UNAUTHORIZED);
        }
        if view == "#/runs" {
            let error = text(&client, "#data .run-error").await;
            assert!(error.contains("exited with code 3"), "{error}");
        }
    }
    // A held task's page lists the paths its lease reserves.
    let coder = server.agent("coder-1", &[]).await;
    let held = server
        .task(json!({"title": "Auth rework", "paths": ["src/auth/**"]}))
        .await;
    let (status, _) = server
        .post(&coder, &format!("/tasks/{}/claim", held["id"]), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    client
        .execute(
            &format!("location.hash = '#/tasks/{}'; return 1;", held["id"]),
            vec![],
        )
        .await
        .unwrap();
    let reserved = text(&client, "#reservations").await;
    assert!(
        reserved.contains("coder-1") && reserved.contains("exclusive") && reserved.contains("src/auth/**"),
        "{reserved}"
    );
    let page = text(&client, "#data").await;
    assert!(page.contains("coder-1 reserved src/auth/**"), "{page}");
    // The failed task's page tells its story in sentences, decisions and timeline alike.
    client
        .execute(
            &format!("location.hash = '#/tasks/{}'; return 1;", urgent["id"]),
            vec![],
        )
        .await
        .unwrap();
    let timeline = text(&client, "ul.timeline").await;
    let page = text(&client, "#data").await;
    assert!(
        page.contains("spawned: P0 work is spawned: run #1 of development-lead"),
        "{page}"
    );
    assert!(
        page.contains("run #1 ended: failed — exited with code 3"),
        "{page}"
    );
    assert!(!timeline.contains("{\""), "no raw JSON: {page}");

    let flash = text(&client, "#flash").await;
    assert_eq!(flash, "", "the page showed an error");
    let log = client.issue_cmd(BrowserLog).await.unwrap();
    let errors: Vec<&Value> = log
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["level"] == "SEVERE")
        .collect();
    assert!(errors.is_empty(), "the console logged errors: {errors:?}");
    client.close().await.unwrap();
    server.stop().await;
}
