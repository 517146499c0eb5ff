//! Files and folders for what only the server's user may read: the admin and link keys, emails
//! with live links, backups, run logs and prompts. Files are created 0600 (never by following a
//! link an attacker left in their place), folders 0700.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;

/// Creates `dir` and any missing parents as folders only this user can enter (0700). A folder
/// that exists already keeps its mode: it may be someone's own folder, named in the config.
pub fn create_dir_private(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// [`create_dir_private`], and `dir` itself restricted to 0700 even if it existed: for the data
/// folder and the folders the server keeps inside it.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    create_dir_private(dir)?;
    std::fs::set_permissions(dir, Permissions::from_mode(0o700))
}

/// Options that create a new file readable by this user only; `path` must not exist yet (not
/// even as a symbolic link, which is never followed).
pub fn new_private_file() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true).mode(0o600);
    options
}

/// Creates a new private file at `path` (see [`new_private_file`]).
pub fn create_private_file(path: &Path) -> std::io::Result<File> {
    new_private_file().open(path)
}

/// A fresh name for a temporary file in a folder: hidden, random, and unguessable, so nobody can
/// prepare a file or link under it in advance.
pub fn temporary_name(stem: &str) -> String {
    format!(".{stem}.{}.partial", hex::encode(rand::random::<[u8; 12]>()))
}

/// Creates `path` (it must not exist) readable by this user only, holding `secret` and a newline,
/// and makes it durable. A failed write (a full disk, say) removes the file again, so the next
/// start creates it afresh instead of finding it empty.
pub fn create_secret_file(path: &Path, secret: &str) -> anyhow::Result<()> {
    let mut file = create_private_file(path).with_context(|| format!("cannot create {}", path.display()))?;
    let written = writeln!(file, "{secret}").and_then(|()| file.sync_all());
    if let Err(err) = written {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(err).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_and_folders() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        private_dir(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        create_dir_private(&dir).unwrap();
        assert_eq!(mode(&dir), 0o755, "an existing folder keeps its mode");
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700, "unless it is one of the server's own");

        let file = dir.join("secret");
        create_secret_file(&file, "s3cret").unwrap();
        assert_eq!(mode(&file), 0o600);
        assert!(create_private_file(&file).is_err(), "never over an existing file");
        let link = dir.join("link");
        std::os::unix::fs::symlink(root.path().join("elsewhere"), &link).unwrap();
        assert!(create_private_file(&link).is_err(), "never through a link");
        assert!(!root.path().join("elsewhere").exists());
        assert_ne!(temporary_name("x"), temporary_name("x"));
    }
}
