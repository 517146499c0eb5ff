//! Humans in the loop: work for people reaches them by email over real SMTP, with signed
//! one-time take and decline links; sending survives a mail server that is down, across a
//! restart, and a permanent rejection ends as failed with the server's answer.

use std::path::Path;
use std::time::Duration;

use mail_parser::MessageParser;
use reqwest::StatusCode;
use serde_json::{json, Value};
use taskyard::config::{Config, HumanConfig, SmtpTls, Transport};
use taskyard::domain::time::Span;
use taskyard::domain::{LinkAction, Timestamp};
use taskyard::notify::LinkSigner;

use crate::smtp::{closed_port, Received, SmtpServer};
use crate::support::{test_config, Server};

fn human(name: &str, capabilities: &[&str]) -> HumanConfig {
    HumanConfig {
        name: name.into(),
        email: format!("{name}@example.com"),
        capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
        projects: vec![],
    }
}

/// Assignment and notify loops (both woken at once), SMTP on `port`, retries after 1s.
pub(crate) fn mail_config(data_dir: &Path, port: u16) -> Config {
    let mut config = test_config(data_dir);
    for (name, kind) in [("assignment", "assignment"), ("notify", "notify")] {
        std::fs::write(
            config.server.loops_dir.join(format!("{name}.toml")),
            format!("kind = \"{kind}\"\nschedule = \"every 1s\"\n"),
        )
        .unwrap();
    }
    config.notify.transport = Transport::Smtp;
    config.notify.from = "taskyard <taskyard@example.com>".into();
    config.notify.smtp.host = "127.0.0.1".into();
    config.notify.smtp.port = Some(port);
    config.notify.smtp.tls = SmtpTls::None;
    config.notify.smtp.timeout = Span(Duration::from_secs(10));
    config.notify.retry_backoff = Span(Duration::from_secs(1));
    config.humans = vec![
        human("ana", &["architecture"]),
        human("bo", &["architecture", "api"]),
    ];
    config
}

/// Polls `check` until it returns something (at most a minute, as a guard against a hang).
pub(crate) async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    mut check: impl FnMut() -> F,
) -> T {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Some(v) = check().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the condition came true")
}

