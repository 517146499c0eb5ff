//! Rendering emails: a subject with priority, kind, id and title; a text part and an HTML part
//! with the task, why it came to a person, a dashboard link and the take and decline links.

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::Message;

use crate::domain::{Reason, Task, Timestamp};

/// A rendered body, in both parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    /// The text/plain part.
    pub text: String,
    /// The text/html part.
    pub html: String,
}

/// Take and decline links of one email.
#[derive(Debug, Clone)]
pub struct Links {
    /// Claims the task for the recipient.
    pub take: String,
    /// Passes it to the next person.
    pub decline: String,
    /// When both stop working.
    pub expires: Timestamp,
}

/// Longest title shown in a subject.
const SUBJECT_TITLE: usize = 120;

/// What the email says happened, in a few words.
fn headline(reason: Reason) -> &'static str {
    match reason {
        Reason::Routed => "needs a person",
        Reason::SpawnFallback => "could not be given to an agent",
        Reason::Failed => "failed after its last attempt",
        Reason::Blocked => "is blocked on a decision",
        Reason::Stalled => "has stalled",
        Reason::Digest => "digest",
    }
}

/// `[P1 architecture #42] Choose the queue backend — needs a person`.
pub fn subject(task: &Task, reason: Reason) -> String {
    let mut title: String = task.title.chars().take(SUBJECT_TITLE).collect();
    if title.len() < task.title.len() {
        title.push('…');
    }
    format!(
        "[{} {} #{}] {} — {}",
        task.priority.as_str(),
        task.kind,
        task.id,
        title,
        headline(reason)
    )
}

/// The link to a task in the dashboard.
pub fn dashboard_link(base_url: &str, task_id: i64) -> String {
    format!("{base_url}/#/tasks/{task_id}")
}

/// The body of an email about one task.
pub fn task_body(task: &Task, reason: Reason, why: &str, links: Option<&Links>, base_url: &str) -> Body {
    let dashboard = dashboard_link(base_url, task.id);
    let facts = format!(
        "Priority {} · kind {} · project {} · status {}{}",
        task.priority.as_str(),
        task.kind,
        task.project,
        task.status,
        if task.capabilities.is_empty() {
            String::new()
        } else {
            format!(" · needs {}", task.capabilities.join(", "))
        }
    );
    let mut text = format!(
        "Task #{} {}.\n\n{}\n{}\n\n",
        task.id,
        headline(reason),
        task.title,
        facts
    );
    let mut html = format!(
        "<p>Task <b>#{}</b> {}.</p>\n<h2 style=\"font-size:1.2em\">{}</h2>\n<p style=\"color:#555\">{}</p>\n",
        task.id,
        headline(reason),
        escape(&task.title),
        escape(&facts)
    );
    if !task.description.trim().is_empty() {
        text.push_str(&format!("Description:\n{}\n\n", task.description.trim()));
        html.push_str(&format!(
            "<h3>Description</h3>\n<pre style=\"white-space:pre-wrap;font-family:inherit\">{}</pre>\n",
            escape(task.description.trim())
        ));
    }
    if !task.acceptance_criteria.is_empty() {
        text.push_str("Acceptance criteria:\n");
        html.push_str("<h3>Acceptance criteria</h3>\n<ul>\n");
        for c in &task.acceptance_criteria {
            text.push_str(&format!("- {c}\n"));
            html.push_str(&format!("<li>{}</li>\n", escape(c)));
        }
        text.push('\n');
        html.push_str("</ul>\n");
    }
    text.push_str(&format!("Why it came to a person: {why}\n\n"));
    html.push_str(&format!(
        "<h3>Why it came to a person</h3>\n<p>{}</p>\n",
        escape(why)
    ));
    if let Some(links) = links {
        let expires = links.expires.to_rfc3339();
        text.push_str(&format!(
            "Take it (it becomes yours; nobody else gets it):\n{}\n\n\
             Decline (it goes to the next person, or back to the queue):\n{}\n\n\
             Each link asks you to confirm; they work once and expire at {expires}.\n\n",
            links.take, links.decline
        ));
        html.push_str(&format!(
            "<p><a href=\"{}\" style=\"display:inline-block;padding:8px 16px;background:#1a7f37;color:#fff;\
             text-decoration:none;border-radius:6px\">Take it</a> &nbsp; \
             <a href=\"{}\" style=\"display:inline-block;padding:8px 16px;background:#eee;color:#222;\
             text-decoration:none;border-radius:6px\">Decline</a></p>\n\
             <p style=\"color:#555;font-size:.9em\">Each link asks you to confirm; they work once and expire at {}.</p>\n",
            escape(&links.take),
            escape(&links.decline),
            escape(&expires)
        ));
    }
    text.push_str(&format!("Open it in the dashboard: {dashboard}\n"));
    html.push_str(&format!(
        "<p><a href=\"{}\">Open it in the dashboard</a></p>\n",
        escape(&dashboard)
    ));
    Body {
        text,
        html: wrap_html(&html),
    }
}

/// The daily digest for one person: sections of tasks, each line linking to the dashboard.
pub fn digest_body(name: &str, sections: &[(&str, Vec<&Task>)], base_url: &str) -> Body {
    let mut text = format!("Hello {name}, here is what waits on you in taskyard.\n\n");
    let mut html = format!(
        "<p>Hello {}, here is what waits on you in taskyard.</p>\n",
        escape(name)
    );
    for (title, tasks) in sections.iter().filter(|(_, t)| !t.is_empty()) {
        text.push_str(&format!("{title} ({}):\n", tasks.len()));
        html.push_str(&format!("<h3>{} ({})</h3>\n<ul>\n", escape(title), tasks.len()));
        for task in tasks {
            let link = dashboard_link(base_url, task.id);
            let reason = task.status_reason.as_deref().unwrap_or_default();
            text.push_str(&format!(
                "- [{}] #{} {}{}\n  {link}\n",
                task.priority.as_str(),
                task.id,
                task.title,
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(" — {reason}")
                }
            ));
            html.push_str(&format!(
                "<li>[{}] <a href=\"{}\">#{} {}</a>{}</li>\n",
                task.priority.as_str(),
                escape(&link),
                task.id,
                escape(&task.title),
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(" — {}", escape(reason))
                }
            ));
        }
        text.push('\n');
        html.push_str("</ul>\n");
    }
    Body {
        text,
        html: wrap_html(&html),
    }
}

