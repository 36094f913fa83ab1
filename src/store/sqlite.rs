use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use super::migrations;
use super::{
    CertificateRecord, Commit, InstanceRecord, NodeStore, PauseRecord, ServiceStore, StateDir,
    StoreError, StoreResult,
};
use crate::model::{Event, Release, Revision, RolloutState, ServiceName, UpgradeState, now_millis};

/// The database file in the state directory.
const DB_FILE: &str = "switchyard.db";

/// The embedded store: one SQLite file (`switchyard.db` in the state
/// directory) that operators can open with `sqlite3`. WAL journal with full
/// sync, so a commit that returned survives `kill -9` and power loss.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Keeps one JSON state per service in `table` (`service`, `state`).
    fn save_state<T: serde::Serialize>(
        &self,
        table: &str,
        service: &str,
        state: &T,
    ) -> StoreResult<()> {
        self.conn().execute(
            &format!("INSERT OR REPLACE INTO {table} (service, state) VALUES (?1, ?2)"),
            params![service, serde_json::to_string(state)?],
        )?;
        Ok(())
    }

    /// Every JSON state kept in `table`, by service.
    fn states<T: serde::de::DeserializeOwned>(&self, table: &str) -> StoreResult<Vec<T>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT state FROM {table} ORDER BY service"))?;
        let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
        rows.map(|r| Ok(serde_json::from_str(&r?)?)).collect()
    }

    /// Opens (or creates) `switchyard.db` in a state directory this
    /// process holds. An empty file is a new database only in a directory
    /// no serve used before: elsewhere it is state that was lost (SQLite
    /// would take it for empty and drop its write-ahead log), and it is
    /// refused.
    pub fn open(state_dir: &StateDir) -> StoreResult<Self> {
        let path = state_dir.path().join(DB_FILE);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
            let wal = state_dir.path().join(format!("{DB_FILE}-wal"));
            let signs = match std::fs::metadata(&wal) {
                Ok(m) if m.len() > 0 => Some(format!("a write-ahead log {DB_FILE}-wal")),
                _ => state_dir.used_before().map(str::to_owned),
            };
            if let Some(signs) = signs {
                return Err(StoreError::EmptyDatabase {
                    path: path.display().to_string(),
                    signs,
                });
            }
        }
        let conn = Connection::open(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrations::run(&conn, &path)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written
        // (transactions roll back), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn parse_revision(json: String) -> StoreResult<Revision> {
    Ok(serde_json::from_str(&json)?)
}

