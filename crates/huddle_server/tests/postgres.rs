//! PostgreSQL as the store (`--db postgres://…`), against a real PostgreSQL that each test
//! starts for itself: `initdb` and `postgres` from Debian's `postgresql`, run as the
//! `postgres` user (PostgreSQL refuses root) in a directory of its own, listening only on a
//! Unix socket there. The server is stopped and the directory removed when the test ends,
//! failed or not.
//!
//! The backbone is differential: one script of operations runs on SQLite and on
//! PostgreSQL, and every read must come out the same.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use huddle_protocol::{CallDirection, CallLogQuery, CallStatus, CallType, ReceiverType, User};
use huddle_server::store::{NewCallLog, Store, StoreError};

#[path = "support/postgres.rs"]
mod postgres_server;
use postgres_server::Postgres;

fn user(uid: &str, name: &str) -> User {
    User {
        uid: uid.into(),
        name: name.into(),
        avatar: (uid == "bob").then(|| "https://example.invalid/bob.png".into()),
    }
}

/// Runs the same operations on `store`: users, groups, tokens, and calls of every kind
/// (answered, rejected, a group call joined by several, a direct session met twice, one
/// recorded, one left open), with timestamps that order them.
fn script(store: &mut Store) -> Result<(), StoreError> {
    store.upsert_user(&user("alice", "Alice"), None)?;
    store.upsert_user(&user("bob", "Bob"), Some(false))?;
    store.upsert_user(&user("carol", "Carol"), None)?;
    store.upsert_user(&user("Dave", "Dave (capital)"), None)?;
    store.upsert_user(&user("alice", "Alice Renamed"), Some(true))?;
    store.upsert_group(
        "team",
        "Team",
        &["carol".into(), "alice".into(), "bob".into(), "Dave".into()],
    )?;
    store.upsert_group("pair", "Pair", &["alice".into(), "bob".into()])?;
    store.upsert_group("pair", "Pair renamed", &["alice".into(), "carol".into()])?;
    store.add_group_member("team", "ignored", "erin")?;
    store.add_group_member("new", "New", "bob")?;
    store.add_auth_token("t1", "alice", 1_000)?;
    store.add_auth_token("t2", "alice", 1_000)?;
    store.add_auth_token("t3", "bob", 900)?;
    let call =
        |session: &'static str, initiator: &'static str, receiver: &'static str, at| NewCallLog {
            session_id: session,
            call_type: if at % 2 == 0 {
                CallType::Video
            } else {
                CallType::Audio
            },
            status: CallStatus::Initiated,
            receiver_type: if receiver == "team" {
                ReceiverType::Group
            } else {
                ReceiverType::User
            },
            initiator,
            receiver,
            initiated_at: at,
        };
    store.insert_call(&call("s1", "alice", "bob", 10_000))?;
    store.set_call_status("s1", CallStatus::Ongoing, 11_000)?;
    store.add_participant("s1", "alice", 11_000)?;
    store.add_participant("s1", "bob", 11_500)?;
    store.set_has_recording("s1")?;
    store.set_call_status("s1", CallStatus::Ended, 75_000)?;
    store.insert_call(&call("s2", "bob", "carol", 20_001))?;
    store.set_call_status("s2", CallStatus::Rejected, 21_000)?;
    store.insert_call(&call("g1", "carol", "team", 30_000))?;
    store.insert_call(&call("g1", "carol", "team", 30_500))?; // still open: no second row
    store.set_call_status("g1", CallStatus::Ongoing, 31_000)?;
    for (uid, at) in [
        ("carol", 31_000),
        ("Dave", 32_000),
        ("bob", 32_000),
        ("bob", 33_000),
    ] {
        store.add_participant("g1", uid, at)?;
    }
    store.set_call_status("g1", CallStatus::Ended, 90_000)?;
    for at in [40_000, 50_000] {
        store.insert_call(&call("direct", "alice", "", at))?;
        store.add_participant("direct", "alice", at + 100)?;
        store.add_participant("direct", "carol", at + 200)?;
        store.set_call_status("direct", CallStatus::Ended, at + 9_000)?;
    }
    store.insert_call(&call("open", "bob", "alice", 60_001))?;
    store.insert_call(&call("ringing", "carol", "alice", 70_000))?;
    store.set_call_status("ringing", CallStatus::Ongoing, 70_500)?;
    store.add_participant("nobody-logged-this", "alice", 1)?;
    store.set_last_alive(80_000)?;
    Ok(())
}

