//! The PostgreSQL backend (`--db postgres://user@host/db`): the same tables and answers as
//! SQLite's, in a database that several servers can share.
//!
//! The `postgres` client blocks on a runtime of its own, which cannot run inside the
//! server's tokio tasks, so one thread owns the connection and runs the operations sent to
//! it, one at a time, in order ([`PostgresStore::run`]); the caller waits for the answer,
//! as it waits for SQLite's disk. A connection that broke is made again at the next
//! operation. Text is ordered by byte (`COLLATE "C"`), as SQLite orders it, whatever the
//! database's locale.

use std::sync::mpsc;

use huddle_protocol::{CallLog, CallLogQuery, CallStatus, GroupInfo, User};
use postgres::types::ToSql;
use postgres::{Client, NoTls};

use super::{
    CallLogRow, FilterValue, NewCallLog, StoreError, StoreResult, call_log_conditions,
    call_log_filter_and_page, call_type_str, groups_from_rows, parse_status, receiver_type_str,
    status_str,
};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BYTEA, number BIGINT);
CREATE TABLE IF NOT EXISTS users (
    uid TEXT PRIMARY KEY, name TEXT NOT NULL, avatar TEXT,
    auto_busy BOOLEAN NOT NULL DEFAULT TRUE);
CREATE TABLE IF NOT EXISTS groups (guid TEXT PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS group_members (
    guid TEXT NOT NULL REFERENCES groups(guid) ON DELETE CASCADE,
    uid TEXT NOT NULL, PRIMARY KEY (guid, uid));
CREATE INDEX IF NOT EXISTS group_members_uid ON group_members(uid);
CREATE TABLE IF NOT EXISTS auth_tokens (
    id BIGSERIAL PRIMARY KEY, token TEXT NOT NULL UNIQUE, uid TEXT NOT NULL,
    created_at BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS auth_tokens_uid ON auth_tokens(uid);
CREATE TABLE IF NOT EXISTS call_logs (
    log_id BIGSERIAL PRIMARY KEY,
    session_id TEXT NOT NULL, call_type TEXT NOT NULL, status TEXT NOT NULL,
    receiver_type TEXT NOT NULL, initiator TEXT NOT NULL, receiver TEXT NOT NULL,
    initiated_at BIGINT NOT NULL, started_at BIGINT, ended_at BIGINT,
    has_recording BOOLEAN NOT NULL DEFAULT FALSE);
CREATE INDEX IF NOT EXISTS call_logs_initiator ON call_logs(initiator);
CREATE INDEX IF NOT EXISTS call_logs_receiver ON call_logs(receiver);
CREATE INDEX IF NOT EXISTS call_logs_session ON call_logs(session_id);
CREATE TABLE IF NOT EXISTS call_participants (
    log_id BIGINT NOT NULL REFERENCES call_logs(log_id) ON DELETE CASCADE,
    uid TEXT NOT NULL, joined_at BIGINT NOT NULL, PRIMARY KEY (log_id, uid));
"#;

/// The newest log row of a session id ($1).
const NEWEST_LOG: &str = "(SELECT MAX(log_id) FROM call_logs WHERE session_id = $1)";

/// A user from a row of (uid, name, avatar).
fn user_from_row(row: &postgres::Row) -> User {
    User {
        uid: row.get(0),
        name: row.get(1),
        avatar: row.get(2),
    }
}

/// An operation for the connection's thread.
type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// A PostgreSQL database, through its connection's thread.
pub struct PostgresStore {
    jobs: mpsc::Sender<Job>,
}

/// The advisory lock the schema is made under (any number Huddle alone uses).
const SCHEMA_LOCK: i64 = 0x4875_6464_6c65; // "Huddle"

/// What PostgreSQL said, in full: the server's message and SQLSTATE for a refused statement
/// (the error's own text is only "db error"), else the error and its cause.
pub(crate) fn describe(err: &postgres::Error) -> String {
    if let Some(db) = err.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    match std::error::Error::source(err) {
        Some(source) => format!("{err}: {source}"),
        None => err.to_string(),
    }
}

/// The connection, and how to make it again.
struct Connection {
    url: String,
    client: Client,
}

impl Connection {
    fn open(url: &str) -> Result<Client, postgres::Error> {
        let mut client = Client::connect(url, NoTls)?;
        // Several servers may start at once on one database, and `CREATE … IF NOT EXISTS`
        // races with itself in PostgreSQL (both see no table, one fails on the catalog): the
        // schema is made in one transaction under an advisory lock held until it commits
        // (released before the commit, the next one would still not see the tables).
        client.batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock({SCHEMA_LOCK}); {SCHEMA} COMMIT;"
        ))?;
        Ok(client)
    }

    /// The client, connected again if the connection broke.
    fn client(&mut self) -> Result<&mut Client, postgres::Error> {
        if self.client.is_closed() {
            tracing::warn!("PostgreSQL connection lost; connecting again");
            self.client = Self::open(&self.url)?;
        }
        Ok(&mut self.client)
    }
}