impl ServiceStore for SqliteStore {
    fn current_revisions(&self) -> StoreResult<Vec<Revision>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT r.revision FROM revisions r
             JOIN (SELECT service, MAX(number) AS n FROM revisions GROUP BY service) m
             ON r.service = m.service AND r.number = m.n ORDER BY r.service",
        )?;
        let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
        rows.map(|r| parse_revision(r?)).collect()
    }

    fn current_revision(&self, service: &ServiceName) -> StoreResult<Option<Revision>> {
        let json: Option<String> = self
            .conn()
            .query_row(
                "SELECT revision FROM revisions WHERE service = ?1 ORDER BY number DESC LIMIT 1",
                params![service.as_str()],
                |row| row.get(0),
            )
            .optional()?;
        json.map(parse_revision).transpose()
    }

    fn revision(&self, service: &ServiceName, number: u64) -> StoreResult<Option<Revision>> {
        let json: Option<String> = self
            .conn()
            .query_row(
                "SELECT revision FROM revisions WHERE service = ?1 AND number = ?2",
                params![service.as_str(), number as i64],
                |row| row.get(0),
            )
            .optional()?;
        json.map(parse_revision).transpose()
    }

    fn history(&self, service: &ServiceName, limit: usize) -> StoreResult<Vec<Revision>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT revision FROM revisions WHERE service = ?1 ORDER BY number DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![service.as_str(), limit as i64], |row| {
            row.get::<_, String>(0)
        })?;
        rows.map(|r| parse_revision(r?)).collect()
    }

    fn release(
        &self,
        service: &ServiceName,
        version: &semver::Version,
    ) -> StoreResult<Option<Release>> {
        let json: Option<String> = self
            .conn()
            .query_row(
                "SELECT release FROM releases WHERE service = ?1 AND version = ?2",
                params![service.as_str(), version.to_string()],
                |row| row.get(0),
            )
            .optional()?;
        Ok(json.map(|j| serde_json::from_str(&j)).transpose()?)
    }

    fn commit(&self, commit: &Commit) -> StoreResult<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let service = commit.revision.service.as_str();
        let current: u64 = tx.query_row(
            "SELECT COALESCE(MAX(number), 0) FROM revisions WHERE service = ?1",
            params![service],
            |row| row.get::<_, i64>(0),
        )? as u64;
        if commit.revision.number != current + 1 {
            return Err(StoreError::Conflict { current });
        }
        for release in &commit.releases {
            let version = release.version.to_string();
            let existing: Option<String> = tx
                .query_row(
                    "SELECT release FROM releases WHERE service = ?1 AND version = ?2",
                    params![service, version],
                    |row| row.get(0),
                )
                .optional()?;
            match existing {
                Some(json) => {
                    let stored: Release = serde_json::from_str(&json)?;
                    if stored.spec != release.spec {
                        return Err(StoreError::ReleaseMismatch {
                            service: service.to_owned(),
                            version,
                        });
                    }
                }
                None => {
                    tx.execute(
                        "INSERT INTO releases (service, version, release) VALUES (?1, ?2, ?3)",
                        params![service, version, serde_json::to_string(release)?],
                    )?;
                }
            }
        }
        tx.execute(
            "INSERT INTO revisions (service, number, revision) VALUES (?1, ?2, ?3)",
            params![
                service,
                commit.revision.number as i64,
                serde_json::to_string(&commit.revision)?
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn register_release(&self, release: &Release) -> StoreResult<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let service = release.service.as_str();
        let version = release.version.to_string();
        let existing: Option<String> = tx
            .query_row(
                "SELECT release FROM releases WHERE service = ?1 AND version = ?2",
                params![service, version],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(json) = existing {
            let stored: Release = serde_json::from_str(&json)?;
            if stored.spec != release.spec {
                return Err(StoreError::ReleaseMismatch {
                    service: service.to_owned(),
                    version,
                });
            }
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO releases (service, version, release) VALUES (?1, ?2, ?3)",
            params![service, version, serde_json::to_string(release)?],
        )?;
        tx.commit()?;
        Ok(true)
    }

    fn unregister_release(
        &self,
        service: &ServiceName,
        version: &semver::Version,
    ) -> StoreResult<bool> {
        let removed = self.conn().execute(
            "DELETE FROM releases WHERE service = ?1 AND version = ?2",
            params![service.as_str(), version.to_string()],
        )?;
        Ok(removed > 0)
    }

    fn releases(&self, service: &ServiceName) -> StoreResult<Vec<Release>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT release FROM releases WHERE service = ?1")?;
        let rows = stmt.query_map(params![service.as_str()], |row| row.get::<_, String>(0))?;
        let mut releases = rows
            .map(|r| Ok(serde_json::from_str::<Release>(&r?)?))
            .collect::<StoreResult<Vec<_>>>()?;
        releases.sort_by(|a, b| a.version.cmp(&b.version));
        Ok(releases)
    }

    fn save_rollout(&self, rollout: &RolloutState) -> StoreResult<()> {
        self.save_state("rollouts", &rollout.service, rollout)
    }

    fn rollouts(&self) -> StoreResult<Vec<RolloutState>> {
        self.states("rollouts")
    }

    fn save_certificate(&self, c: &CertificateRecord) -> StoreResult<()> {
        self.conn().execute(
            "INSERT OR REPLACE INTO certificates (host, cert_pem, key_pem, source, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![c.host, c.cert_pem, c.key_pem, c.source, c.updated_at as i64],
        )?;
        Ok(())
    }

    fn save_acme_order(&self, host: &str, json: &str) -> StoreResult<()> {
        self.conn().execute(
            "INSERT OR REPLACE INTO acme_orders (host, state) VALUES (?1, ?2)",
            params![host, json],
        )?;
        Ok(())
    }

    fn delete_acme_order(&self, host: &str) -> StoreResult<()> {
        self.conn()
            .execute("DELETE FROM acme_orders WHERE host = ?1", params![host])?;
        Ok(())
    }

    fn acme_orders(&self) -> StoreResult<Vec<(String, String)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT host, state FROM acme_orders ORDER BY host")?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn save_acme_account(&self, directory: &str, credentials: &str) -> StoreResult<()> {
        self.conn().execute(
            "INSERT OR REPLACE INTO acme_accounts (directory, credentials) VALUES (?1, ?2)",
            params![directory, credentials],
        )?;
        Ok(())
    }

    fn acme_account(&self, directory: &str) -> StoreResult<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT credentials FROM acme_accounts WHERE directory = ?1",
                params![directory],
                |row| row.get(0),
            )
            .optional()?)
    }

    fn delete_certificate(&self, host: &str) -> StoreResult<()> {
        self.conn()
            .execute("DELETE FROM certificates WHERE host = ?1", params![host])?;
        Ok(())
    }

    fn certificates(&self) -> StoreResult<Vec<CertificateRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT host, cert_pem, key_pem, source, updated_at FROM certificates ORDER BY host",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok(CertificateRecord {
                host: row.get(0)?,
                cert_pem: row.get(1)?,
                key_pem: row.get(2)?,
                source: row.get(3)?,
                updated_at: row.get::<_, i64>(4)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn save_pause(&self, pause: &PauseRecord) -> StoreResult<()> {
        self.conn().execute(
            "INSERT OR REPLACE INTO paused_services (service, max_hold_ms, since) VALUES (?1, ?2, ?3)",
            params![pause.service, pause.max_hold_ms as i64, pause.since as i64],
        )?;
        Ok(())
    }

    fn delete_pause(&self, service: &str) -> StoreResult<()> {
        self.conn().execute(
            "DELETE FROM paused_services WHERE service = ?1",
            params![service],
        )?;
        Ok(())
    }

    fn pauses(&self) -> StoreResult<Vec<PauseRecord>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT service, max_hold_ms, since FROM paused_services ORDER BY service")?;
        let rows = stmt.query_map([], |row| {
            Ok(PauseRecord {
                service: row.get(0)?,
                max_hold_ms: row.get::<_, i64>(1)? as u64,
                since: row.get::<_, i64>(2)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn save_upgrade(&self, upgrade: &UpgradeState) -> StoreResult<()> {
        self.save_state("upgrades", &upgrade.service, upgrade)
    }

    fn upgrades(&self) -> StoreResult<Vec<UpgradeState>> {
        self.states("upgrades")
    }

    fn upgrade(&self, service: &str) -> StoreResult<Option<UpgradeState>> {
        let json: Option<String> = self
            .conn()
            .query_row(
                "SELECT state FROM upgrades WHERE service = ?1",
                params![service],
                |row| row.get(0),
            )
            .optional()?;
        json.map(|j| Ok(serde_json::from_str(&j)?)).transpose()
    }

    fn add_event(
        &self,
        service: &str,
        kind: &str,
        message: &str,
        detail: serde_json::Value,
    ) -> StoreResult<Event> {
        let at = now_millis();
        let conn = self.conn();
        conn.execute(
            "INSERT INTO events (service, at, kind, message, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![service, at as i64, kind, message, detail.to_string()],
        )?;
        Ok(Event {
            id: conn.last_insert_rowid() as u64,
            service: service.to_owned(),
            at,
            kind: kind.to_owned(),
            message: message.to_owned(),
            detail,
        })
    }

    fn events(&self, service: &str, limit: usize) -> StoreResult<Vec<Event>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, at, kind, message, detail FROM events WHERE service = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![service, limit as i64], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, String>(4)?,
            ))
        })?;
        rows.map(|r| {
            let (id, at, kind, message, detail) = r?;
            Ok(Event {
                id: id as u64,
                service: service.to_owned(),
                at: at as u64,
                kind,
                message,
                detail: serde_json::from_str(&detail)?,
            })
        })
        .collect()
    }
}