pub(crate) async fn notifications(server: &Server, task_id: &Value) -> Vec<Value> {
    let (status, page) = server
        .get(&server.admin, &format!("/notifications?task_id={task_id}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"].as_array().unwrap().clone()
}

/// The text part of a delivered email.
fn text_of(mail: &Received) -> String {
    let message = MessageParser::default()
        .parse(mail.data.as_bytes())
        .expect("a parsable email");
    message.body_text(0).expect("a text part").to_string()
}

/// The take and decline links in a text body.
fn links(text: &str) -> (String, String) {
    let find = |action: &str| {
        text.split_whitespace()
            .find(|w| w.contains("/act/") && w.contains(&format!("/{action}?")))
            .unwrap_or_else(|| panic!("no {action} link in:\n{text}"))
            .to_string()
    };
    (find("take"), find("decline"))
}

async fn page(method: reqwest::Method, url: &str) -> (StatusCode, String) {
    let resp = reqwest::Client::new().request(method, url).send().await.unwrap();
    let status = resp.status();
    let type_ = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(type_.starts_with("text/html"), "{type_}");
    (status, resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strategic_task_is_mailed_and_taken_with_a_one_time_link() {
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::boot(mail_config(dir.path(), smtp.port)).await;
    let task = server
        .task(json!({
            "title": "Choose the queue backend",
            "kind": "architecture",
            "description": "Kafka or SQS? Latency <50ms & cost matter.",
            "acceptance_criteria": ["a decision record", "a migration plan"],
            "capabilities": ["architecture"]
        }))
        .await;

    let mail = smtp.wait_for(1).await.remove(0);
    assert_eq!(mail.to, ["<ana@example.com>"], "the first matching person");
    assert_eq!(mail.from, "<taskyard@example.com>");
    let message = MessageParser::default()
        .parse(mail.data.as_bytes())
        .expect("a parsable email");
    let subject = message.subject().unwrap();
    assert!(
        subject.contains(&format!(
            "[P2 architecture #{}] Choose the queue backend",
            task["id"]
        )),
        "{subject}"
    );
    assert_eq!(
        message.to().unwrap().first().unwrap().address(),
        Some("ana@example.com")
    );
    let text = message.body_text(0).expect("a text part").to_string();
    let html = message.body_html(0).expect("an HTML part").to_string();
    for part in [&text, &html] {
        assert!(part.contains("Choose the queue backend"), "{part}");
        assert!(part.contains("a migration plan"), "acceptance criteria: {part}");
        assert!(part.contains("architecture"), "why it came to a person: {part}");
        assert!(
            part.contains(&format!("/#/tasks/{}", task["id"])),
            "dashboard link: {part}"
        );
    }
    assert!(
        html.contains("Latency &lt;50ms &amp; cost"),
        "task text is escaped: {html}"
    );
    let (take, decline) = links(&text);
    assert!(html.contains(&take.replace('&', "&amp;")) && html.contains(&decline.replace('&', "&amp;")));

    // Accepted by the mail server, then recorded as sent.
    let sent = eventually(|| async {
        Some(notifications(&server, &task["id"]).await).filter(|l| l.iter().all(|n| n["status"] == "sent"))
    })
    .await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["reason"], "routed");
    assert_eq!(sent[0]["human"], "ana");

    // GET only shows a confirmation: mail scanners that follow links change nothing.
    let (status, body) = page(reqwest::Method::GET, &take).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains("Take this task?") && body.contains("<form method=\"post\""),
        "{body}"
    );
    let (_, t) = server.get(&server.admin, &format!("/tasks/{}", task["id"])).await;
    assert_eq!(t["status"], "available", "a GET changes nothing");

    // POST acts: the task is ana's.
    let (status, body) = page(reqwest::Method::POST, &take).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("The task is yours"), "{body}");
    let (_, t) = server.get(&server.admin, &format!("/tasks/{}", task["id"])).await;
    assert_eq!(t["status"], "in_progress");
    assert_eq!(t["lease"]["holder"], "ana");

    // Used once: both links are spent, and nothing changes.
    let (status, body) = page(reqwest::Method::POST, &take).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _) = page(reqwest::Method::POST, &decline).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, body) = page(reqwest::Method::GET, &take).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(body.contains("already used"), "{body}");
    let (_, t) = server.get(&server.admin, &format!("/tasks/{}", task["id"])).await;
    assert_eq!(t["lease"]["holder"], "ana");

    // A tampered link (another notification, another action, another signature) is refused.
    let mut tampered = take.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });
    let id = sent[0]["id"].as_i64().unwrap();
    let other_id = take.replace(&format!("/act/{id}/"), &format!("/act/{}/", id + 1));
    assert_ne!(other_id, take);
    for url in [tampered, take.replace("/take?", "/decline?"), other_id] {
        let (status, body) = page(reqwest::Method::POST, &url).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{url}: {body}");
    }

    // An expired link, properly signed, is refused.
    let key = std::fs::read_to_string(dir.path().join("link.key")).unwrap();
    let signer = LinkSigner::new(hex::decode(key.trim()).unwrap().try_into().unwrap());
    let expired = format!(
        "{}{}",
        server.url,
        signer.path(id, LinkAction::Take, Timestamp::now().plus_millis(-1000))
    );
    let (status, body) = page(reqwest::Method::POST, &expired).await;
    assert_eq!(status, StatusCode::GONE, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declining_passes_the_task_to_the_next_person_then_to_the_queue() {
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::boot(mail_config(dir.path(), smtp.port)).await;
    let task = server
        .task(json!({"title": "Pick a licence", "kind": "strategic", "capabilities": ["architecture"]}))
        .await;
    let first = smtp.wait_for(1).await.remove(0);
    assert_eq!(first.to, ["<ana@example.com>"]);
    let text = text_of(&first);
    let (_, decline) = links(&text);
    let (status, body) = page(reqwest::Method::POST, &decline).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("offered to <b>bo</b>"), "{body}");

    let second = smtp.wait_for(2).await.remove(1);
    assert_eq!(second.to, ["<bo@example.com>"]);
    let text = text_of(&second);
    let (_, decline) = links(&text);
    let (status, body) = page(reqwest::Method::POST, &decline).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("manual queue"), "{body}");

    let list = notifications(&server, &task["id"]).await;
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list.iter().all(|n| n["action"] == "decline"));
    let (_, why) = server
        .get(&server.admin, &format!("/tasks/{}/why", task["id"]))
        .await;
    assert!(why.to_string().contains("declined by bo"), "{why}");
    let (_, t) = server.get(&server.admin, &format!("/tasks/{}", task["id"])).await;
    assert_eq!(t["status"], "available", "still waiting for a person");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_waits_out_a_dead_smtp_server_across_a_restart() {
    let port = closed_port();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::boot(mail_config(dir.path(), port)).await;
    let task = server
        .task(json!({"title": "Approve the budget", "kind": "strategic", "capabilities": ["architecture"]}))
        .await;
    // The server is down: the attempt fails and the email waits for another.
    let failed_once = eventually(|| async {
        notifications(&server, &task["id"])
            .await
            .into_iter()
            .find(|n| n["attempts"].as_i64() >= Some(1))
    })
    .await;
    assert_eq!(failed_once["status"], "queued", "{failed_once}");
    assert!(failed_once["last_error"].as_str().is_some(), "{failed_once}");
    server.stop().await;

    // The mail server comes up while taskyard is down; after the restart the email goes out.
    let smtp = SmtpServer::start_on(port, None).await;
    let server = Server::boot(mail_config(dir.path(), port)).await;
    let mail = smtp.wait_for(1).await.remove(0);
    assert_eq!(mail.to, ["<ana@example.com>"]);
    let sent = eventually(|| async {
        notifications(&server, &task["id"])
            .await
            .into_iter()
            .find(|n| n["status"] == "sent")
    })
    .await;
    assert!(sent["attempts"].as_i64() >= Some(2), "{sent}");
    assert_eq!(
        notifications(&server, &task["id"]).await.len(),
        1,
        "one email, not one per attempt"
    );
    assert_eq!(smtp.received().len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_rejection_ends_as_failed_with_the_servers_answer() {
    let smtp = SmtpServer::start_on(0, Some("550 5.1.1 <ana@example.com>: no such mailbox")).await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::boot(mail_config(dir.path(), smtp.port)).await;
    let mut events = server.app_store.bus().subscribe();
    let task = server
        .task(json!({"title": "Rename the product", "kind": "strategic", "capabilities": ["architecture"]}))
        .await;
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Ok(e) = events.recv().await {
                if e.kind() == "notification.failed" {
                    return;
                }
            }
        }
    })
    .await
    .expect("the failure is recorded as an event");
    let list = notifications(&server, &task["id"]).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["status"], "failed");
    assert_eq!(list[0]["attempts"], 1, "a permanent answer is not retried");
    let error = list[0]["last_error"].as_str().unwrap();
    assert!(
        error.contains("550") && error.contains("no such mailbox"),
        "{error}"
    );
    assert!(smtp.received().is_empty());
    server.stop().await;
}

