//! The state database's schema, as numbered migrations. SQLite's
//! `PRAGMA user_version` says how many have run; opening a database runs
//! the rest, each in a transaction with its new number, so an existing
//! state directory is upgraded in place and a failed step leaves it as it
//! was. A later change of the schema appends a migration here; a migration
//! that shipped is never edited.

use std::path::Path;

use rusqlite::Connection;

use super::{StoreError, StoreResult};

/// Every migration, oldest first; migration N (1-based) takes the database
/// from version N-1 to N.
const MIGRATIONS: &[&str] = &[
    // 1: the tables as the first releases made them. A database written
    // before migrations were numbered (version 0) already has them; the
    // `IF NOT EXISTS` makes this step a no-op there.
    "
CREATE TABLE IF NOT EXISTS releases (
    service TEXT NOT NULL,
    version TEXT NOT NULL,
    release TEXT NOT NULL,
    PRIMARY KEY (service, version)
);
CREATE TABLE IF NOT EXISTS revisions (
    service TEXT NOT NULL,
    number INTEGER NOT NULL,
    revision TEXT NOT NULL,
    PRIMARY KEY (service, number)
);
CREATE TABLE IF NOT EXISTS instances (
    service TEXT NOT NULL,
    version TEXT NOT NULL,
    slot INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    start_ticks INTEGER NOT NULL,
    port INTEGER NOT NULL,
    PRIMARY KEY (service, version, slot)
);
CREATE TABLE IF NOT EXISTS rollouts (
    service TEXT PRIMARY KEY,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS upgrades (
    service TEXT PRIMARY KEY,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS paused_services (
    service TEXT PRIMARY KEY,
    max_hold_ms INTEGER NOT NULL,
    since INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    service TEXT NOT NULL,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_service ON events (service, id);
CREATE TABLE IF NOT EXISTS shadow_stats (
    service TEXT NOT NULL,
    version TEXT NOT NULL,
    stats TEXT NOT NULL,
    PRIMARY KEY (service, version)
);
",
    // 2: TLS certificates per host pattern, and the ended windows of shadow
    // reports. (Databases of serves between the two releases that made
    // these tables already have them.)
    "
CREATE TABLE IF NOT EXISTS certificates (
    host TEXT PRIMARY KEY,
    cert_pem TEXT NOT NULL,
    key_pem TEXT NOT NULL,
    source TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS shadow_windows (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    service TEXT NOT NULL,
    version TEXT NOT NULL,
    ended INTEGER NOT NULL,
    report TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS shadow_windows_by_service ON shadow_windows (service, id);
",
    // 2: ACME orders (renewed by serve) and accounts (one per CA directory,
    // shared by every serve of the store).
    "
CREATE TABLE IF NOT EXISTS acme_orders (
    host TEXT PRIMARY KEY,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS acme_accounts (
    directory TEXT PRIMARY KEY,
    credentials TEXT NOT NULL
);
",
];

/// The version a database has once every migration ran.
pub const LATEST: u32 = MIGRATIONS.len() as u32;

/// Brings the database to [`LATEST`]; refuses one a newer Switchyard wrote.
pub fn run(conn: &Connection, path: &Path) -> StoreResult<()> {
    let found: u32 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found > LATEST {
        return Err(StoreError::NewerSchema {
            path: path.display().to_string(),
            found,
            known: LATEST,
        });
    }
    for (done, migration) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = done as u32 + 1;
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {migration} PRAGMA user_version = {version}; COMMIT;"
        ))
        .inspect_err(|_| {
            let _ = conn.execute_batch("ROLLBACK");
        })?;
        tracing::info!(path = %path.display(), version, "state database migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(conn: &Connection) -> u32 {
        conn.pragma_query_value(None, "user_version", |row| row.get(0))
            .expect("user_version")
    }

    #[test]
    fn a_new_database_gets_every_migration_and_its_number() {
        let conn = Connection::open_in_memory().expect("open");
        run(&conn, Path::new("test.db")).expect("migrate");
        assert_eq!(version(&conn), LATEST);
        run(&conn, Path::new("test.db")).expect("a second run changes nothing");
        assert_eq!(version(&conn), LATEST);
    }

    #[test]
    fn a_database_of_a_newer_switchyard_is_refused() {
        let conn = Connection::open_in_memory().expect("open");
        conn.pragma_update(None, "user_version", LATEST + 1)
            .expect("set version");
        let error = run(&conn, Path::new("test.db")).expect_err("refused");
        assert!(error.to_string().contains("newer Switchyard"), "{error}");
        assert_eq!(version(&conn), LATEST + 1, "left as it was");
    }
}