impl NodeStore for SqliteStore {
    fn record_instance(&self, r: &InstanceRecord) -> StoreResult<()> {
        self.conn().execute(
            "INSERT OR REPLACE INTO instances (service, version, slot, pid, start_ticks, port)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                r.service,
                r.version,
                r.slot,
                r.pid,
                r.start_ticks as i64,
                r.port
            ],
        )?;
        Ok(())
    }

    fn forget_instance(
        &self,
        service: &str,
        version: &str,
        slot: u32,
        pid: u32,
    ) -> StoreResult<()> {
        self.conn().execute(
            "DELETE FROM instances WHERE service = ?1 AND version = ?2 AND slot = ?3 AND pid = ?4",
            params![service, version, slot, pid],
        )?;
        Ok(())
    }

    fn instances(&self) -> StoreResult<Vec<InstanceRecord>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT service, version, slot, pid, start_ticks, port FROM instances")?;
        let rows = stmt.query_map([], |row| {
            Ok(InstanceRecord {
                service: row.get(0)?,
                version: row.get(1)?,
                slot: row.get(2)?,
                pid: row.get(3)?,
                start_ticks: row.get::<_, i64>(4)? as u64,
                port: row.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn save_shadow_stats(&self, service: &str, version: &str, json: &str) -> StoreResult<()> {
        self.conn().execute(
            "INSERT OR REPLACE INTO shadow_stats (service, version, stats) VALUES (?1, ?2, ?3)",
            params![service, version, json],
        )?;
        Ok(())
    }

    fn shadow_stats(&self) -> StoreResult<Vec<(String, String, String)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT service, version, stats FROM shadow_stats")?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn add_shadow_window(&self, service: &str, version: &str, json: &str) -> StoreResult<()> {
        self.conn().execute(
            "INSERT INTO shadow_windows (service, version, ended, report) VALUES (?1, ?2, ?3, ?4)",
            params![service, version, now_millis() as i64, json],
        )?;
        Ok(())
    }

    fn shadow_windows(
        &self,
        service: &str,
        version: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT report FROM shadow_windows WHERE service = ?1 AND (?2 IS NULL OR version = ?2)
             ORDER BY id DESC LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![service, version, limit as i64], |row| {
            row.get::<_, String>(0)
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DeployAs, ServiceState};

    fn revision(number: u64) -> Revision {
        let service: ServiceName = "hello".parse().expect("name");
        let state = ServiceState::default()
            .deploy(
                &service,
                &semver::Version::new(1, 0, number),
                DeployAs::Auto,
                0,
            )
            .expect("deploy");
        Revision {
            service,
            number,
            at: 0,
            action: "test".into(),
            actor: "test".into(),
            state,
        }
    }

    #[test]
    fn commit_refuses_a_stale_revision_number() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dir = StateDir::lock(dir.path()).expect("lock");
        let store = SqliteStore::open(&dir).expect("open");
        let commit = |n| Commit {
            releases: vec![],
            revision: revision(n),
        };
        store.commit(&commit(1)).expect("first");
        assert!(matches!(
            store.commit(&commit(1)),
            Err(StoreError::Conflict { current: 1 })
        ));
        assert!(matches!(
            store.commit(&commit(3)),
            Err(StoreError::Conflict { current: 1 })
        ));
        store.commit(&commit(2)).expect("second");
        let service = "hello".parse().expect("name");
        assert_eq!(store.history(&service, 10).expect("history").len(), 2);
    }

    #[test]
    fn a_pause_survives_reopening_until_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dir = StateDir::lock(dir.path()).expect("lock");
        let pause = PauseRecord {
            service: "hello".into(),
            max_hold_ms: 30_000,
            since: 1_700_000_000_000,
        };
        SqliteStore::open(&dir)
            .expect("open")
            .save_pause(&pause)
            .expect("save");
        let store = SqliteStore::open(&dir).expect("reopen");
        assert_eq!(store.pauses().expect("read"), vec![pause]);
        store.delete_pause("hello").expect("delete");
        assert!(store.pauses().expect("read").is_empty());
    }

    #[test]
    fn committed_state_survives_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dir = StateDir::lock(dir.path()).expect("lock");
        {
            let store = SqliteStore::open(&dir).expect("open");
            store
                .commit(&Commit {
                    releases: vec![],
                    revision: revision(1),
                })
                .expect("commit");
        }
        let store = SqliteStore::open(&dir).expect("reopen");
        let current = store.current_revisions().expect("read");
        assert_eq!(current, vec![revision(1)]);
    }

    #[test]
    fn an_empty_database_is_new_only_in_a_new_directory() {
        let temp = tempfile::tempdir().expect("tempdir");
        std::fs::write(temp.path().join(DB_FILE), b"").expect("empty file");
        let dir = StateDir::lock(temp.path()).expect("lock");
        SqliteStore::open(&dir).expect("a new directory starts empty");
        drop(dir);

        let temp = tempfile::tempdir().expect("tempdir");
        drop(StateDir::lock(temp.path()).expect("an earlier serve"));
        std::fs::write(temp.path().join(DB_FILE), b"").expect("truncated");
        let dir = StateDir::lock(temp.path()).expect("lock");
        let Err(StoreError::EmptyDatabase { signs, .. }) = SqliteStore::open(&dir) else {
            panic!("an empty database in a used directory was taken as new");
        };
        assert!(signs.contains("serve.lock"), "{signs}");
        assert_eq!(
            std::fs::metadata(temp.path().join(DB_FILE))
                .expect("still there")
                .len(),
            0,
            "left as it was"
        );
    }
}