/// Everything the store can be asked, as text to compare.
fn reads(store: &Store) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    for uid in ["alice", "bob", "carol", "Dave", "erin", "nobody"] {
        out.push(format!("user {uid}: {:?}", store.user(uid)?));
        out.push(format!("auto_busy {uid}: {:?}", store.auto_busy(uid)?));
        out.push(format!("contacts {uid}: {:?}", store.contacts(uid)?));
        out.push(format!("groups {uid}: {:?}", store.groups_of(uid)?));
        out.push(format!("token {uid}: {:?}", store.latest_auth_token(uid)?));
        out.push(format!("tokens {uid}: {:?}", store.auth_token_count(uid)?));
    }
    for guid in ["team", "pair", "new", "none"] {
        out.push(format!("members {guid}: {:?}", store.group_members(guid)?));
    }
    for token in ["t1", "t3", "forged"] {
        out.push(format!(
            "owner {token}: {:?}",
            store.auth_token_owner(token)?
        ));
    }
    for session in ["s1", "s2", "g1", "direct", "open", "unknown"] {
        out.push(format!(
            "ringing {session}: {:?}",
            store.ringing_call_status(session)?
        ));
    }
    out.push(format!("last alive: {:?}", store.last_alive()?));
    let queries = [
        CallLogQuery::default(),
        CallLogQuery {
            per_page: 2,
            page: 2,
            ..CallLogQuery::default()
        },
        CallLogQuery {
            direction: Some(CallDirection::Incoming),
            ..CallLogQuery::default()
        },
        CallLogQuery {
            direction: Some(CallDirection::Outgoing),
            call_type: Some(CallType::Video),
            ..CallLogQuery::default()
        },
        CallLogQuery {
            status: Some(CallStatus::Ended),
            has_recording: Some(true),
            ..CallLogQuery::default()
        },
        CallLogQuery {
            uid: Some("carol".into()),
            ..CallLogQuery::default()
        },
        CallLogQuery {
            guid: Some("team".into()),
            has_recording: Some(false),
            ..CallLogQuery::default()
        },
    ];
    for viewer in [None, Some("alice"), Some("bob"), Some("Dave"), Some("erin")] {
        for query in &queries {
            out.push(format!(
                "calls {viewer:?} {query:?}: {:?}",
                store.list_calls(viewer, query)?
            ));
        }
    }
    Ok(out)
}

/// One script of operations on SQLite and on PostgreSQL gives the same answer to every
/// read: users, contacts and groups (ordered by byte, capitals first, as SQLite orders),
/// tokens, ringing status, and call logs under every filter, page and viewer; then both
/// close the calls left open the same way.
#[test]
fn postgresql_answers_as_sqlite_does() {
    let postgres = Postgres::start("same");
    let mut sqlite = Store::in_memory().expect("SQLite");
    let mut shared = Store::open(Path::new(&postgres.url())).expect("PostgreSQL");
    script(&mut sqlite).expect("script on SQLite");
    script(&mut shared).expect("script on PostgreSQL");
    let (expected, got) = (
        reads(&sqlite).expect("SQLite reads"),
        reads(&shared).expect("PostgreSQL reads"),
    );
    assert!(expected.len() > 60, "{expected:#?}");
    for (expected, got) in expected.iter().zip(&got) {
        assert_eq!(got, expected);
    }
    assert_eq!(got.len(), expected.len());
    assert_eq!(
        shared.end_open_calls(99_000).expect("PostgreSQL"),
        sqlite.end_open_calls(99_000).expect("SQLite")
    );
    assert_eq!(
        reads(&shared).expect("PostgreSQL reads"),
        reads(&sqlite).expect("SQLite reads")
    );
}

