//! A node's id: `server.node_id` when set, otherwise the host's name with a random suffix,
//! made on first start and kept in the data folder, so a node keeps its id (and its runs)
//! across restarts.

use std::path::Path;

use anyhow::Context;

/// The file in the data folder that keeps a node's id.
pub const NODE_ID_FILE: &str = "node-id";

/// Longest node id.
const MAX_LEN: usize = 64;

/// Why `id` cannot be a node id, if it cannot: 1 to 64 letters, digits, `.`, `_` or `-`.
pub fn check_node_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_LEN {
        return Err(format!("must have 1 to {MAX_LEN} characters"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "may hold only letters, digits, '.', '_' and '-', not {c:?}"
        ));
    }
    Ok(())
}

/// The node id: `configured`, or the one kept in `data_dir` (made there on first start).
pub fn resolve_node_id(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<String> {
    if let Some(id) = configured {
        return Ok(id.to_string());
    }
    let path = data_dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim().to_string();
            check_node_id(&id).map_err(|why| {
                anyhow::anyhow!(
                    "{} holds no usable node id ({why}); delete it to get a new one",
                    path.display()
                )
            })?;
            Ok(id)
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let id = new_node_id();
            std::fs::write(&path, format!("{id}\n"))
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(id)
        }
        Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The host's name (what a node id may hold of it) and six random hex digits.
fn new_node_id() -> String {
    let host: String = sysinfo::System::host_name()
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(MAX_LEN - 7)
        .collect();
    let suffix = hex::encode(rand::random::<[u8; 3]>());
    match host.is_empty() {
        true => format!("node-{suffix}"),
        false => format!("{host}-{suffix}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = resolve_node_id(None, dir.path()).unwrap();
        assert!(check_node_id(&first).is_ok(), "{first}");
        assert_eq!(resolve_node_id(None, dir.path()).unwrap(), first);
        assert_eq!(resolve_node_id(Some("east-1"), dir.path()).unwrap(), "east-1");
        std::fs::write(dir.path().join(NODE_ID_FILE), "no spaces\n").unwrap();
        assert!(resolve_node_id(None, dir.path()).is_err());
    }

    #[test]
    fn ids_are_checked() {
        assert!(check_node_id("a.b_c-1").is_ok());
        assert!(check_node_id("").is_err());
        assert!(check_node_id("a b").is_err());
        assert!(check_node_id(&"x".repeat(65)).is_err());
    }
}
