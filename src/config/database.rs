//! `server.database_url`: which registry the server runs on. Absent (or `sqlite://`) is the
//! embedded SQLite file in the data folder; `sqlite://PATH` another SQLite file;
//! `postgres://…` / `postgresql://…` a PostgreSQL database. Printed with its password redacted.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ConfigError, DATABASE_FILE};

/// A database URL, as configured.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

/// The backend a [`DatabaseUrl`] names.
#[derive(Clone, PartialEq, Eq)]
pub enum Backend {
    /// The embedded SQLite registry in this file.
    Sqlite(PathBuf),
    /// A PostgreSQL database at this URL.
    Postgres(String),
}

impl DatabaseUrl {
    /// Wraps `url` once it names a backend taskyard has.
    pub fn parse(url: &str) -> Result<DatabaseUrl, ConfigError> {
        let url = DatabaseUrl(url.trim().to_string());
        url.check()?;
        Ok(url)
    }

    /// Refuses a URL that names no backend taskyard has (without printing its password).
    pub fn check(&self) -> Result<(), ConfigError> {
        let url = &self.0;
        let known = ["sqlite://", "postgres://", "postgresql://"];
        if !known.iter().any(|scheme| url.starts_with(scheme)) {
            return Err(ConfigError::Invalid {
                field: "server.database_url".into(),
                message: format!(
                    "{:?} is not a database URL taskyard knows: use sqlite://PATH or \
                     postgres://USER:PASSWORD@HOST:PORT/DATABASE",
                    crate::store::postgres::redact(url)
                ),
            });
        }
        Ok(())
    }

    /// The backend this URL names; a SQLite path that is relative is taken from `data_dir`'s
    /// parent as the working directory would, an empty one is the data folder's file.
    pub fn backend(&self, data_dir: &Path) -> Backend {
        match self.0.strip_prefix("sqlite://") {
            Some("") => Backend::Sqlite(data_dir.join(DATABASE_FILE)),
            Some(path) => Backend::Sqlite(PathBuf::from(path)),
            None => Backend::Postgres(self.0.clone()),
        }
    }

    /// The URL itself; for connecting only, never to print.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its password replaced, to print.
    pub fn redacted(&self) -> String {
        crate::store::postgres::redact(&self.0)
    }
}

/// The backend of an optional URL: none is the data folder's SQLite file.
pub fn backend_of(url: Option<&DatabaseUrl>, data_dir: &Path) -> Backend {
    match url {
        Some(url) => url.backend(data_dir),
        None => Backend::Sqlite(data_dir.join(DATABASE_FILE)),
    }
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::Sqlite(file) => write!(f, "Sqlite({file:?})"),
            Backend::Postgres(url) => write!(f, "Postgres({:?})", crate::store::postgres::redact(url)),
        }
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted())
    }
}

/// Read as it is written and judged by [`DatabaseUrl::check`] when the config is validated: a
/// refusal here would come back with the file's line quoted, password and all.
impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|url| DatabaseUrl(url.trim().to_string()))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_names_its_backend_and_prints_without_its_password() {
        let data = Path::new("/srv/ty");
        let pg = DatabaseUrl::parse("postgres://ty:pw@db:5432/ty").unwrap();
        assert_eq!(
            pg.backend(data),
            Backend::Postgres("postgres://ty:pw@db:5432/ty".into())
        );
        assert_eq!(format!("{pg:?}"), "postgres://ty:<redacted>@db:5432/ty");
        assert_eq!(
            DatabaseUrl::parse("sqlite://").unwrap().backend(data),
            Backend::Sqlite(data.join(DATABASE_FILE))
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:///var/ty.db").unwrap().backend(data),
            Backend::Sqlite("/var/ty.db".into())
        );
        assert_eq!(backend_of(None, data), Backend::Sqlite(data.join(DATABASE_FILE)));
        let err = DatabaseUrl::parse("mysql://u:secret@h/d")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("server.database_url") && !err.contains("secret"),
            "{err}"
        );
    }
}