/// What one connection wrote, another (a restarted server, or a second one sharing the
/// database) reads: the call logs and the token-signing secret, which the first to store
/// it keeps (a later `fresh` is not called).
#[test]
fn postgresql_keeps_logs_and_the_secret_across_connections() {
    let postgres = Postgres::start("kept");
    let url = postgres.url();
    let mut first = Store::open(Path::new(&url)).expect("PostgreSQL");
    script(&mut first).expect("script");
    let secret = first
        .token_secret(|| Ok::<_, StoreError>(b"first".to_vec()))
        .expect("secret");
    let before = reads(&first).expect("reads");
    drop(first);
    let second = Store::open(Path::new(&url)).expect("PostgreSQL again");
    assert_eq!(reads(&second).expect("reads"), before);
    let again = second
        .token_secret(|| -> Result<Vec<u8>, StoreError> { panic!("a secret was kept") })
        .expect("secret");
    assert_eq!(
        (secret.as_slice(), again.as_slice()),
        (&b"first"[..], &b"first"[..])
    );
}

/// A database that is not there is a clear storage error at open, not a panic or a hang.
#[test]
fn an_unreachable_postgresql_is_a_storage_error() {
    let dir = std::env::temp_dir().join(format!("huddle-pg-none-{}", std::process::id()));
    let url = format!(
        "postgresql://huddle@{}:5432/postgres",
        dir.to_str().expect("path").replace('/', "%2F")
    );
    let started = Instant::now();
    let err = Store::open(Path::new(&url))
        .err()
        .expect("no PostgreSQL there");
    assert!(matches!(err, StoreError::Postgres(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A server started with `--db postgres://…` uses the database: the groups of its
/// configuration are there for another connection to read once it has bound, and the token
/// secret it made is kept there.
#[test]
fn a_server_binds_on_postgresql() {
    let postgres = Postgres::start("server");
    let url = postgres.url();
    let config = huddle_server::ServerConfig {
        db: Some(PathBuf::from(&url)),
        groups: vec![huddle_protocol::GroupInfo {
            guid: "lobby".into(),
            name: "Lobby".into(),
            members: vec!["alice".into(), "bob".into()],
        }],
        ..huddle_server::ServerConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let server = runtime
        .block_on(huddle_server::bind(config))
        .expect("binds on PostgreSQL");
    let reader = Store::open(Path::new(&url)).expect("PostgreSQL");
    assert_eq!(
        reader.group_members("lobby").expect("read"),
        Some(vec!["alice".to_owned(), "bob".to_owned()])
    );
    let secret = reader
        .token_secret(|| -> Result<Vec<u8>, StoreError> { panic!("the server kept none") })
        .expect("secret");
    assert!(secret.len() >= 32, "{secret:?}");
    drop(server);
}

/// Several servers starting at once on a new database (a cluster's nodes) all open it: the
/// tables are made once, under a lock, instead of racing on PostgreSQL's catalog (which
/// failed a node of `scripts/cluster` with "duplicate key value violates unique
/// constraint").
#[test]
fn servers_starting_at_once_all_open_a_new_database() {
    let postgres = Postgres::start("at-once");
    let url = postgres.url();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(6));
    let openers: Vec<_> = (0..6)
        .map(|_| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                Store::open(Path::new(&url)).map(|_| ())
            })
        })
        .collect();
    for opener in openers {
        if let Err(err) = opener.join().expect("thread") {
            panic!("a server could not open the new database: {err}");
        }
    }
}