impl PostgresStore {
    /// Connects to `url` and creates the tables it lacks.
    pub fn connect(url: &str) -> StoreResult<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready, connected) = mpsc::sync_channel(1);
        let url = url.to_owned();
        std::thread::Builder::new()
            .name("huddle-postgres".into())
            .spawn(move || {
                let client = match Connection::open(&url) {
                    Ok(client) => client,
                    Err(err) => {
                        let _ = ready.send(Err(err));
                        return;
                    }
                };
                let _ = ready.send(Ok(()));
                let mut connection = Connection { url, client };
                while let Ok(job) = queue.recv() {
                    job(&mut connection);
                }
            })
            .map_err(|err| StoreError::Unavailable(format!("no thread for it: {err}")))?;
        connected
            .recv()
            .map_err(|_| StoreError::Unavailable("its thread ended".into()))??;
        Ok(Self { jobs })
    }

    /// Runs `operation` on the connection's thread and waits for its answer.
    fn run<T: Send + 'static>(
        &self,
        operation: impl FnOnce(&mut Client) -> Result<T, postgres::Error> + Send + 'static,
    ) -> StoreResult<T> {
        let (answer, answered) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |connection| {
            let _ = answer.send(connection.client().and_then(operation));
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Unavailable("its thread ended".into()))?;
        Ok(answered
            .recv()
            .map_err(|_| StoreError::Unavailable("its thread ended".into()))??)
    }

    pub(super) fn token_secret<E: From<StoreError>>(
        &self,
        fresh: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Vec<u8>, E> {
        let read = || {
            self.run(|db| {
                let row = db.query_opt("SELECT value FROM meta WHERE key = 'token_secret'", &[])?;
                Ok(row.and_then(|row| row.get::<_, Option<Vec<u8>>>(0)))
            })
        };
        if let Some(secret) = read()? {
            return Ok(secret);
        }
        let secret = fresh()?;
        self.run(move |db| {
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('token_secret', $1)
                 ON CONFLICT (key) DO NOTHING",
                &[&secret],
            )
        })?;
        // Another server sharing the database may have stored its own first: theirs stands.
        Ok(read()?.unwrap_or_default())
    }

    pub(super) fn upsert_user(&self, user: &User, auto_busy: Option<bool>) -> StoreResult<()> {
        let user = user.clone();
        self.run(move |db| {
            db.execute(
                "INSERT INTO users (uid, name, avatar, auto_busy)
                     VALUES ($1, $2, $3, COALESCE($4, TRUE))
                 ON CONFLICT (uid) DO UPDATE SET name = $2, avatar = $3,
                     auto_busy = COALESCE($4, users.auto_busy)",
                &[&user.uid, &user.name, &user.avatar, &auto_busy],
            )
        })?;
        Ok(())
    }

    pub(super) fn user(&self, uid: &str) -> StoreResult<Option<User>> {
        let uid = uid.to_owned();
        self.run(move |db| {
            let row = db.query_opt(
                "SELECT uid, name, avatar FROM users WHERE uid = $1",
                &[&uid],
            )?;
            Ok(row.as_ref().map(user_from_row))
        })
    }

    pub(super) fn auto_busy(&self, uid: &str) -> StoreResult<bool> {
        let uid = uid.to_owned();
        self.run(move |db| {
            let row = db.query_opt("SELECT auto_busy FROM users WHERE uid = $1", &[&uid])?;
            Ok(row.is_none_or(|row| row.get(0)))
        })
    }

    pub(super) fn upsert_group(
        &mut self,
        guid: &str,
        name: &str,
        members: &[String],
    ) -> StoreResult<()> {
        let (guid, name, members) = (guid.to_owned(), name.to_owned(), members.to_vec());
        self.run(move |db| {
            let mut tx = db.transaction()?;
            tx.execute(
                "INSERT INTO groups (guid, name) VALUES ($1, $2)
                 ON CONFLICT (guid) DO UPDATE SET name = $2",
                &[&guid, &name],
            )?;
            tx.execute("DELETE FROM group_members WHERE guid = $1", &[&guid])?;
            for uid in &members {
                tx.execute(
                    "INSERT INTO group_members (guid, uid) VALUES ($1, $2)
                     ON CONFLICT DO NOTHING",
                    &[&guid, uid],
                )?;
            }
            tx.commit()
        })
    }

    pub(super) fn add_group_member(&self, guid: &str, name: &str, uid: &str) -> StoreResult<()> {
        let (guid, name, uid) = (guid.to_owned(), name.to_owned(), uid.to_owned());
        self.run(move |db| {
            let mut tx = db.transaction()?;
            tx.execute(
                "INSERT INTO groups (guid, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&guid, &name],
            )?;
            tx.execute(
                "INSERT INTO group_members (guid, uid) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&guid, &uid],
            )?;
            tx.commit()
        })
    }

    pub(super) fn group_members(&self, guid: &str) -> StoreResult<Option<Vec<String>>> {
        let guid = guid.to_owned();
        self.run(move |db| {
            if db
                .query_opt("SELECT guid FROM groups WHERE guid = $1", &[&guid])?
                .is_none()
            {
                return Ok(None);
            }
            let rows = db.query(
                r#"SELECT uid FROM group_members WHERE guid = $1 ORDER BY uid COLLATE "C""#,
                &[&guid],
            )?;
            Ok(Some(rows.iter().map(|row| row.get(0)).collect()))
        })
    }

    pub(super) fn contacts(&self, uid: &str) -> StoreResult<Vec<User>> {
        let uid = uid.to_owned();
        self.run(move |db| {
            let rows = db.query(
                r#"SELECT DISTINCT u.uid COLLATE "C", u.name, u.avatar FROM group_members mine
                   JOIN group_members theirs ON theirs.guid = mine.guid AND theirs.uid != mine.uid
                   JOIN users u ON u.uid = theirs.uid
                   WHERE mine.uid = $1 ORDER BY 1"#,
                &[&uid],
            )?;
            Ok(rows.iter().map(user_from_row).collect())
        })
    }

    pub(super) fn groups_of(&self, uid: &str) -> StoreResult<Vec<GroupInfo>> {
        let uid = uid.to_owned();
        self.run(move |db| {
            let rows = db.query(
                r#"SELECT g.guid, g.name, others.uid FROM group_members mine
                   JOIN groups g ON g.guid = mine.guid
                   JOIN group_members others ON others.guid = mine.guid
                   WHERE mine.uid = $1 ORDER BY g.guid COLLATE "C", others.uid COLLATE "C""#,
                &[&uid],
            )?;
            Ok(groups_from_rows(
                rows.iter().map(|row| (row.get(0), row.get(1), row.get(2))),
            ))
        })
    }

    pub(super) fn add_auth_token(&self, token: &str, uid: &str, now_ms: u64) -> StoreResult<()> {
        let (token, uid, now) = (token.to_owned(), uid.to_owned(), now_ms as i64);
        self.run(move |db| {
            db.execute(
                "INSERT INTO auth_tokens (token, uid, created_at) VALUES ($1, $2, $3)",
                &[&token, &uid, &now],
            )
        })?;
        Ok(())
    }

    pub(super) fn latest_auth_token(&self, uid: &str) -> StoreResult<Option<String>> {
        let uid = uid.to_owned();
        self.run(move |db| {
            let row = db.query_opt(
                "SELECT token FROM auth_tokens WHERE uid = $1
                 ORDER BY created_at DESC, id DESC LIMIT 1",
                &[&uid],
            )?;
            Ok(row.map(|row| row.get(0)))
        })
    }

    pub(super) fn auth_token_count(&self, uid: &str) -> StoreResult<u64> {
        let uid = uid.to_owned();
        self.run(move |db| {
            let row = db.query_one("SELECT COUNT(*) FROM auth_tokens WHERE uid = $1", &[&uid])?;
            Ok(row.get::<_, i64>(0).max(0) as u64)
        })
    }

    pub(super) fn auth_token_owner(&self, token: &str) -> StoreResult<Option<String>> {
        let token = token.to_owned();
        self.run(move |db| {
            let row = db.query_opt("SELECT uid FROM auth_tokens WHERE token = $1", &[&token])?;
            Ok(row.map(|row| row.get(0)))
        })
    }

    pub(super) fn insert_call(&self, log: &NewCallLog) -> StoreResult<()> {
        let values = (
            log.session_id.to_owned(),
            call_type_str(log.call_type),
            status_str(log.status),
            receiver_type_str(log.receiver_type),
            log.initiator.to_owned(),
            log.receiver.to_owned(),
            log.initiated_at as i64,
        );
        self.run(move |db| {
            let (session_id, call_type, status, receiver_type, initiator, receiver, at) = values;
            db.execute(
                "INSERT INTO call_logs
                     (session_id, call_type, status, receiver_type, initiator, receiver,
                      initiated_at)
                 SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::bigint
                 WHERE NOT EXISTS (SELECT 1 FROM call_logs
                                   WHERE session_id = $1 AND status IN ('initiated', 'ongoing'))",
                &[
                    &session_id,
                    &call_type,
                    &status,
                    &receiver_type,
                    &initiator,
                    &receiver,
                    &at,
                ],
            )
        })?;
        Ok(())
    }

    pub(super) fn set_call_status(
        &self,
        session_id: &str,
        status: CallStatus,
        now_ms: u64,
    ) -> StoreResult<()> {
        let ended = !matches!(status, CallStatus::Initiated | CallStatus::Ongoing);
        let (session_id, status, now) = (session_id.to_owned(), status_str(status), now_ms as i64);
        self.run(move |db| {
            db.execute(
                &format!(
                    "UPDATE call_logs SET status = $2,
                         ended_at = CASE WHEN $3::boolean THEN COALESCE(ended_at, $4::bigint)
                                    ELSE ended_at END
                     WHERE log_id = {NEWEST_LOG}"
                ),
                &[&session_id, &status, &ended, &now],
            )
        })?;
        Ok(())
    }

    pub(super) fn add_participant(
        &mut self,
        session_id: &str,
        uid: &str,
        now_ms: u64,
    ) -> StoreResult<()> {
        let (session_id, uid, now) = (session_id.to_owned(), uid.to_owned(), now_ms as i64);
        self.run(move |db| {
            let mut tx = db.transaction()?;
            tx.execute(
                &format!(
                    "INSERT INTO call_participants (log_id, uid, joined_at)
                     SELECT {NEWEST_LOG}, $2::text, $3::bigint WHERE {NEWEST_LOG} IS NOT NULL
                     ON CONFLICT DO NOTHING"
                ),
                &[&session_id, &uid, &now],
            )?;
            tx.execute(
                &format!(
                    "UPDATE call_logs SET started_at = COALESCE(started_at, $2::bigint)
                     WHERE log_id = {NEWEST_LOG}"
                ),
                &[&session_id, &now],
            )?;
            tx.commit()
        })
    }

    pub(super) fn set_has_recording(&self, session_id: &str) -> StoreResult<()> {
        let session_id = session_id.to_owned();
        self.run(move |db| {
            db.execute(
                &format!("UPDATE call_logs SET has_recording = TRUE WHERE log_id = {NEWEST_LOG}"),
                &[&session_id],
            )
        })?;
        Ok(())
    }

    pub(super) fn list_calls(
        &self,
        viewer: Option<&str>,
        query: &CallLogQuery,
    ) -> StoreResult<(Vec<CallLog>, u64)> {
        let mut args: Vec<Box<dyn ToSql + Send + Sync>> = Vec::new();
        let conditions = call_log_conditions(viewer, query, &mut |value| {
            let cast = match value {
                FilterValue::Text(text) => {
                    args.push(Box::new(text));
                    "text"
                }
                FilterValue::Flag(flag) => {
                    args.push(Box::new(flag));
                    "boolean"
                }
            };
            format!("${}::{cast}", args.len())
        });
        let (filter, page) = call_log_filter_and_page(&conditions, query);
        let count = format!("SELECT COUNT(*) FROM call_logs c {filter}");
        let select = format!(
            r#"SELECT c.session_id, c.call_type, c.status, c.receiver_type, c.initiator,
                      c.receiver, c.initiated_at, c.started_at, c.ended_at, c.has_recording,
                      (SELECT string_agg(p.uid, ',' ORDER BY p.joined_at, p.uid COLLATE "C")
                       FROM call_participants p WHERE p.log_id = c.log_id)
               FROM call_logs c {filter}
               ORDER BY c.initiated_at DESC, c.log_id DESC {page}"#
        );
        let (total, rows) = self.run(move |db| {
            let params: Vec<&(dyn ToSql + Sync)> = args
                .iter()
                .map(|a| a.as_ref() as &(dyn ToSql + Sync))
                .collect();
            let total: i64 = db.query_one(&count, &params)?.get(0);
            let rows = db
                .query(&select, &params)?
                .iter()
                .map(|r| CallLogRow {
                    session_id: r.get(0),
                    call_type: r.get(1),
                    status: r.get(2),
                    receiver_type: r.get(3),
                    initiator: r.get(4),
                    receiver: r.get(5),
                    initiated_at: r.get(6),
                    started_at: r.get(7),
                    ended_at: r.get(8),
                    has_recording: r.get(9),
                    participants: r.get(10),
                })
                .collect::<Vec<_>>();
            Ok((total, rows))
        })?;
        let logs = rows.into_iter().map(|r| r.into_call_log(viewer)).collect();
        Ok((logs, total.max(0) as u64))
    }

    pub(super) fn ringing_call_status(&self, session_id: &str) -> StoreResult<Option<CallStatus>> {
        let session_id = session_id.to_owned();
        self.run(move |db| {
            let row = db.query_opt(
                "SELECT status FROM call_logs WHERE session_id = $1 AND receiver != ''
                 ORDER BY log_id DESC LIMIT 1",
                &[&session_id],
            )?;
            Ok(row.map(|row| parse_status(row.get(0))))
        })
    }

    pub(super) fn set_last_alive(&self, now_ms: u64) -> StoreResult<()> {
        let now = now_ms as i64;
        self.run(move |db| {
            db.execute(
                "INSERT INTO meta (key, number) VALUES ('last_alive_ms', $1)
                 ON CONFLICT (key) DO UPDATE SET number = excluded.number",
                &[&now],
            )
        })?;
        Ok(())
    }

    pub(super) fn last_alive(&self) -> StoreResult<Option<u64>> {
        self.run(|db| {
            let row = db.query_opt("SELECT number FROM meta WHERE key = 'last_alive_ms'", &[])?;
            Ok(row
                .and_then(|row| row.get::<_, Option<i64>>(0))
                .map(|ms| ms.max(0) as u64))
        })
    }

    pub(super) fn end_open_calls(&self, now_ms: u64) -> StoreResult<usize> {
        let now = now_ms as i64;
        let ended = self.run(move |db| {
            db.execute(
                "UPDATE call_logs SET
                     status = CASE status WHEN 'initiated' THEN 'cancelled' ELSE 'ended' END,
                     ended_at = COALESCE(ended_at, $1)
                 WHERE status IN ('initiated', 'ongoing')",
                &[&now],
            )
        })?;
        Ok(ended as usize)
    }
}
