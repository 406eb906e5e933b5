//! Call tokens: compact HS256 JWTs (`header.claims.signature`, base64url) signed with the
//! server's secret, bound to a user (`sub`) and a session (`sid`), with an expiry (`exp`).
//! The layout (splitting, base64url, the claims' JSON) is `huddle_protocol::token`, shared
//! with clients; this module holds what needs the secret: the HMAC.
//!
//! [`verify`] tells apart a token whose signature does not verify (forged, tampered,
//! malformed: `AUTH_ERR_TOKEN_INVALID_SIGNATURE`) from a genuine one that is expired
//! (`API_ERROR`); binding to the session and user is checked by the caller.

use hmac::{Hmac, Mac};
use huddle_protocol::token::{self as layout, HEADER, TokenParts};
use sha2::Sha256;

/// The claims of a call token (`huddle_protocol::token::CallTokenClaims`).
pub use huddle_protocol::token::CallTokenClaims as CallClaims;

type HmacSha256 = Hmac<Sha256>;

/// Why a call token was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a well-formed token, or its signature does not verify.
    #[error("call token signature does not verify")]
    InvalidSignature,
    /// Genuine, but past its expiry.
    #[error("call token expired at {exp} (now {now})")]
    Expired {
        /// Expiry, seconds.
        exp: u64,
        /// Now, seconds.
        now: u64,
    },
}

/// Signs `claims` with `secret`.
pub fn sign(claims: &CallClaims, secret: &[u8]) -> String {
    let signing_input = layout::signing_input(claims);
    layout::with_signature(&signing_input, &mac(secret, signing_input.as_bytes()))
}

fn mac(secret: &[u8], input: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length.
    let mut mac = HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(input);
    mac.finalize().into_bytes().to_vec()
}

/// Verifies the signature (constant time) and the expiry, returning the claims.
pub fn verify(token: &str, secret: &[u8], now_secs: u64) -> Result<CallClaims, TokenError> {
    let parts = TokenParts::split(token).map_err(|_| TokenError::InvalidSignature)?;
    let signature = parts
        .signature_bytes()
        .map_err(|_| TokenError::InvalidSignature)?;
    let mut verifier =
        HmacSha256::new_from_slice(secret).map_err(|_| TokenError::InvalidSignature)?;
    verifier.update(parts.signing_input.as_bytes());
    verifier
        .verify_slice(&signature)
        .map_err(|_| TokenError::InvalidSignature)?;
    // Signed by us: the header and claims are ours, but check them anyway.
    if parts.header_bytes().ok().as_deref() != Some(HEADER.as_bytes()) {
        return Err(TokenError::InvalidSignature);
    }
    let claims = parts.claims().map_err(|_| TokenError::InvalidSignature)?;
    if claims.exp <= now_secs {
        return Err(TokenError::Expired {
            exp: claims.exp,
            now: now_secs,
        });
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    fn claims(exp: u64) -> CallClaims {
        CallClaims {
            iss: "huddle".into(),
            sub: "alice".into(),
            sid: "s1".into(),
            iat: 100,
            exp,
        }
    }

    /// A token verifies with its secret until it expires.
    #[test]
    fn sign_then_verify() {
        let token = sign(&claims(200), b"secret");
        assert_eq!(verify(&token, b"secret", 150), Ok(claims(200)));
        assert_eq!(
            verify(&token, b"secret", 200),
            Err(TokenError::Expired { exp: 200, now: 200 })
        );
    }

    /// Another secret, a tampered body (claiming another user), a truncated or garbage token
    /// all fail as an invalid signature.
    #[test]
    fn forged_and_tampered_tokens_fail_the_signature() {
        let token = sign(&claims(200), b"secret");
        assert_eq!(
            verify(&token, b"other", 150),
            Err(TokenError::InvalidSignature)
        );
        let mut forged = claims(9_999);
        forged.sub = "mallory".into();
        let forged_body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).expect("json"));
        let parts: Vec<&str> = token.split('.').collect();
        let tampered = format!("{}.{}.{}", parts[0], forged_body, parts[2]);
        assert_eq!(
            verify(&tampered, b"secret", 150),
            Err(TokenError::InvalidSignature)
        );
        for bad in ["", "a.b", "a.b.c.d", "x.y.z", &token[..token.len() - 2]] {
            assert_eq!(
                verify(bad, b"secret", 150),
                Err(TokenError::InvalidSignature),
                "{bad}"
            );
        }
    }
}