/// The `.eml` files in `dir`, parsed: (to, subject, text).
fn mail_files(dir: &Path) -> Vec<(String, String, String)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .map(|e| {
            let raw = std::fs::read(e.path()).unwrap();
            let m = MessageParser::default().parse(&raw[..]).unwrap();
            (
                m.to().unwrap().first().unwrap().address().unwrap().to_string(),
                m.subject().unwrap().to_string(),
                m.body_text(0).unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_and_failed_work_reaches_people_as_files_and_in_the_daily_digest() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = mail_config(dir.path(), closed_port());
    config.notify.transport = Transport::File;
    std::fs::write(
        config.server.loops_dir.join("digest.toml"),
        "kind = \"digest\"\nschedule = \"0 0 8 * * *\"\n",
    )
    .unwrap();
    let mail = dir.path().join("mail");
    let server = Server::boot(config).await;
    let agent = server.agent("worker", &["architecture"]).await;

    // An agent blocks a task on a decision: the first matching person is told, and taking it
    // from the email lifts the block and claims it for them.
    let blocked = server
        .task(json!({"title": "Migrate the billing tables", "capabilities": ["architecture"]}))
        .await;
    let (_, claim) = server
        .post(&agent, &format!("/tasks/{}/claim", blocked["id"]), json!({}))
        .await;
    let (status, _) = server
        .post(
            &agent,
            &format!("/tasks/{}/block", blocked["id"]),
            json!({"fence": claim["lease"]["fence"], "reason": "drop the legacy column or keep it?"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let files = eventually(|| async { Some(mail_files(&mail)).filter(|f| !f.is_empty()) }).await;
    let (to, subject, text) = &files[0];
    assert_eq!(to, "ana@example.com");
    assert!(subject.contains("is blocked on a decision"), "{subject}");
    assert!(text.contains("drop the legacy column or keep it?"), "{text}");
    let (take, _) = links(text);
    // The link survives copying it out of the .eml file as it stands (no quoted-printable
    // `=3D` or line folding in the text part).
    let raw: Vec<String> = std::fs::read_dir(&mail)
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .collect();
    assert!(
        raw.iter().any(|eml| eml.lines().any(|line| line.contains(&take))),
        "{take} is not whole in the file: {raw:?}"
    );
    let (status, body) = page(reqwest::Method::POST, &take).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, t) = server
        .get(&server.admin, &format!("/tasks/{}", blocked["id"]))
        .await;
    assert_eq!(t["status"], "in_progress");
    assert_eq!(t["lease"]["holder"], "ana");

    // A task that fails for good is reported (without links: there is nothing to take).
    let failing = server
        .task(
            json!({"title": "Rotate the signing keys", "capabilities": ["architecture"], "max_attempts": 1}),
        )
        .await;
    let dependent = server
        .task(
            json!({"title": "Re-sign the releases", "capabilities": ["architecture"],
                     "depends_on": [failing["id"]]}),
        )
        .await;
    let (_, claim) = server
        .post(&agent, &format!("/tasks/{}/claim", failing["id"]), json!({}))
        .await;
    let (status, _) = server
        .post(
            &agent,
            &format!("/tasks/{}/fail", failing["id"]),
            json!({"fence": claim["lease"]["fence"], "reason": "the HSM refused", "retryable": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let files = eventually(|| async { Some(mail_files(&mail)).filter(|f| f.len() >= 2) }).await;
    let (_, subject, text) = files.iter().find(|f| f.1.contains("failed after")).unwrap();
    assert!(subject.contains("Rotate the signing keys"), "{subject}");
    assert!(
        text.contains("the HSM refused") && !text.contains("/act/"),
        "{text}"
    );
    // Its dependent is blocked in the same transaction, but that is the failure's news: the
    // events were turned into notifications together, and none is about the dependent.
    let (_, t) = server
        .get(&server.admin, &format!("/tasks/{}", dependent["id"]))
        .await;
    assert_eq!(t["status"], "blocked");
    assert!(notifications(&server, &dependent["id"]).await.is_empty());

    // The digest lists what waits on each person, once a day however often it runs.
    let waiting = server
        .task(
            json!({"title": "Choose a cloud region", "kind": "strategic", "capabilities": ["architecture"]}),
        )
        .await;
    eventually(|| async {
        let list = notifications(&server, &waiting["id"]).await;
        list.iter().any(|n| n["status"] == "sent").then_some(())
    })
    .await;
    server.loops.run_now("digest").await.unwrap();
    server.loops.run_now("digest").await.unwrap();
    let (_, all) = server.get(&server.admin, "/notifications?limit=500").await;
    let queued = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["reason"] == "digest")
        .count();
    assert_eq!(queued, 1, "{all}");
    let files = eventually(|| async {
        let files = mail_files(&mail);
        files.iter().any(|f| f.1.contains("digest")).then_some(files)
    })
    .await;
    let digests: Vec<_> = files.iter().filter(|f| f.1.contains("digest")).collect();
    assert_eq!(digests.len(), 1, "one digest per person and day: {digests:?}");
    let (to, subject, text) = digests[0];
    assert_eq!(to, "ana@example.com");
    assert!(subject.contains("1 waiting, 1 blocked, 1 failed"), "{subject}");
    assert!(
        text.contains("Choose a cloud region")
            && text.contains("Re-sign the releases")
            && text.contains("Rotate the signing keys"),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manual_queue_shows_offers_and_declines_them_through_the_api() {
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::boot(mail_config(dir.path(), smtp.port)).await;
    let task = server
        .task(json!({"title": "Pick the vendor", "kind": "strategic", "capabilities": ["architecture"]}))
        .await;
    smtp.wait_for(1).await;
    let offered = |queue: &Value| {
        queue["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["task"]["id"] == task["id"])
            .map(|i| i["offered_to"].clone())
    };
    let queue = eventually(|| async {
        let (_, queue) = server.get(&server.admin, "/queue").await;
        Some(queue).filter(|q| offered(q) == Some(json!("ana")))
    })
    .await;
    assert_eq!(offered(&queue), Some(json!("ana")));

    // An agent may not decline for a person; an admin may.
    let agent = server.agent("worker", &["architecture"]).await;
    let path = format!("/queue/{}/decline", task["id"]);
    let (status, _) = server.post(&agent, &path, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = server.post(&server.admin, &path, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"declined_by": "ana", "offered_to": "bo"}));
    assert_eq!(smtp.wait_for(2).await[1].to, ["<bo@example.com>"]);
    let (_, queue) = server.get(&server.admin, "/queue").await;
    assert_eq!(offered(&queue), Some(json!("bo")));
    let (status, body) = server.post(&server.admin, &path, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["offered_to"], Value::Null, "nobody is left: {body}");
    let (status, body) = server.post(&server.admin, &path, json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "no offer is open: {body}");
    server.stop().await;
}
