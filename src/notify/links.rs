//! Signed take and decline links: `/act/{notification}/{action}?e={expiry}&s={signature}`,
//! HMAC-SHA256 over the notification, the action and the expiry with a key kept in the data
//! folder. The link names no person: it acts as the person its notification was sent to.

use std::path::Path;

use anyhow::Context;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::{LinkAction, Timestamp};

/// The key's file inside the data folder.
pub const LINK_KEY_FILE: &str = "link.key";

/// Why a link is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The signature does not match: the link was altered or not made by this server.
    #[error("this link is not valid: it was altered or was not issued by this server")]
    Invalid,
    /// The link is past its expiry.
    #[error("this link expired on {0}")]
    Expired(String),
}

/// Signs and checks links.
pub struct LinkSigner {
    key: [u8; 32],
}

impl LinkSigner {
    /// A signer with this key.
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// Reads `<data-dir>/link.key`, creating it (mode 0600) with a random key on first start.
    /// Deleting the file invalidates every link sent so far.
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join(LINK_KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let bytes = hex::decode(text.trim())
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .with_context(|| {
                        format!(
                            "{} is not a 64-digit hex key; delete it to get a new one",
                            path.display()
                        )
                    })?;
                Ok(Self::new(bytes))
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                crate::files::create_secret_file(&path, &hex::encode(key))?;
                Ok(Self::new(key))
            }
            Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    fn mac(&self, id: i64, action: LinkAction, expires: i64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(format!("taskyard-link:v1:{id}:{}:{expires}", action.as_str()).as_bytes());
        mac
    }

    /// The path and query of a link (append to the server's public URL).
    pub fn path(&self, id: i64, action: LinkAction, expires: Timestamp) -> String {
        let expires = expires.millis() / 1000;
        let signature = hex::encode(self.mac(id, action, expires).finalize().into_bytes());
        format!("/act/{id}/{}?e={expires}&s={signature}", action.as_str())
    }

    /// Checks a link's signature (in constant time), then its expiry.
    pub fn verify(
        &self,
        id: i64,
        action: LinkAction,
        expires: i64,
        signature: &str,
        now: Timestamp,
    ) -> Result<(), LinkError> {
        let signature = hex::decode(signature).map_err(|_| LinkError::Invalid)?;
        self.mac(id, action, expires)
            .verify_slice(&signature)
            .map_err(|_| LinkError::Invalid)?;
        if now.millis() / 1000 >= expires {
            return Err(LinkError::Expired(
                Timestamp(expires.saturating_mul(1000)).to_rfc3339(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(path: &str) -> (i64, i64, String) {
        let (_, query) = path.split_once('?').unwrap();
        let e = query.split('&').find_map(|p| p.strip_prefix("e=")).unwrap();
        let s = query.split('&').find_map(|p| p.strip_prefix("s=")).unwrap();
        let id = path.split('/').nth(2).unwrap().parse().unwrap();
        (id, e.parse().unwrap(), s.to_string())
    }

    #[test]
    fn a_link_verifies_until_it_expires_and_not_when_altered() {
        let signer = LinkSigner::new([7; 32]);
        let now = Timestamp(1_700_000_000_000);
        let path = signer.path(42, LinkAction::Take, now.plus_millis(3_600_000));
        assert!(path.starts_with("/act/42/take?e="), "{path}");
        let (id, e, s) = parts(&path);
        assert_eq!(signer.verify(id, LinkAction::Take, e, &s, now), Ok(()));
        // Another notification, action or expiry, or another key: refused.
        assert_eq!(
            signer.verify(43, LinkAction::Take, e, &s, now),
            Err(LinkError::Invalid)
        );
        assert_eq!(
            signer.verify(id, LinkAction::Decline, e, &s, now),
            Err(LinkError::Invalid)
        );
        assert_eq!(
            signer.verify(id, LinkAction::Take, e + 1, &s, now),
            Err(LinkError::Invalid)
        );
        assert_eq!(
            signer.verify(id, LinkAction::Take, e, "zz", now),
            Err(LinkError::Invalid)
        );
        let other = LinkSigner::new([8; 32]);
        assert_eq!(
            other.verify(id, LinkAction::Take, e, &s, now),
            Err(LinkError::Invalid)
        );
        // Past its expiry.
        let late = now.plus_millis(3_600_000);
        assert!(matches!(
            signer.verify(id, LinkAction::Take, e, &s, late),
            Err(LinkError::Expired(_))
        ));
    }
}
