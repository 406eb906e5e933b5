//! STUN and TURN servers handed to clients in the `join_session` answer.
//!
//! TURN credentials follow coturn's shared-secret scheme (`use-auth-secret` with
//! `static-auth-secret`, the "TURN REST API"): the user name is `EXPIRY:UID` (expiry in Unix
//! seconds) and the password is `base64(HMAC-SHA1(secret, username))`. coturn recomputes the
//! password from the secret, so nothing is stored and each participant's credentials expire
//! on their own.

use base64::Engine;
use hmac::{Hmac, Mac};
use huddle_protocol::IceServer;
use sha1::Sha1;

/// What the server tells clients about STUN and TURN.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IceServersConfig {
    /// Servers handed out as they are, e.g. `stun:stun.example.org:3478`.
    pub urls: Vec<String>,
    /// TURN servers, e.g. `turn:10.0.0.1:3478?transport=udp`, handed out with credentials.
    pub turn_urls: Vec<String>,
    /// coturn's `static-auth-secret` (TURN URLs are handed out only with it).
    pub turn_secret: Option<String>,
    /// How long TURN credentials stay valid.
    pub turn_credential_ttl_secs: u64,
}

/// Default TURN credential lifetime: one hour.
pub const DEFAULT_TURN_CREDENTIAL_TTL_SECS: u64 = 3_600;

impl IceServersConfig {
    /// The servers for `uid`'s media, with TURN credentials valid from `now_ms`.
    ///
    /// A TURN server answers STUN on its port too (RFC 5766), so each TURN host is also
    /// handed out as a STUN server (as a browser gathers server-reflexive candidates from its
    /// TURN servers): behind a NAT that maps per destination, one side's checks then reach
    /// the other's relay straight from its NAT, and a single relay carries the call.
    pub fn for_user(&self, uid: &str, now_ms: u64) -> Vec<IceServer> {
        let mut servers = Vec::new();
        let mut stun = self.urls.clone();
        if self.turn_secret.is_some() {
            for url in &self.turn_urls {
                if let Some(host) = url
                    .strip_prefix("turn:")
                    .map(|rest| rest.split('?').next().unwrap_or(rest))
                {
                    let derived = format!("stun:{host}");
                    if !stun.contains(&derived) {
                        stun.push(derived);
                    }
                }
            }
        }
        if !stun.is_empty() {
            servers.push(IceServer {
                urls: stun,
                username: None,
                credential: None,
            });
        }
        if let Some(secret) = self.turn_secret.as_deref()
            && !self.turn_urls.is_empty()
        {
            let expiry = now_ms / 1000 + self.turn_credential_ttl_secs;
            let (username, credential) = turn_credentials(secret, uid, expiry);
            servers.push(IceServer {
                urls: self.turn_urls.clone(),
                username: Some(username),
                credential: Some(credential),
            });
        }
        servers
    }
}

/// TURN REST credentials: (`EXPIRY:UID`, `base64(HMAC-SHA1(secret, username))`).
pub fn turn_credentials(secret: &str, uid: &str, expiry_unix_secs: u64) -> (String, String) {
    let username = format!("{expiry_unix_secs}:{uid}");
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let credential = match Hmac::<Sha1>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(username.as_bytes());
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    };
    (username, credential)
}

/// Checks a URL given to `--ice-server` (`stun:`, `stuns:`, `turn:` or `turns:`).
pub fn parse_ice_url(url: &str) -> Result<String, String> {
    parse_url(url, &["stun:", "stuns:", "turn:", "turns:"])
}

/// Checks a URL given to `--turn-url` (`turn:` or `turns:`).
pub fn parse_turn_url(url: &str) -> Result<String, String> {
    parse_url(url, &["turn:", "turns:"])
}

fn parse_url(url: &str, schemes: &[&str]) -> Result<String, String> {
    let Some(rest) = schemes.iter().find_map(|s| url.strip_prefix(s)) else {
        return Err(format!(
            "{url:?} does not start with {}",
            schemes.join(" or ")
        ));
    };
    let host = rest.split('?').next().unwrap_or_default();
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("{url:?} has no host"));
    }
    if let Some(query) = rest.split_once('?').map(|(_, q)| q)
        && !matches!(query, "transport=udp" | "transport=tcp")
    {
        return Err(format!(
            "{url:?}: the only query is transport=udp or transport=tcp"
        ));
    }
    Ok(url.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The credential is coturn's: base64 of HMAC-SHA1 over `EXPIRY:UID` with the secret
    /// (the value below was computed with `openssl dgst -sha1 -hmac`).
    #[test]
    fn turn_credentials_follow_the_turn_rest_scheme() {
        let (username, credential) = turn_credentials("north", "alice", 1_700_000_000);
        assert_eq!(username, "1700000000:alice");
        assert_eq!(credential, "Cd/49soE35ICqcJF/bCTn8Z4OyE=");
    }

    /// STUN URLs go out bare; TURN URLs only with a secret, with credentials that expire
    /// after the configured lifetime.
    #[test]
    fn clients_get_stun_bare_and_turn_with_their_own_credentials() {
        let config = IceServersConfig {
            urls: vec!["stun:10.0.0.1:3478".into()],
            turn_urls: vec!["turn:10.0.0.1:3478?transport=udp".into()],
            turn_secret: Some("north".into()),
            turn_credential_ttl_secs: 3_600,
        };
        let servers = config.for_user("bob", 1_000_000);
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].username, None);
        // The TURN host answers STUN too.
        assert_eq!(
            servers[0].urls,
            ["stun:10.0.0.1:3478".to_owned()],
            "the same host:port is not handed out twice"
        );
        assert_eq!(servers[1].username.as_deref(), Some("4600:bob"));
        assert_eq!(
            servers[1].credential,
            Some(turn_credentials("north", "bob", 4_600).1)
        );
        let turn_only = IceServersConfig {
            urls: Vec::new(),
            ..config.clone()
        };
        assert_eq!(
            turn_only.for_user("bob", 0)[0].urls,
            ["stun:10.0.0.1:3478".to_owned()]
        );
        let without_secret = IceServersConfig {
            turn_secret: None,
            ..config
        };
        assert_eq!(without_secret.for_user("bob", 0).len(), 1);
    }

    /// Option values are checked at start-up.
    #[test]
    fn ice_urls_are_checked() {
        assert!(parse_ice_url("stun:10.0.0.1:3478").is_ok());
        assert!(parse_turn_url("turn:h:3478?transport=tcp").is_ok());
        assert!(parse_turn_url("stun:h:3478").is_err());
        assert!(parse_ice_url("http://h").is_err());
        assert!(parse_turn_url("turn:?transport=udp").is_err());
        assert!(parse_turn_url("turn:h?transport=sctp").is_err());
    }
}
