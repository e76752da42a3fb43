//! SASL authentication on every connection (KIP-43, KIP-152): the
//! mechanism named in a SaslHandshake, then its exchange in SaslAuthenticate
//! requests, right after the API versions are known and before any other
//! request. PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 and OAUTHBEARER (with the
//! application's token provider), all in pure Rust.
//!
//! A broker that ends authenticated sessions after `session_lifetime_ms`
//! (KIP-368) gets a new connection, authenticated afresh, before the
//! session runs out: [`Connection::is_broken`](crate::connection::Connection::is_broken)
//! reports an old one as due for replacing, and requests already on it
//! finish there.

mod oauthbearer;
mod scram;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;
use rand::Rng;

use crate::WireError;
use crate::connection::Connection;
pub use oauthbearer::{OAuthToken, TokenError, TokenProvider};
use scram::{Scram, ScramHash};

/// A SASL mechanism with its credentials. `Debug` shows the mechanism and
/// the user name, never a password or a token.
#[derive(Clone)]
pub struct Sasl {
    mechanism: Mechanism,
    username: String,
    password: String,
    /// OAUTHBEARER's tokens.
    tokens: Option<Arc<dyn TokenProvider>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
    OAuthBearer,
}

impl Mechanism {
    fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
            Self::OAuthBearer => "OAUTHBEARER",
        }
    }
}

impl fmt::Debug for Sasl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Sasl");
        d.field("mechanism", &self.mechanism.name());
        if self.tokens.is_none() {
            d.field("username", &self.username)
                .field("password", &"<redacted>");
        }
        d.finish()
    }
}

impl Sasl {
    /// PLAIN: the password travels as it is, so only over TLS outside a
    /// test network.
    pub fn plain(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self::new(Mechanism::Plain, username.into(), password.into())
    }

    /// SCRAM-SHA-256: the password never travels.
    pub fn scram_sha256(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self::new(Mechanism::ScramSha256, username.into(), password.into())
    }

    /// SCRAM-SHA-512: the password never travels.
    pub fn scram_sha512(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self::new(Mechanism::ScramSha512, username.into(), password.into())
    }

    /// OAUTHBEARER (KIP-255): every connection authenticates with a bearer
    /// token from `provider`, asked after the broker agreed to the
    /// mechanism. Re-authentication (KIP-368) asks it again.
    pub fn oauthbearer(provider: impl TokenProvider) -> Self {
        Self {
            tokens: Some(Arc::new(provider)),
            ..Self::new(Mechanism::OAuthBearer, String::new(), String::new())
        }
    }

    /// A user name and password mechanism named as Kafka names it
    /// (`sasl.mechanism`): `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (any
    /// case); `None` for another (OAUTHBEARER takes a token provider:
    /// [`oauthbearer`](Self::oauthbearer)).
    pub fn from_mechanism(
        mechanism: &str,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Option<Self> {
        let mechanism = [
            Mechanism::Plain,
            Mechanism::ScramSha256,
            Mechanism::ScramSha512,
        ]
        .into_iter()
        .find(|m| m.name().eq_ignore_ascii_case(mechanism))?;
        Some(Self::new(mechanism, username.into(), password.into()))
    }

    fn new(mechanism: Mechanism, username: String, password: String) -> Self {
        Self {
            mechanism,
            username,
            password,
            tokens: None,
        }
    }

    /// The mechanism's name, for logs.
    pub fn mechanism(&self) -> &'static str {
        self.mechanism.name()
    }

