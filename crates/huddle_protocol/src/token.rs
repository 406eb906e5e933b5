//! The layout of call tokens, read without checking their signature.
//!
//! A call token (from `generate_token`) is a compact HS256 JWT: three base64url parts without
//! padding, joined by dots, `header.claims.signature`. The header is always [`HEADER`]; the
//! claims are a [`CallTokenClaims`] as JSON; the signature is an HMAC-SHA256 of
//! `header.claims` (the [`TokenParts::signing_input`]) with the server's secret.
//!
//! Only the server, which holds the secret, can verify a token (`huddle_server::token`
//! signs and verifies, using this module for the layout). Clients use [`read_claims`] to learn
//! what a token says (which session it is for, until when) before sending it: nothing read
//! here is trusted until the server has checked the signature.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// The header of every call token, as JSON (before base64url).
pub const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// What a call token says: who (`sub`) may join which session (`sid`), until when (`exp`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallTokenClaims {
    /// Issuer, always `huddle`.
    pub iss: String,
    /// The user (uid).
    pub sub: String,
    /// The session id.
    pub sid: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: u64,
}

/// One of the three parts of a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenPart {
    /// The first part, [`HEADER`] encoded.
    Header,
    /// The second part, the [`CallTokenClaims`] encoded.
    Claims,
    /// The third part, the encoded signature.
    Signature,
}

impl fmt::Display for TokenPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenPart::Header => "header",
            TokenPart::Claims => "claims",
            TokenPart::Signature => "signature",
        })
    }
}

/// Why a string cannot be read as a call token.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenFormatError {
    /// It is not three parts separated by dots.
    #[error("a call token has 3 parts separated by dots, this one has {found}")]
    PartCount {
        /// How many parts it has.
        found: usize,
    },
    /// A part is not base64url without padding.
    #[error("the {part} of the call token is not base64url")]
    NotBase64 {
        /// Which part.
        part: TokenPart,
    },
    /// The claims are not the JSON of [`CallTokenClaims`].
    #[error("the claims of the call token are not readable: {reason}")]
    Claims {
        /// What the JSON parser said.
        reason: String,
    },
}

/// A token split into its parts, still encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenParts<'a> {
    /// `header.claims`: what the signature signs.
    pub signing_input: &'a str,
    /// The encoded header.
    pub header: &'a str,
    /// The encoded claims.
    pub claims: &'a str,
    /// The encoded signature.
    pub signature: &'a str,
}

impl<'a> TokenParts<'a> {
    /// Splits `token` into its three parts (decoding nothing).
    pub fn split(token: &'a str) -> Result<Self, TokenFormatError> {
        let mut parts = token.split('.');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(header), Some(claims), Some(signature), None) => Ok(Self {
                signing_input: &token[..header.len() + 1 + claims.len()],
                header,
                claims,
                signature,
            }),
            _ => Err(TokenFormatError::PartCount {
                found: token.split('.').count(),
            }),
        }
    }

    /// The decoded header (for a token of ours, the bytes of [`HEADER`]).
    pub fn header_bytes(&self) -> Result<Vec<u8>, TokenFormatError> {
        decode(self.header, TokenPart::Header)
    }

    /// The decoded signature.
    pub fn signature_bytes(&self) -> Result<Vec<u8>, TokenFormatError> {
        decode(self.signature, TokenPart::Signature)
    }

    /// The decoded claims.
    pub fn claims(&self) -> Result<CallTokenClaims, TokenFormatError> {
        let json = decode(self.claims, TokenPart::Claims)?;
        serde_json::from_slice(&json).map_err(|err| TokenFormatError::Claims {
            reason: err.to_string(),
        })
    }
}

fn decode(part: &str, which: TokenPart) -> Result<Vec<u8>, TokenFormatError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenFormatError::NotBase64 { part: which })
}

/// Reads what a call token says, without verifying it (only the server can).
pub fn read_claims(token: &str) -> Result<CallTokenClaims, TokenFormatError> {
    TokenParts::split(token)?.claims()
}

/// `header.claims` for `claims`: what the server signs.
pub fn signing_input(claims: &CallTokenClaims) -> String {
    // A struct of strings and integers always serializes.
    let json = serde_json::to_vec(claims).unwrap_or_default();
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(HEADER),
        URL_SAFE_NO_PAD.encode(json)
    )
}

/// The token: `signing_input` (from [`signing_input`]) followed by its encoded `signature`.
pub fn with_signature(signing_input: &str, signature: &[u8]) -> String {
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> CallTokenClaims {
        CallTokenClaims {
            iss: "huddle".into(),
            sub: "alice".into(),
            sid: "standup".into(),
            iat: 1_795_229_010,
            exp: 1_795_232_610,
        }
    }

    /// What [`signing_input`] and [`with_signature`] assemble splits back into the same parts
    /// and reads back as the same claims, with [`HEADER`] as its header.
    #[test]
    fn assembled_token_reads_back() {
        let input = signing_input(&claims());
        let token = with_signature(&input, b"not a real mac");
        let parts = TokenParts::split(&token).expect("three parts");
        assert_eq!(parts.signing_input, input);
        assert_eq!(parts.header_bytes(), Ok(HEADER.as_bytes().to_vec()));
        assert_eq!(parts.signature_bytes(), Ok(b"not a real mac".to_vec()));
        assert_eq!(parts.claims(), Ok(claims()));
        assert_eq!(read_claims(&token), Ok(claims()));
    }

    /// The example call token in `docs/protocol.md` reads as the claims it stands for, and
    /// those claims encode to the same `header.claims`.
    #[test]
    fn the_protocol_doc_example_token_reads() {
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJodWRkbGUiLCJzdWIiOiJhbGljZSIsInNpZCI6InN0YW5kdXAiLCJpYXQiOjE3OTUyMjkwMTAsImV4cCI6MTc5NTIzMjYxMH0.3q2-7w";
        assert!(include_str!("../../../docs/protocol.md").contains(token));
        assert_eq!(read_claims(token), Ok(claims()));
        let parts = TokenParts::split(token).expect("three parts");
        assert_eq!(
            signing_input(&claims()),
            parts.signing_input,
            "encoded alike"
        );
    }

    /// Strings that are not call tokens say why: the wrong number of parts, a part that is not
    /// base64url, claims that are not the claims' JSON.
    #[test]
    fn malformed_tokens_say_why() {
        for (token, found) in [("", 1), ("garbage", 1), ("a.b", 2), ("a.b.c.d", 4)] {
            assert_eq!(
                read_claims(token),
                Err(TokenFormatError::PartCount { found }),
                "{token:?}"
            );
        }
        assert_eq!(
            read_claims("a.!!.c"),
            Err(TokenFormatError::NotBase64 {
                part: TokenPart::Claims
            })
        );
        let not_claims = format!("a.{}.c", URL_SAFE_NO_PAD.encode(r#"{"sid":"standup"}"#));
        assert!(matches!(
            read_claims(&not_claims),
            Err(TokenFormatError::Claims { .. })
        ));
        let parts = TokenParts::split("a.b.!!").expect("three parts");
        assert_eq!(
            parts.signature_bytes(),
            Err(TokenFormatError::NotBase64 {
                part: TokenPart::Signature
            })
        );
    }
}