fn wrap_html(inner: &str) -> String {
    format!(
        "<!doctype html>\n<html><body style=\"font-family:system-ui,sans-serif;line-height:1.45;max-width:640px\">\n\
         {inner}<p style=\"color:#888;font-size:.8em\">Sent by taskyard.</p>\n</body></html>\n"
    )
}

/// Builds the message with both parts.
///
/// With `eight_bit` the text part is written as 8-bit UTF-8, line for line, so the links in a
/// saved `.eml` file can be copied as they stand; otherwise lettre chooses (quoted-printable
/// for long lines or non-ASCII text), which any mail server accepts.
pub fn message(from: &str, to: &str, subject: &str, body: &Body, eight_bit: bool) -> Result<Message, String> {
    let from: Mailbox = from.parse().map_err(|e| format!("notify.from {from:?}: {e}"))?;
    let to: Mailbox = to.parse().map_err(|e| format!("recipient {to:?}: {e}"))?;
    let text = if eight_bit {
        SinglePart::builder()
            .header(ContentType::TEXT_PLAIN)
            .header(ContentTransferEncoding::EightBit)
            .body(lettre::message::Body::dangerous_pre_encoded(
                eight_bit_lines(&body.text).into_bytes(),
                ContentTransferEncoding::EightBit,
            ))
    } else {
        SinglePart::plain(body.text.clone())
    };
    Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        .multipart(
            MultiPart::alternative()
                .singlepart(text)
                .singlepart(SinglePart::html(body.html.clone())),
        )
        .map_err(|e| format!("cannot build the email: {e}"))
}

/// Longest line of an 8-bit body, in bytes without the line break (RFC 5322 allows 998).
const MAX_8BIT_LINE: usize = 990;

/// `text` as an 8-bit MIME body: CRLF line breaks, no NUL, and lines folded (at a character
/// boundary) when longer than the standard allows.
fn eight_bit_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 32);
    for line in text.replace('\0', "").lines() {
        let mut rest = line;
        while rest.len() > MAX_8BIT_LINE {
            let mut cut = MAX_8BIT_LINE;
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            out.push_str(&rest[..cut]);
            out.push_str("\r\n");
            rest = &rest[cut..];
        }
        out.push_str(rest);
        out.push_str("\r\n");
    }
    out
}

/// Escapes text for HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Priority;

    #[test]
    fn task_text_is_escaped_in_html_and_the_subject_names_the_task() {
        let task = Task {
            id: 42,
            title: "Pick <b>one</b> & go".into(),
            kind: "architecture".into(),
            priority: Priority::P1,
            acceptance_criteria: vec!["a \"quoted\" thing".into()],
            ..crate::spawn::router::tests_support::sample_task()
        };
        assert_eq!(
            subject(&task, Reason::Routed),
            "[P1 architecture #42] Pick <b>one</b> & go — needs a person"
        );
        let links = Links {
            take: "http://h/act/1/take?e=1&s=ab".into(),
            decline: "http://h/act/1/decline?e=1&s=ab".into(),
            expires: Timestamp(0),
        };
        let body = task_body(
            &task,
            Reason::Routed,
            "kind <architecture>",
            Some(&links),
            "http://h",
        );
        assert!(body.html.contains("Pick &lt;b&gt;one&lt;/b&gt; &amp; go"));
        assert!(!body.html.contains("<b>one</b>"));
        assert!(body.html.contains("kind &lt;architecture&gt;"));
        assert!(body.html.contains("href=\"http://h/act/1/take?e=1&amp;s=ab\""));
        assert!(body.text.contains("http://h/act/1/take?e=1&s=ab"));
        assert!(body.text.contains("http://h/#/tasks/42"));
        for eight_bit in [false, true] {
            let message = message(
                "t <t@example.com>",
                "a@example.com",
                &subject(&task, Reason::Routed),
                &body,
                eight_bit,
            );
            assert!(message.is_ok());
        }
    }

    #[test]
    fn an_eight_bit_text_part_keeps_links_whole_and_lines_legal() {
        let link = format!(
            "https://taskyard.example.com/act/12/take?e=1767225600&s={}",
            "ab".repeat(32)
        );
        let long = "é".repeat(800);
        let body = Body {
            text: format!("Take it: {link}\nCafé · naïve\n{long}\n"),
            html: "<p>x</p>".into(),
        };
        let raw = message("t <t@example.com>", "a@example.com", "s", &body, true)
            .unwrap()
            .formatted();
        let raw = String::from_utf8(raw).unwrap();
        assert!(raw.contains("Content-Transfer-Encoding: 8bit"), "{raw}");
        assert!(
            raw.contains(&format!("Take it: {link}\r\n")),
            "the link stands on one line"
        );
        assert!(raw.contains("Café · naïve\r\n"), "UTF-8 as it is");
        assert!(
            raw.split("\r\n").all(|line| line.len() <= 998),
            "no line too long"
        );
        assert!(
            raw.contains(&"é".repeat(400)),
            "a long line is folded, not encoded"
        );
    }
}
