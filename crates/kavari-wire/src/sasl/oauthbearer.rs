//! SASL/OAUTHBEARER (RFC 7628, KIP-255): an OAuth 2 bearer token from the
//! application's [`TokenProvider`] in the client's first message; the
//! broker answers nothing on success, or an error document the client
//! acknowledges before the broker fails the authentication.

use std::collections::BTreeMap;
use std::fmt;

use futures::future::BoxFuture;

/// An OAuth 2 bearer token, and SASL extensions to send with it (KIP-342,
/// e.g. Confluent Cloud's `logicalCluster` and `identityPoolId`). `Debug`
/// never shows the token.
#[derive(Clone, PartialEq, Eq)]
pub struct OAuthToken {
    /// The token (a JWT, usually), without `Bearer `.
    pub value: String,
    /// Extensions by name.
    pub extensions: BTreeMap<String, String>,
}

impl OAuthToken {
    /// A token with no extensions.
    pub fn new(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            extensions: BTreeMap::new(),
        }
    }

    /// Adds the extension `name=value`.
    pub fn with_extension(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extensions.insert(name.into(), value.into());
        self
    }
}

impl fmt::Debug for OAuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthToken")
            .field("value", &"<redacted>")
            .field("extensions", &self.extensions)
            .finish()
    }
}

/// Why a token could not be had; its message goes into the authentication
/// error.
pub type TokenError = Box<dyn std::error::Error + Send + Sync>;

/// Where OAUTHBEARER tokens come from: the application's identity provider
/// client (client credentials against a token endpoint, a workload
/// identity file, a cloud SDK). Asked once per new connection, after the
/// broker agreed to OAUTHBEARER, and again when a connection is replaced
/// before its session ends (KIP-368): cache a token until shortly before it
/// expires.
///
/// ```
/// use kavari_wire::sasl::{OAuthToken, TokenError, TokenProvider};
/// use futures::future::BoxFuture;
///
/// struct FromFile(std::path::PathBuf);
///
/// impl TokenProvider for FromFile {
///     fn token(&self) -> BoxFuture<'_, Result<OAuthToken, TokenError>> {
///         Box::pin(async move {
///             let jwt = std::fs::read_to_string(&self.0)?;
///             Ok(OAuthToken::new(jwt.trim()))
///         })
///     }
/// }
/// ```
pub trait TokenProvider: Send + Sync + 'static {
    /// A token valid now.
    fn token(&self) -> BoxFuture<'_, Result<OAuthToken, TokenError>>;
}

/// The client's first message: `n,,` (no authorization identity), then
/// `auth=Bearer <token>` and each extension, each ended by `\x01`, and a
/// final `\x01`. Refuses what would break the framing or the grammar: a
/// token that is not RFC 6750's `b64token`, an extension named `auth` or
/// not alphabetic, a value with control characters.
pub(crate) fn client_first(token: &OAuthToken) -> Result<Vec<u8>, String> {
    let b64token = |c: char| c.is_ascii_alphanumeric() || "-._~+/".contains(c);
    let value = token.value.trim_end_matches('=');
    if value.is_empty() || !value.chars().all(b64token) {
        return Err(
            "the token provider gave an empty token or one with characters a bearer token cannot hold"
                .into(),
        );
    }
    let mut out = format!("n,,\x01auth=Bearer {}\x01", token.value);
    for (name, value) in &token.extensions {
        if name == "auth" || name.is_empty() || !name.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(format!(
                "OAUTHBEARER extension name {name:?}: letters only, and not \"auth\""
            ));
        }
        if value
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\r' | '\n'))
        {
            return Err(format!(
                "OAUTHBEARER extension {name}: the value holds a control character"
            ));
        }
        out.push_str(&format!("{name}={value}\x01"));
    }
    out.push('\x01');
    Ok(out.into_bytes())
}

/// What the client sends after the broker's error document: a lone
/// `\x01`, after which the broker fails the authentication.
pub(crate) const ACKNOWLEDGE_ERROR: &[u8] = b"\x01";

#[cfg(test)]
mod tests {
    use super::*;

    /// The message Kafka's Java client and librdkafka send.
    #[test]
    fn the_first_message_carries_the_token_and_extensions() {
        let token = OAuthToken::new("eyJh.eyJz.c2ln")
            .with_extension("logicalCluster", "lkc-1")
            .with_extension("identityPoolId", "pool-2");
        assert_eq!(
            client_first(&token).unwrap(),
            b"n,,\x01auth=Bearer eyJh.eyJz.c2ln\x01identityPoolId=pool-2\x01logicalCluster=lkc-1\x01\x01"
        );
        assert_eq!(
            client_first(&OAuthToken::new("abc==")).unwrap(),
            b"n,,\x01auth=Bearer abc==\x01\x01"
        );
    }

    #[test]
    fn what_would_break_the_framing_is_refused() {
        for bad in ["", "has space", "a\x01b", "ünï"] {
            assert!(client_first(&OAuthToken::new(bad)).is_err(), "{bad:?}");
        }
        for (name, value) in [
            ("auth", "x"),
            ("log-cluster", "x"),
            ("", "x"),
            ("ok", "a\x01b"),
        ] {
            let token = OAuthToken::new("abc").with_extension(name, value);
            assert!(client_first(&token).is_err(), "{name:?}={value:?}");
        }
    }

    #[test]
    fn debug_never_shows_the_token() {
        let shown = format!("{:?}", OAuthToken::new("secret-token"));
        assert!(!shown.contains("secret-token"), "{shown}");
    }
}
