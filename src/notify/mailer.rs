//! The mailer: SMTP (plain, STARTTLS or implicit TLS, with optional authentication) or `.eml`
//! files in a folder. Sending failures are sorted into "try again" and "give up".

use std::path::PathBuf;

use anyhow::Context;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::io::AsyncWriteExt;

use crate::config::{NotifyConfig, SmtpTls, Transport};

/// A failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    /// True when trying again cannot help: the server refused this message or recipient for good.
    pub permanent: bool,
    /// True when no message could get through now (connection, TLS, authentication): the round
    /// stops instead of spending every queued message's attempt on the same fault.
    pub server_fault: bool,
    /// What went wrong, with the mail server's answer where there was one.
    pub message: String,
}

/// Sends one message at a time.
pub enum Mailer {
    /// Through an SMTP server, giving up on one message after the duration.
    Smtp(AsyncSmtpTransport<Tokio1Executor>, std::time::Duration),
    /// Into this folder, one `.eml` file per message.
    File(PathBuf),
}

impl Mailer {
    /// Builds the configured mailer. The SMTP password comes from the environment variable
    /// `notify.smtp.password_env` and is never logged.
    pub fn from_config(config: &NotifyConfig, data_dir: &std::path::Path) -> anyhow::Result<Mailer> {
        match config.transport {
            Transport::File => {
                // The emails carry live take links: their folder is private. A folder of the
                // operator's own choosing keeps its mode if it exists.
                let (dir, ours) = match &config.file_dir {
                    Some(dir) => (dir.clone(), false),
                    None => (data_dir.join("mail"), true),
                };
                let made = if ours {
                    crate::files::private_dir(&dir)
                } else {
                    crate::files::create_dir_private(&dir)
                };
                made.with_context(|| format!("cannot create the mail folder {}", dir.display()))?;
                Ok(Mailer::File(dir))
            }
            Transport::Smtp => {
                let smtp = &config.smtp;
                let builder = match smtp.tls {
                    SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host),
                    SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)
                        .with_context(|| format!("notify.smtp.host: cannot use {:?} for TLS", smtp.host))?,
                    SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host)
                        .with_context(|| format!("notify.smtp.host: cannot use {:?} for TLS", smtp.host))?,
                };
                let mut builder = builder.port(smtp.effective_port()).timeout(Some(smtp.timeout.0));
                if let Some(user) = &smtp.username {
                    let password = std::env::var(&smtp.password_env).with_context(|| {
                        format!(
                            "notify.smtp.username is set, but the password variable {} is not",
                            smtp.password_env
                        )
                    })?;
                    builder = builder.credentials(Credentials::new(user.clone(), password));
                }
                // The client's own timeout does not cover every wait (a server that accepts the
                // connection and never greets hangs it), so each message also has a deadline.
                Ok(Mailer::Smtp(builder.build(), smtp.timeout.0 * 3))
            }
        }
    }

    /// True for the file transport: its `.eml` files are read as they are, not by a mail client.
    pub fn writes_files(&self) -> bool {
        matches!(self, Mailer::File(_))
    }

    /// Sends `message`.
    pub async fn send(&self, message: Message) -> Result<(), SendError> {
        match self {
            Mailer::Smtp(smtp, deadline) => match tokio::time::timeout(*deadline, smtp.send(message)).await {
                Err(_) => Err(SendError {
                    permanent: false,
                    server_fault: true,
                    message: format!(
                        "the mail server did not answer within {} s (timed out)",
                        deadline.as_secs()
                    ),
                }),
                Ok(sent) => sent.map(drop).map_err(|e| {
                    let code = e.status().map(|c| c.to_string());
                    // 550-555: this mailbox, address or message is refused. Other 5xx answers, such
                    // as 530/535 (authentication), are the server's setup and may be fixed.
                    let refused = code
                        .as_deref()
                        .is_some_and(|c| matches!(c, "550" | "551" | "552" | "553" | "554" | "555"));
                    SendError {
                        permanent: e.is_permanent() && refused,
                        server_fault: !refused && !e.is_transient(),
                        message: error_chain(&e),
                    }
                }),
            },
            Mailer::File(dir) => write_eml(dir, &message.formatted()).await.map_err(|e| SendError {
                permanent: false,
                server_fault: true,
                message: format!("cannot write to {}: {}", dir.display(), error_chain(&e)),
            }),
        }
    }
}

/// Writes one message into `dir` as `<random hex>.eml` (0600: it holds live links): under a
/// hidden temporary name first, renamed once complete, so a reader of the folder never sees half
/// a message, and a failed write (a full disk, say) leaves nothing behind to be sent twice or to
/// take space.
async fn write_eml(dir: &std::path::Path, raw: &[u8]) -> std::io::Result<()> {
    let id = hex::encode(rand::random::<[u8; 16]>());
    let partial = dir.join(format!(".{id}.eml.partial"));
    let written = async {
        let mut file = tokio::fs::OpenOptions::from(crate::files::new_private_file())
            .open(&partial)
            .await?;
        file.write_all(raw).await?;
        // The writes are buffered: their error surfaces at a flush, while sync_all would keep it
        // for a later call and report success.
        file.flush().await?;
        file.sync_all().await?;
        tokio::fs::rename(&partial, dir.join(format!("{id}.eml"))).await
    }
    .await;
    if written.is_err() {
        let _ = tokio::fs::remove_file(&partial).await;
    }
    written
}

/// An error with its causes, one after another.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}
