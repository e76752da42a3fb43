//! The client side of SCRAM (RFC 5802) with SHA-256 or SHA-512 (RFC 7677),
//! as Kafka's SCRAM-SHA-256 and SCRAM-SHA-512 mechanisms use it: no channel
//! binding, the password taken as its UTF-8 bytes (no SASLprep: passwords
//! with characters SASLprep would change are not supported).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

/// The hash a SCRAM mechanism is built on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScramHash {
    Sha256,
    Sha512,
}

/// Four times the most Kafka lets a credential have (4096 to 16384): a
/// server asking for more would only burn the client's CPU (a million
/// iterations of SHA-512 take most of a second).
const MAX_ITERATIONS: u32 = 65_536;

impl ScramHash {
    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            // HMAC takes a key of any length.
            Self::Sha256 => Hmac::<Sha256>::new_from_slice(key)
                .map(|m| m.chain_update(data).finalize().into_bytes().to_vec())
                .unwrap_or_default(),
            Self::Sha512 => Hmac::<Sha512>::new_from_slice(key)
                .map(|m| m.chain_update(data).finalize().into_bytes().to_vec())
                .unwrap_or_default(),
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256 => Sha256::digest(data).to_vec(),
            Self::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// `Hi(password, salt, iterations)`: PBKDF2 with HMAC of this hash.
    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Self::Sha256 => {
                let mut out = [0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out.to_vec()
            }
            Self::Sha512 => {
                let mut out = [0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
                out.to_vec()
            }
        }
    }
}

/// One SCRAM exchange: client-first, then client-final from the server's
/// first message, then the server's signature checked.
pub(crate) struct Scram {
    hash: ScramHash,
    password: Vec<u8>,
    client_first_bare: String,
    nonce: String,
    /// Set by `client_final`: the signature the server must prove.
    server_signature: Option<Vec<u8>>,
}

impl Scram {
    /// Starts an exchange for `username` with a client nonce.
    pub(crate) fn new(hash: ScramHash, username: &str, password: &str, nonce: String) -> Self {
        let user = username.replace('=', "=3D").replace(',', "=2C");
        Self {
            hash,
            password: password.as_bytes().to_vec(),
            client_first_bare: format!("n={user},r={nonce}"),
            nonce,
            server_signature: None,
        }
    }

    /// The client-first message (no channel binding, no authzid).
    pub(crate) fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// The client-final message answering the server-first message.
    pub(crate) fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, String> {
        let server_first = std::str::from_utf8(server_first)
            .map_err(|_| "the server's first message is not UTF-8".to_string())?;
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for attribute in server_first.split(',') {
            match attribute.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = Some(v),
                Some(("i", v)) => iterations = Some(v),
                Some(("e", v)) => return Err(server_error(v)),
                _ => {}
            }
        }
        let nonce = nonce.ok_or("the server's first message has no nonce")?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err("the server's nonce does not extend the client's".into());
        }
        let salt = BASE64
            .decode(salt.ok_or("the server's first message has no salt")?)
            .map_err(|e| format!("the server's salt is not base64: {e}"))?;
        let iterations: u32 = iterations
            .ok_or("the server's first message has no iteration count")?
            .parse()
            .map_err(|e| format!("the server's iteration count: {e}"))?;
        if iterations == 0 || iterations > MAX_ITERATIONS {
            return Err(format!(
                "the server asks for {iterations} iterations (1..={MAX_ITERATIONS})"
            ));
        }
        let h = self.hash;
        let salted = h.salted_password(&self.password, &salt, iterations);
        let client_key = h.hmac(&salted, b"Client Key");
        let stored_key = h.hash(&client_key);
        // "biws" is base64 of "n,,": no channel binding.
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_signature = h.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = h.hmac(&salted, b"Server Key");
        self.server_signature = Some(h.hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes())
    }

    /// Checks the server-final message: the server knew the password too.
    pub(crate) fn verify_server_final(&self, server_final: &[u8]) -> Result<(), String> {
        let server_final = std::str::from_utf8(server_final)
            .map_err(|_| "the server's final message is not UTF-8".to_string())?;
        if let Some(e) = server_final.strip_prefix("e=") {
            return Err(server_error(e));
        }
        let signature = server_final
            .split(',')
            .find_map(|a| a.strip_prefix("v="))
            .ok_or("the server's final message has no signature")?;
        let signature = BASE64
            .decode(signature)
            .map_err(|e| format!("the server's signature is not base64: {e}"))?;
        match &self.server_signature {
            Some(expected) if *expected == signature => Ok(()),
            Some(_) => Err("the server's signature is wrong: it does not know the password".into()),
            None => Err("the server's final message came before the client's".into()),
        }
    }
}

/// What a SCRAM server error (`e=…`, RFC 5802) means to the user.
fn server_error(e: &str) -> String {
    match e {
        "invalid-proof" | "unknown-user" | "invalid-username-encoding" => {
            format!("wrong user name or password (the broker answered {e})")
        }
        other => format!("the broker answered {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677, section 3: the SCRAM-SHA-256 example exchange.
    #[test]
    fn the_rfc_7677_exchange() {
        let mut scram = Scram::new(
            ScramHash::Sha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO".into(),
        );
        assert_eq!(scram.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
            s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let client_final = scram.client_final(server_first).expect("client final");
        assert_eq!(
            String::from_utf8(client_final).expect("utf-8"),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        scram
            .verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .expect("the server's signature");
        assert!(
            scram
                .verify_server_final(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
                .is_err()
        );
        assert!(scram.verify_server_final(b"e=invalid-proof").is_err());
    }

    #[test]
    fn names_are_escaped_and_bad_server_messages_are_errors() {
        let mut scram = Scram::new(ScramHash::Sha512, "a=b,c", "pw", "abc".into());
        assert_eq!(scram.client_first(), b"n,,n=a=3Db=2Cc,r=abc");
        for bad in [
            &b"r=xyz,s=AAAA,i=4096"[..], // another nonce
            b"r=abc,s=AAAA,i=4096",      // the client's nonce only
            b"r=abcd,s=!!!,i=4096",      // salt not base64
            b"r=abcd,s=AAAA,i=0",        // no iterations
            b"r=abcd,s=AAAA,i=99999999", // too many
            b"r=abcd,s=AAAA,i=1000000",  // a second of CPU per handshake
            b"r=abcd,s=AAAA,i=65537",    // more than four times Kafka's most
            b"r=abcd,s=AAAA",            // no count
            b"e=unknown-user",
            b"\xff",
        ] {
            assert!(scram.client_final(bad).is_err(), "{bad:?}");
        }
        // Kafka's most, and the bound.
        assert!(scram.client_final(b"r=abcd,s=AAAA,i=16384").is_ok());
        assert!(scram.client_final(b"r=abcd,s=AAAA,i=65536").is_ok());
    }
}
