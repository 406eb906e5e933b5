//! Durable state: users, groups, auth tokens, the token-signing secret, and call logs.
//!
//! Two backends behind one [`Store`]:
//! - **SQLite** (the `--db` file, or memory): the single-node and embedded default. Every
//!   write is a single statement or a transaction, so a crash or a restart never loses a
//!   committed log entry. WAL mode keeps writes cheap.
//! - **PostgreSQL** (`--db postgres://…`, [`postgresql`]): for servers that share users, groups
//!   and call logs. Same tables and the same answers (a differential test runs one script of
//!   operations on both and compares every read).

use std::path::Path;

use huddle_protocol::{
    CallDirection, CallLog, CallLogQuery, CallStatus, CallType, GroupInfo, ReceiverType, User,
};
use rusqlite::{Connection, OptionalExtension, params};

pub mod postgresql;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused or failed.
    #[error("storage: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL refused or failed (or its connection did).
    #[error("storage (PostgreSQL): {}", postgresql::describe(.0))]
    Postgres(#[from] ::postgres::Error),
    /// The PostgreSQL connection's thread is gone or could not start.
    #[error("storage (PostgreSQL): {0}")]
    Unavailable(String),
}

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// The database: SQLite or PostgreSQL.
pub struct Store {
    backend: Backend,
}

enum Backend {
    Sqlite(Sqlite),
    Postgres(postgresql::PostgresStore),
}

/// The SQLite backend.
struct Sqlite {
    db: Connection,
}