    /// Authenticates `conn`; returns how long the broker keeps the session
    /// (`None`: for as long as the connection lives).
    pub(crate) async fn authenticate(
        &self,
        conn: &Connection,
    ) -> Result<Option<Duration>, WireError> {
        let mechanism = self.mechanism.name();
        let user = (self.mechanism != Mechanism::OAuthBearer).then(|| self.username.clone());
        let refused = |detail: String| WireError::Authentication {
            address: conn.address().to_string(),
            mechanism,
            user: user.clone(),
            detail,
        };
        let handshake =
            SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism));
        let resp = conn.send(&handshake).await?;
        if resp.error_code.err().is_some() {
            let offered: Vec<&str> = resp.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(refused(format!(
                "the broker does not offer {mechanism}; it offers {offered:?}"
            )));
        }
        let session;
        match self.mechanism {
            Mechanism::Plain => {
                let token = format!("\0{}\0{}", self.username, self.password);
                let (_, lifetime) = round(conn, &refused, true, token.into_bytes()).await?;
                session = lifetime;
            }
            Mechanism::ScramSha256 | Mechanism::ScramSha512 => {
                let hash = if self.mechanism == Mechanism::ScramSha256 {
                    ScramHash::Sha256
                } else {
                    ScramHash::Sha512
                };
                let nonce: String = rand::rng()
                    .sample_iter(rand::distr::Alphanumeric)
                    .take(24)
                    .map(char::from)
                    .collect();
                let scram = Scram::new(hash, &self.username, &self.password, nonce);
                let (server_first, _) = round(conn, &refused, true, scram.client_first()).await?;
                // The key derivation runs thousands of hash rounds: off the
                // runtime's threads, which other connections share.
                let (scram, client_final) = tokio::task::spawn_blocking(move || {
                    let mut scram = scram;
                    let client_final = scram.client_final(&server_first);
                    (scram, client_final)
                })
                .await
                .map_err(|e| refused(format!("the key derivation did not finish: {e}")))?;
                let client_final = client_final.map_err(&refused)?;
                let (server_final, lifetime) = round(conn, &refused, true, client_final).await?;
                scram.verify_server_final(&server_final).map_err(&refused)?;
                session = lifetime;
            }
            Mechanism::OAuthBearer => {
                let provider = self
                    .tokens
                    .as_ref()
                    .ok_or_else(|| refused("no token provider".into()))?;
                let token = provider
                    .token()
                    .await
                    .map_err(|e| refused(format!("the token provider failed: {e}")))?;
                let first = oauthbearer::client_first(&token).map_err(&refused)?;
                let (answer, lifetime) = round(conn, &refused, false, first).await?;
                if !answer.is_empty() {
                    // The broker's error document: acknowledged, after which
                    // the broker fails the exchange.
                    let document = String::from_utf8_lossy(&answer).into_owned();
                    let failed = round(
                        conn,
                        &refused,
                        false,
                        oauthbearer::ACKNOWLEDGE_ERROR.to_vec(),
                    )
                    .await
                    .err()
                    .map(|e| e.to_string());
                    return Err(refused(format!(
                        "the broker refused the token: {document}{}",
                        failed.map(|e| format!(" ({e})")).unwrap_or_default()
                    )));
                }
                session = lifetime;
            }
        }
        tracing::debug!(broker = conn.address(), mechanism, user = %self.username, "authenticated");
        Ok(Some(session)
            .filter(|ms| *ms > 0)
            .map(|ms| Duration::from_millis(ms.unsigned_abs())))
    }
}

/// One SaslAuthenticate round: the broker's bytes and session lifetime.
/// With `credentials` (a user name and password mechanism), a refusal
/// says so in words.
async fn round(
    conn: &Connection,
    refused: &impl Fn(String) -> WireError,
    credentials: bool,
    bytes: Vec<u8>,
) -> Result<(Bytes, i64), WireError> {
    let req = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(bytes));
    let resp = conn.send(&req).await?;
    if let Some(e) = resp.error_code.err() {
        let message = resp.error_message.as_ref().map_or("", |m| m.as_str());
        let answered = format!("{e:?} {message}").trim_end().to_string();
        let detail = if e == ResponseError::SaslAuthenticationFailed && credentials {
            format!("wrong user name or password (the broker answered {answered})")
        } else {
            answered
        };
        return Err(refused(detail));
    }
    Ok((resp.auth_bytes, resp.session_lifetime_ms))
}

/// One SCRAM-SHA-256 exchange against a server's first and final
/// messages, for the fuzz target of SCRAM (built with `--cfg fuzzing`).
#[cfg(fuzzing)]
#[doc(hidden)]
pub fn fuzz_scram(server_first: &[u8], server_final: &[u8]) {
    let mut exchange = scram::Scram::new(scram::ScramHash::Sha256, "user", "pass", "k".into());
    let _ = exchange.client_first();
    if exchange.client_final(server_first).is_ok() {
        let _ = exchange.verify_server_final(server_final);
    }
}