/// Whether `--db` names a PostgreSQL database rather than a SQLite file.
pub fn is_postgres_url(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

/// Each operation of [`Store`], passed on to its backend (same name, same arguments):
/// `ref` ones take `&self`, `mut` ones `&mut self`.
macro_rules! delegate {
    (@one [$($receiver:tt)+] $(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        $(#[$doc])*
        pub fn $name($($receiver)+ $(, $arg: $ty)*) -> $ret {
            match $($receiver)+.backend {
                Backend::Sqlite(db) => db.$name($($arg),*),
                Backend::Postgres(db) => db.$name($($arg),*),
            }
        }
    };
    ($($kind:ident: $(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
        impl Store {
            $(delegate!(@receiver $kind $(#[$doc])* fn $name($($arg: $ty),*) -> $ret);)*
        }
    };
    (@receiver ref $($rest:tt)*) => { delegate!(@one [&self] $($rest)*); };
    (@receiver mut $($rest:tt)*) => { delegate!(@one [&mut self] $($rest)*); };
}

impl Store {
    /// Opens (creating if needed) the database at `location`: a PostgreSQL URL
    /// (`postgres://user@host/db`, see [`is_postgres_url`]) or a SQLite file path.
    pub fn open(location: &Path) -> StoreResult<Self> {
        let backend = match location.to_str().filter(|l| is_postgres_url(l)) {
            Some(url) => Backend::Postgres(postgresql::PostgresStore::connect(url)?),
            None => Backend::Sqlite(Sqlite::open(location)?),
        };
        Ok(Self { backend })
    }

    /// A private in-memory database: nothing survives the process (a server without `--db`,
    /// the embedded demo, tests).
    pub fn in_memory() -> StoreResult<Self> {
        Ok(Self {
            backend: Backend::Sqlite(Sqlite::in_memory()?),
        })
    }

    /// The token-signing secret, kept across restarts. The first call stores the one `fresh`
    /// makes; if `fresh` fails, its error is returned and nothing is stored.
    pub fn token_secret<E: From<StoreError>>(
        &self,
        fresh: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Vec<u8>, E> {
        match &self.backend {
            Backend::Sqlite(db) => db.token_secret(fresh),
            Backend::Postgres(db) => db.token_secret(fresh),
        }
    }
}

delegate! {
    ref:
    /// Creates or updates a user (`auto_busy` unchanged when `None`).
    fn upsert_user(user: &User, auto_busy: Option<bool>) -> StoreResult<()>;
    ref:
    /// A user by uid.
    fn user(uid: &str) -> StoreResult<Option<User>>;
    ref:
    /// Whether the user auto-rejects calls with Busy while in a call (default yes).
    fn auto_busy(uid: &str) -> StoreResult<bool>;
    mut:
    /// Creates or replaces a group and its members, in one transaction.
    fn upsert_group(guid: &str, name: &str, members: &[String]) -> StoreResult<()>;
    ref:
    /// Adds `uid` to group `guid`, creating the group (named `name`) if it does not exist.
    fn add_group_member(guid: &str, name: &str, uid: &str) -> StoreResult<()>;
    ref:
    /// Members of a group (by uid); `None` if there is no such group.
    fn group_members(guid: &str) -> StoreResult<Option<Vec<String>>>;
    ref:
    /// Everyone who shares a group with `uid` (their contacts), excluding `uid`, by uid.
    fn contacts(uid: &str) -> StoreResult<Vec<User>>;
    ref:
    /// The groups `uid` belongs to, with their members, by guid.
    fn groups_of(uid: &str) -> StoreResult<Vec<GroupInfo>>;
    ref:
    /// Records a new auth token for `uid`.
    fn add_auth_token(token: &str, uid: &str, now_ms: u64) -> StoreResult<()>;
    ref:
    /// The newest auth token of `uid`, if any.
    fn latest_auth_token(uid: &str) -> StoreResult<Option<String>>;
    ref:
    /// How many auth tokens `uid` has.
    fn auth_token_count(uid: &str) -> StoreResult<u64>;
    ref:
    /// The uid an auth token belongs to.
    fn auth_token_owner(token: &str) -> StoreResult<Option<String>>;
    ref:
    /// Records a new call, or a new meeting of a direct session id: a new row unless the
    /// session id already has one still open (initiated or ongoing).
    fn insert_call(log: &NewCallLog) -> StoreResult<()>;
    ref:
    /// Sets a call's status; final statuses also set `ended_at`.
    fn set_call_status(session_id: &str, status: CallStatus, now_ms: u64) -> StoreResult<()>;
    mut:
    /// Records that `uid` joined, setting `started_at` at the first join.
    fn add_participant(session_id: &str, uid: &str, now_ms: u64) -> StoreResult<()>;
    ref:
    /// Marks a call as recorded.
    fn set_has_recording(session_id: &str) -> StoreResult<()>;
    ref:
    /// Lists call logs, newest first. With `viewer`, only calls that involve them (placed,
    /// received directly or through a group, or joined), with the direction filled in.
    fn list_calls(viewer: Option<&str>, query: &CallLogQuery) -> StoreResult<(Vec<CallLog>, u64)>;
    ref:
    /// The status of a ringing-flow call (one placed with `initiate_call`: it has a
    /// receiver, where a direct session's row has none), if one was logged under this id.
    fn ringing_call_status(session_id: &str) -> StoreResult<Option<CallStatus>>;
    ref:
    /// Notes that the server was alive at `now_ms` (written about once a second), so that
    /// calls a crash left open are closed near the crash, not at the next start.
    fn set_last_alive(now_ms: u64) -> StoreResult<()>;
    ref:
    /// When the server last noted it was alive.
    fn last_alive() -> StoreResult<Option<u64>>;
    ref:
    /// Marks every call still initiated or ongoing as ended (server shutdown or restart),
    /// at `now_ms`.
    fn end_open_calls(now_ms: u64) -> StoreResult<usize>;
}

/// Connection settings (outside any transaction).
const PRAGMAS: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
PRAGMA foreign_keys = ON;
";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    uid TEXT PRIMARY KEY, name TEXT NOT NULL, avatar TEXT, auto_busy INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS groups (guid TEXT PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS group_members (
    guid TEXT NOT NULL REFERENCES groups(guid) ON DELETE CASCADE,
    uid TEXT NOT NULL, PRIMARY KEY (guid, uid));
CREATE INDEX IF NOT EXISTS group_members_uid ON group_members(uid);
CREATE TABLE IF NOT EXISTS auth_tokens (token TEXT PRIMARY KEY, uid TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS call_logs (
    log_id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL, call_type TEXT NOT NULL, status TEXT NOT NULL,
    receiver_type TEXT NOT NULL, initiator TEXT NOT NULL, receiver TEXT NOT NULL,
    initiated_at INTEGER NOT NULL, started_at INTEGER, ended_at INTEGER,
    has_recording INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS call_logs_initiator ON call_logs(initiator);
CREATE INDEX IF NOT EXISTS call_logs_receiver ON call_logs(receiver);
CREATE INDEX IF NOT EXISTS call_logs_session ON call_logs(session_id);
CREATE TABLE IF NOT EXISTS call_participants (
    log_id INTEGER NOT NULL REFERENCES call_logs(log_id) ON DELETE CASCADE,
    uid TEXT NOT NULL, joined_at INTEGER NOT NULL, PRIMARY KEY (log_id, uid));
";

/// Version 1 keyed call logs by session id, so a direct session id used twice shared one
/// row. Its tables are renamed, copied into version 2 (a log id per meeting), and dropped.
const MIGRATE_CALL_LOGS_V1: &str = "
ALTER TABLE call_participants RENAME TO call_participants_v1;
ALTER TABLE call_logs RENAME TO call_logs_v1;
DROP INDEX IF EXISTS call_logs_initiator;
DROP INDEX IF EXISTS call_logs_receiver;
DROP INDEX IF EXISTS call_logs_session;
";

/// After the version 2 schema exists: the rows, in their order, then the tables go.
const COPY_CALL_LOGS_V1: &str = "
INSERT INTO call_logs (session_id, call_type, status, receiver_type, initiator, receiver,
                       initiated_at, started_at, ended_at, has_recording)
    SELECT session_id, call_type, status, receiver_type, initiator, receiver,
           initiated_at, started_at, ended_at, has_recording
    FROM call_logs_v1 ORDER BY rowid;
INSERT INTO call_participants (log_id, uid, joined_at)
    SELECT c.log_id, p.uid, p.joined_at
    FROM call_participants_v1 p JOIN call_logs c ON c.session_id = p.session_id;
DROP TABLE call_participants_v1;
DROP TABLE call_logs_v1;
";

/// The newest log row of a session id (a direct session id may have had several meetings).
const NEWEST_LOG: &str = "(SELECT MAX(log_id) FROM call_logs WHERE session_id = ?1)";

fn status_str(status: CallStatus) -> &'static str {
    match status {
        CallStatus::Initiated => "initiated",
        CallStatus::Ongoing => "ongoing",
        CallStatus::Unanswered => "unanswered",
        CallStatus::Rejected => "rejected",
        CallStatus::Busy => "busy",
        CallStatus::Cancelled => "cancelled",
        CallStatus::Ended => "ended",
    }
}

fn parse_status(s: &str) -> CallStatus {
    match s {
        "ongoing" => CallStatus::Ongoing,
        "unanswered" => CallStatus::Unanswered,
        "rejected" => CallStatus::Rejected,
        "busy" => CallStatus::Busy,
        "cancelled" => CallStatus::Cancelled,
        "ended" => CallStatus::Ended,
        _ => CallStatus::Initiated,
    }
}

fn call_type_str(call_type: CallType) -> &'static str {
    match call_type {
        CallType::Audio => "audio",
        CallType::Video => "video",
    }
}

fn receiver_type_str(receiver_type: ReceiverType) -> &'static str {
    match receiver_type {
        ReceiverType::User => "user",
        ReceiverType::Group => "group",
    }
}

/// A value a call log filter compares with.
enum FilterValue {
    Text(String),
    Flag(bool),
}

/// The `WHERE` conditions of a call log listing (joined with `AND`), for either backend:
/// `placeholder` takes each value and returns how the SQL names it (`?1`, `$1::text`…).
fn call_log_conditions(
    viewer: Option<&str>,
    query: &CallLogQuery,
    placeholder: &mut dyn FnMut(FilterValue) -> String,
) -> Vec<String> {
    let mut conditions: Vec<String> = Vec::new();
    if let Some(me) = viewer {
        let p = placeholder(FilterValue::Text(me.to_owned()));
        conditions.push(format!(
            "(c.initiator = {p} OR (c.receiver_type = 'user' AND c.receiver = {p})
              OR (c.receiver_type = 'group' AND EXISTS (SELECT 1 FROM group_members g
                    WHERE g.guid = c.receiver AND g.uid = {p}))
              OR EXISTS (SELECT 1 FROM call_participants p WHERE p.log_id = c.log_id AND p.uid = {p}))"
        ));
        match query.direction {
            Some(CallDirection::Outgoing) => conditions.push(format!("c.initiator = {p}")),
            Some(CallDirection::Incoming) => conditions.push(format!("c.initiator != {p}")),
            None => {}
        }
    }
    if let Some(call_type) = query.call_type {
        let p = placeholder(FilterValue::Text(call_type_str(call_type).to_owned()));
        conditions.push(format!("c.call_type = {p}"));
    }
    if let Some(status) = query.status {
        let p = placeholder(FilterValue::Text(status_str(status).to_owned()));
        conditions.push(format!("c.status = {p}"));
    }
    if let Some(uid) = &query.uid {
        let p = placeholder(FilterValue::Text(uid.clone()));
        conditions.push(format!(
            "(c.initiator = {p} OR (c.receiver_type = 'user' AND c.receiver = {p})
              OR EXISTS (SELECT 1 FROM call_participants p WHERE p.log_id = c.log_id AND p.uid = {p}))"
        ));
    }
    if let Some(guid) = &query.guid {
        let p = placeholder(FilterValue::Text(guid.clone()));
        conditions.push(format!("(c.receiver_type = 'group' AND c.receiver = {p})"));
    }
    if let Some(recorded) = query.has_recording {
        let p = placeholder(FilterValue::Flag(recorded));
        conditions.push(format!("c.has_recording = {p}"));
    }
    conditions
}

/// The `WHERE` clause of `conditions` (empty if none), and the page's `LIMIT … OFFSET …`.
fn call_log_filter_and_page(conditions: &[String], query: &CallLogQuery) -> (String, String) {
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let per_page = match query.per_page {
        0 => 20,
        n => n.min(100),
    };
    let offset = u64::from(query.page.max(1) - 1) * u64::from(per_page);
    (filter, format!("LIMIT {per_page} OFFSET {offset}"))
}

/// Groups from (guid, name, member) rows ordered by guid: one [`GroupInfo`] per guid.
fn groups_from_rows(rows: impl IntoIterator<Item = (String, String, String)>) -> Vec<GroupInfo> {
    let mut groups: Vec<GroupInfo> = Vec::new();
    for (guid, name, member) in rows {
        match groups.last_mut() {
            Some(group) if group.guid == guid => group.members.push(member),
            _ => groups.push(GroupInfo {
                guid,
                name,
                members: vec![member],
            }),
        }
    }
    groups
}

/// A call log row as both backends read it, before it becomes a [`CallLog`].
struct CallLogRow {
    session_id: String,
    call_type: String,
    status: String,
    receiver_type: String,
    initiator: String,
    receiver: String,
    initiated_at: i64,
    started_at: Option<i64>,
    ended_at: Option<i64>,
    has_recording: bool,
    /// Participants' uids by join time, comma-separated.
    participants: Option<String>,
}

impl CallLogRow {
    /// The log as `viewer` (if any) sees it: with its direction, and its duration.
    fn into_call_log(self, viewer: Option<&str>) -> CallLog {
        let duration_secs = match (self.started_at, self.ended_at) {
            (Some(start), Some(end)) if end > start => ((end - start) / 1000) as u64,
            _ => 0,
        };
        CallLog {
            session_id: self.session_id,
            call_type: if self.call_type == "audio" {
                CallType::Audio
            } else {
                CallType::Video
            },
            status: parse_status(&self.status),
            receiver_type: if self.receiver_type == "group" {
                ReceiverType::Group
            } else {
                ReceiverType::User
            },
            direction: viewer.map(|me| {
                if me == self.initiator {
                    CallDirection::Outgoing
                } else {
                    CallDirection::Incoming
                }
            }),
            initiator: self.initiator,
            receiver: self.receiver,
            initiated_at: self.initiated_at as u64,
            started_at: self.started_at.map(|t| t as u64),
            ended_at: self.ended_at.map(|t| t as u64),
            duration_secs,
            participants: self
                .participants
                .map(|p| p.split(',').map(str::to_owned).collect())
                .unwrap_or_default(),
            has_recording: self.has_recording,
        }
    }
}

/// A new call log entry.
pub struct NewCallLog<'a> {
    /// Session id.
    pub session_id: &'a str,
    /// Audio or video.
    pub call_type: CallType,
    /// Initial status.
    pub status: CallStatus,
    /// User or group.
    pub receiver_type: ReceiverType,
    /// Initiator uid.
    pub initiator: &'a str,
    /// Receiver uid or guid (empty for a direct session).
    pub receiver: &'a str,
    /// Placed at, ms since the epoch.
    pub initiated_at: u64,
}

impl Sqlite {
    fn open(path: &Path) -> StoreResult<Self> {
        Self::init(Connection::open(path)?)
    }

    fn in_memory() -> StoreResult<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut db: Connection) -> StoreResult<Self> {
        db.execute_batch(PRAGMAS)?;
        let version_1 = db
            .prepare("SELECT 1 FROM pragma_table_info('call_logs') WHERE name = 'session_id'")?
            .exists([])?
            && !db
                .prepare("SELECT 1 FROM pragma_table_info('call_logs') WHERE name = 'log_id'")?
                .exists([])?;
        let tx = db.transaction()?;
        if version_1 {
            tx.execute_batch(MIGRATE_CALL_LOGS_V1)?;
        }
        tx.execute_batch(SCHEMA)?;
        if version_1 {
            tx.execute_batch(COPY_CALL_LOGS_V1)?;
            tracing::info!("call logs migrated: one row per meeting");
        }
        tx.commit()?;
        Ok(Self { db })
    }

    /// The token-signing secret, kept across restarts. The first call stores the one `fresh`
    /// makes; if `fresh` fails, its error is returned and nothing is stored.
    fn token_secret<E: From<StoreError>>(
        &self,
        fresh: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Vec<u8>, E> {
        let existing: Option<Vec<u8>> = self
            .db
            .query_row(
                "SELECT value FROM meta WHERE key = 'token_secret'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(StoreError::from)?;
        if let Some(secret) = existing {
            return Ok(secret);
        }
        let secret = fresh()?;
        self.db
            .execute(
                "INSERT INTO meta (key, value) VALUES ('token_secret', ?1)",
                params![secret],
            )
            .map_err(StoreError::from)?;
        Ok(secret)
    }

    /// Creates or updates a user (`auto_busy` unchanged when `None`).
    fn upsert_user(&self, user: &User, auto_busy: Option<bool>) -> StoreResult<()> {
        self.db.execute(
            "INSERT INTO users (uid, name, avatar, auto_busy) VALUES (?1, ?2, ?3, COALESCE(?4, 1))
             ON CONFLICT(uid) DO UPDATE SET name = ?2, avatar = ?3,
                 auto_busy = COALESCE(?4, users.auto_busy)",
            params![user.uid, user.name, user.avatar, auto_busy],
        )?;
        Ok(())
    }

    /// A user by uid.
    fn user(&self, uid: &str) -> StoreResult<Option<User>> {
        Ok(self
            .db
            .query_row(
                "SELECT uid, name, avatar FROM users WHERE uid = ?1",
                params![uid],
                |r| {
                    Ok(User {
                        uid: r.get(0)?,
                        name: r.get(1)?,
                        avatar: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    /// Whether the user auto-rejects calls with Busy while in a call (default yes).
    fn auto_busy(&self, uid: &str) -> StoreResult<bool> {
        Ok(self
            .db
            .query_row(
                "SELECT auto_busy FROM users WHERE uid = ?1",
                params![uid],
                |r| r.get::<_, bool>(0),
            )
            .optional()?
            .unwrap_or(true))
    }

    /// Creates or replaces a group and its members, in one transaction.
    fn upsert_group(&mut self, guid: &str, name: &str, members: &[String]) -> StoreResult<()> {
        let tx = self.db.transaction()?;
        tx.execute(
            "INSERT INTO groups (guid, name) VALUES (?1, ?2)
             ON CONFLICT(guid) DO UPDATE SET name = ?2",
            params![guid, name],
        )?;
        tx.execute("DELETE FROM group_members WHERE guid = ?1", params![guid])?;
        for uid in members {
            tx.execute(
                "INSERT OR IGNORE INTO group_members (guid, uid) VALUES (?1, ?2)",
                params![guid, uid],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Adds `uid` to group `guid`, creating the group (named `name`) if it does not exist.
    fn add_group_member(&self, guid: &str, name: &str, uid: &str) -> StoreResult<()> {
        self.db.execute(
            "INSERT OR IGNORE INTO groups (guid, name) VALUES (?1, ?2)",
            params![guid, name],
        )?;
        self.db.execute(
            "INSERT OR IGNORE INTO group_members (guid, uid) VALUES (?1, ?2)",
            params![guid, uid],
        )?;
        Ok(())
    }

    /// Members of a group; `None` if there is no such group.
    fn group_members(&self, guid: &str) -> StoreResult<Option<Vec<String>>> {
        let exists: Option<String> = self
            .db
            .query_row(
                "SELECT guid FROM groups WHERE guid = ?1",
                params![guid],
                |r| r.get(0),
            )
            .optional()?;
        if exists.is_none() {
            return Ok(None);
        }
        let mut stmt = self
            .db
            .prepare_cached("SELECT uid FROM group_members WHERE guid = ?1 ORDER BY uid")?;
        let members = stmt
            .query_map(params![guid], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(Some(members))
    }

    /// Everyone who shares a group with `uid` (their contacts), excluding `uid`.
    fn contacts(&self, uid: &str) -> StoreResult<Vec<User>> {
        let mut stmt = self.db.prepare_cached(
            "SELECT DISTINCT u.uid, u.name, u.avatar FROM group_members mine
             JOIN group_members theirs ON theirs.guid = mine.guid AND theirs.uid != mine.uid
             JOIN users u ON u.uid = theirs.uid
             WHERE mine.uid = ?1 ORDER BY u.uid",
        )?;
        let users = stmt
            .query_map(params![uid], |r| {
                Ok(User {
                    uid: r.get(0)?,
                    name: r.get(1)?,
                    avatar: r.get(2)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(users)
    }

    /// The groups `uid` belongs to, with their members, by guid.
    fn groups_of(&self, uid: &str) -> StoreResult<Vec<GroupInfo>> {
        let mut stmt = self.db.prepare_cached(
            "SELECT g.guid, g.name, others.uid FROM group_members mine
             JOIN groups g ON g.guid = mine.guid
             JOIN group_members others ON others.guid = mine.guid
             WHERE mine.uid = ?1 ORDER BY g.guid, others.uid",
        )?;
        let rows = stmt
            .query_map(params![uid], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(groups_from_rows(rows))
    }

    /// Records a new auth token for `uid`.
    fn add_auth_token(&self, token: &str, uid: &str, now_ms: u64) -> StoreResult<()> {
        self.db.execute(
            "INSERT INTO auth_tokens (token, uid, created_at) VALUES (?1, ?2, ?3)",
            params![token, uid, now_ms as i64],
        )?;
        Ok(())
    }

    /// The newest auth token of `uid`, if any.
    fn latest_auth_token(&self, uid: &str) -> StoreResult<Option<String>> {
        Ok(self
            .db
            .query_row(
                "SELECT token FROM auth_tokens WHERE uid = ?1 ORDER BY created_at DESC, rowid DESC LIMIT 1",
                params![uid],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// How many auth tokens `uid` has.
    fn auth_token_count(&self, uid: &str) -> StoreResult<u64> {
        let count: i64 = self.db.query_row(
            "SELECT COUNT(*) FROM auth_tokens WHERE uid = ?1",
            params![uid],
            |r| r.get(0),
        )?;
        Ok(count.max(0) as u64)
    }

    /// The uid an auth token belongs to.
    fn auth_token_owner(&self, token: &str) -> StoreResult<Option<String>> {
        Ok(self
            .db
            .query_row(
                "SELECT uid FROM auth_tokens WHERE token = ?1",
                params![token],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Records a new call, or a new meeting of a direct session id: a new row unless the
    /// session id already has one still open (initiated or ongoing).
    fn insert_call(&self, log: &NewCallLog) -> StoreResult<()> {
        self.db.execute(
            "INSERT INTO call_logs
                 (session_id, call_type, status, receiver_type, initiator, receiver, initiated_at)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7
             WHERE NOT EXISTS (SELECT 1 FROM call_logs
                               WHERE session_id = ?1 AND status IN ('initiated', 'ongoing'))",
            params![
                log.session_id,
                call_type_str(log.call_type),
                status_str(log.status),
                receiver_type_str(log.receiver_type),
                log.initiator,
                log.receiver,
                log.initiated_at as i64
            ],
        )?;
        Ok(())
    }

    /// Sets a call's status; final statuses also set `ended_at`.
    fn set_call_status(
        &self,
        session_id: &str,
        status: CallStatus,
        now_ms: u64,
    ) -> StoreResult<()> {
        let ended = !matches!(status, CallStatus::Initiated | CallStatus::Ongoing);
        self.db.execute(
            &format!(
                "UPDATE call_logs SET status = ?2,
                     ended_at = CASE WHEN ?3 THEN COALESCE(ended_at, ?4) ELSE ended_at END
                 WHERE log_id = {NEWEST_LOG}"
            ),
            params![session_id, status_str(status), ended, now_ms as i64],
        )?;
        Ok(())
    }

    /// Records that `uid` joined, setting `started_at` at the first join.
    fn add_participant(&mut self, session_id: &str, uid: &str, now_ms: u64) -> StoreResult<()> {
        let tx = self.db.transaction()?;
        tx.execute(
            &format!(
                "INSERT OR IGNORE INTO call_participants (log_id, uid, joined_at)
                 SELECT {NEWEST_LOG}, ?2, ?3 WHERE {NEWEST_LOG} IS NOT NULL"
            ),
            params![session_id, uid, now_ms as i64],
        )?;
        tx.execute(
            &format!(
                "UPDATE call_logs SET started_at = COALESCE(started_at, ?2)
                 WHERE log_id = {NEWEST_LOG}"
            ),
            params![session_id, now_ms as i64],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Marks a call as recorded.
    fn set_has_recording(&self, session_id: &str) -> StoreResult<()> {
        self.db.execute(
            &format!("UPDATE call_logs SET has_recording = 1 WHERE log_id = {NEWEST_LOG}"),
            params![session_id],
        )?;
        Ok(())
    }

    /// Lists call logs, newest first. With `viewer`, only calls that involve them (placed,
    /// received directly or through a group, or joined), with the direction filled in.
    fn list_calls(
        &self,
        viewer: Option<&str>,
        query: &CallLogQuery,
    ) -> StoreResult<(Vec<CallLog>, u64)> {
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        let conditions = call_log_conditions(viewer, query, &mut |value| {
            args.push(match value {
                FilterValue::Text(text) => text.into(),
                FilterValue::Flag(flag) => i64::from(flag).into(),
            });
            format!("?{}", args.len())
        });
        let (filter, page) = call_log_filter_and_page(&conditions, query);
        let total: i64 = self.db.query_row(
            &format!("SELECT COUNT(*) FROM call_logs c {filter}"),
            rusqlite::params_from_iter(args.iter()),
            |r| r.get(0),
        )?;
        let sql = format!(
            "SELECT c.session_id, c.call_type, c.status, c.receiver_type, c.initiator, c.receiver,
                    c.initiated_at, c.started_at, c.ended_at, c.has_recording,
                    (SELECT group_concat(uid, ',') FROM
                        (SELECT uid FROM call_participants p WHERE p.log_id = c.log_id ORDER BY joined_at, uid))
             FROM call_logs c {filter}
             ORDER BY c.initiated_at DESC, c.log_id DESC {page}"
        );
        let mut stmt = self.db.prepare(&sql)?;
        let logs = stmt
            .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                Ok(CallLogRow {
                    session_id: r.get(0)?,
                    call_type: r.get(1)?,
                    status: r.get(2)?,
                    receiver_type: r.get(3)?,
                    initiator: r.get(4)?,
                    receiver: r.get(5)?,
                    initiated_at: r.get(6)?,
                    started_at: r.get(7)?,
                    ended_at: r.get(8)?,
                    has_recording: r.get(9)?,
                    participants: r.get(10)?,
                }
                .into_call_log(viewer))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok((logs, total as u64))
    }

    /// The status of a ringing-flow call (one placed with `initiate_call`: it has a
    /// receiver, where a direct session's row has none), if one was logged under this id.
    fn ringing_call_status(&self, session_id: &str) -> StoreResult<Option<CallStatus>> {
        Ok(self
            .db
            .query_row(
                "SELECT status FROM call_logs WHERE session_id = ?1 AND receiver != ''
                 ORDER BY log_id DESC LIMIT 1",
                params![session_id],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .map(|status| parse_status(&status)))
    }

    /// Notes that the server was alive at `now_ms` (written about once a second), so that
    /// calls a crash left open are closed near the crash, not at the next start.
    fn set_last_alive(&self, now_ms: u64) -> StoreResult<()> {
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES ('last_alive_ms', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![now_ms as i64],
        )?;
        Ok(())
    }

    /// When the server last noted it was alive.
    fn last_alive(&self) -> StoreResult<Option<u64>> {
        Ok(self
            .db
            .query_row(
                "SELECT value FROM meta WHERE key = 'last_alive_ms'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map(|ms| ms.max(0) as u64))
    }

    /// Marks every call still initiated or ongoing as ended (server shutdown or restart),
    /// at `now_ms`.
    fn end_open_calls(&self, now_ms: u64) -> StoreResult<usize> {
        Ok(self.db.execute(
            "UPDATE call_logs SET
                 status = CASE status WHEN 'initiated' THEN 'cancelled' ELSE 'ended' END,
                 ended_at = COALESCE(ended_at, ?1)
             WHERE status IN ('initiated', 'ongoing')",
            params![now_ms as i64],
        )?)
    }
}
