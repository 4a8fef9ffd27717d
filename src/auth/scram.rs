//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), server side, and the credentials they
//! are checked against.
//!
//! A credential is Kafka's: salt, iterations, `StoredKey = H(HMAC(SaltedPassword, "Client
//! Key"))` and `ServerKey = HMAC(SaltedPassword, "Server Key")`. Neither the password nor the
//! salted password is kept, so the store cannot be replayed as a password. The exchange is two
//! round trips: client-first -> server-first (nonce, salt, iterations), client-final (proof) ->
//! server-final (the server's signature, which proves to the client that the server knew the
//! credential). Primitives come from aws-lc-rs, the library TLS runs on; proofs are compared in
//! constant time.

use std::num::NonZeroU32;
use std::sync::OnceLock;

use aws_lc_rs::{digest, hmac, pbkdf2};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::limits;

#[derive(Debug, thiserror::Error)]
pub enum ScramError {
    /// The message breaks the grammar of RFC 5802; the text says where.
    #[error("invalid SCRAM {message} message: {reason}")]
    Malformed {
        message: &'static str,
        reason: String,
    },
    /// Wrong proof, for a user that exists or not (see `ServerFirst::start`).
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("authorization id `{authzid}` differs from the user name")]
    AuthorizationId { authzid: String },
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("the system's random number generator failed")]
    Random,
}

/// The two SCRAM mechanisms, with Kafka's names and type codes (AlterUserScramCredentials).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ScramMechanism {
    #[serde(rename = "SCRAM-SHA-256")]
    Sha256,
    #[serde(rename = "SCRAM-SHA-512")]
    Sha512,
}

impl ScramMechanism {
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<ScramMechanism> {
        ScramMechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Kafka's `ScramMechanism` type code: 1 for SHA-256, 2 for SHA-512 (0 is UNKNOWN).
    pub fn kafka_type(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    pub fn from_kafka_type(code: i8) -> Option<ScramMechanism> {
        ScramMechanism::ALL
            .into_iter()
            .find(|m| m.kafka_type() == code)
    }

    /// Bytes of the hash, and so of a salted password, a key or a proof.
    pub fn hash_bytes(self) -> usize {
        self.digest().output_len()
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            ScramMechanism::Sha256 => &digest::SHA256,
            ScramMechanism::Sha512 => &digest::SHA512,
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        let algorithm = match self {
            ScramMechanism::Sha256 => hmac::HMAC_SHA256,
            ScramMechanism::Sha512 => hmac::HMAC_SHA512,
        };
        hmac::sign(&hmac::Key::new(algorithm, key), data)
            .as_ref()
            .to_vec()
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.digest(), data).as_ref().to_vec()
    }

    /// `Hi(password, salt, iterations)`: PBKDF2 with this mechanism's HMAC. CPU-heavy by
    /// design (thousands of HMACs): call it off the async executor.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let algorithm = match self {
            ScramMechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            ScramMechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        };
        let iterations = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
        let mut out = vec![0; self.hash_bytes()];
        pbkdf2::derive(algorithm, iterations, salt, password, &mut out);
        out
    }

    /// The credential of a salted password, as AlterUserScramCredentials carries it.
    pub fn credential_from_salted(
        self,
        salt: Vec<u8>,
        iterations: u32,
        salted_password: &[u8],
    ) -> ScramCredential {
        let client_key = self.hmac(salted_password, b"Client Key");
        ScramCredential {
            stored_key: self.hash(&client_key),
            server_key: self.hmac(salted_password, b"Server Key"),
            salt,
            iterations,
        }
    }

    /// A new credential for `password` with a fresh random salt (CPU-heavy: see
    /// `salted_password`).
    pub fn new_credential(
        self,
        password: &str,
        iterations: u32,
    ) -> Result<ScramCredential, ScramError> {
        let salt = random_bytes(limits::SCRAM_SALT_BYTES)?;
        let salted = self.salted_password(password.as_bytes(), &salt, iterations);
        Ok(self.credential_from_salted(salt, iterations, &salted))
    }
}

/// What is stored per user and mechanism. Its `Debug` shows only the iterations.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    #[serde(with = "base64_bytes")]
    pub salt: Vec<u8>,
    pub iterations: u32,
    #[serde(with = "base64_bytes")]
    pub stored_key: Vec<u8>,
    #[serde(with = "base64_bytes")]
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramCredential {
    /// Whether `password` is this credential's (SASL/PLAIN checks passwords this way, so no
    /// password is ever stored). CPU-heavy: see `ScramMechanism::salted_password`.
    pub fn verify_password(&self, mechanism: ScramMechanism, password: &str) -> bool {
        let salted = mechanism.salted_password(password.as_bytes(), &self.salt, self.iterations);
        let candidate = mechanism.credential_from_salted(Vec::new(), self.iterations, &salted);
        bool::from(candidate.stored_key.ct_eq(&self.stored_key))
    }
}

mod base64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], out: S) -> Result<S::Ok, S::Error> {
        out.serialize_str(&super::BASE64.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(input)?;
        super::BASE64.decode(text).map_err(serde::de::Error::custom)
    }
}

/// `len` bytes from the system's CSPRNG.
pub fn random_bytes(len: usize) -> Result<Vec<u8>, ScramError> {
    let mut bytes = vec![0; len];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| ScramError::Random)?;
    Ok(bytes)
}

/// A stand-in credential for a user that does not exist, so that the exchange runs to its
/// end and fails like a wrong password: the same message at the same step, and the same salt
/// for the same name on every try (while the process lives). Its keys match no proof.
fn unknown_user_credential(mechanism: ScramMechanism, user: &str) -> ScramCredential {
    static SECRET: OnceLock<Vec<u8>> = OnceLock::new();
    let secret = SECRET.get_or_init(|| {
        random_bytes(limits::SCRAM_SALT_BYTES).unwrap_or_else(|_| vec![0; limits::SCRAM_SALT_BYTES])
    });
    let derive = |label: &str| mechanism.hmac(secret, format!("{label}\0{user}").as_bytes());
    let mut salt = derive("salt");
    salt.truncate(limits::SCRAM_SALT_BYTES);
    ScramCredential {
        salt,
        iterations: limits::SCRAM_ITERATIONS_DEFAULT,
        stored_key: derive("stored key"),
        server_key: derive("server key"),
    }
}

/// The server between its first message and the client's final one.
pub struct ServerFirst {
    mechanism: ScramMechanism,
    user: String,
    /// Whether `credential` is the user's, not a stand-in for an unknown user.
    known: bool,
    credential: ScramCredential,
    /// The GS2 header as the client sent it: the final message's channel binding repeats it.
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl ServerFirst {
    /// Handles client-first: parses it, looks the user up, and answers with server-first. An
    /// unknown user gets a server-first as well and fails at client-final, like a wrong
    /// password, so the exchange does not tell which users exist.
    pub fn start(
        mechanism: ScramMechanism,
        client_first: &[u8],
        lookup: impl FnOnce(&str) -> Option<ScramCredential>,
    ) -> Result<(ServerFirst, Vec<u8>), ScramError> {
        let nonce_bytes = random_bytes(limits::SCRAM_NONCE_BYTES)?;
        ServerFirst::start_with_nonce(mechanism, client_first, lookup, &BASE64.encode(nonce_bytes))
    }

    fn start_with_nonce(
        mechanism: ScramMechanism,
        client_first: &[u8],
        lookup: impl FnOnce(&str) -> Option<ScramCredential>,
        server_nonce: &str,
    ) -> Result<(ServerFirst, Vec<u8>), ScramError> {
        let first = ClientFirst::parse(client_first)?;
        if let Some(authzid) = first.authzid {
            if authzid != first.user {
                return Err(ScramError::AuthorizationId { authzid });
            }
        }
        let found = lookup(&first.user);
        let known = found.is_some();
        let credential = found.unwrap_or_else(|| unknown_user_credential(mechanism, &first.user));
        let nonce = format!("{}{server_nonce}", first.client_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&credential.salt),
            credential.iterations
        );
        let reply = server_first.clone().into_bytes();
        let state = ServerFirst {
            mechanism,
            user: first.user,
            known,
            credential,
            gs2_header: first.gs2_header,
            client_first_bare: first.bare,
            server_first,
            nonce,
        };
        Ok((state, reply))
    }

    pub fn mechanism(&self) -> ScramMechanism {
        self.mechanism
    }

    /// Handles client-final: checks the channel binding, the nonce and the proof, and answers
    /// with server-final. Gives the authenticated user name.
    pub fn finish(self, client_final: &[u8]) -> Result<(String, Vec<u8>), ScramError> {
        let malformed = |reason: &str| ScramError::Malformed {
            message: "client final",
            reason: reason.to_string(),
        };
        let text = std::str::from_utf8(client_final).map_err(|_| malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or_else(|| malformed("no proof (p=)"))?;
        let mut fields = without_proof.split(',');
        let binding = fields
            .next()
            .and_then(|f| f.strip_prefix("c="))
            .ok_or_else(|| malformed("no channel binding (c=)"))?;
        let nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .ok_or_else(|| malformed("no nonce (r=)"))?;
        if binding != BASE64.encode(self.gs2_header.as_bytes()) {
            return Err(malformed(
                "the channel binding differs from the first message",
            ));
        }
        if nonce != self.nonce {
            return Err(malformed("the nonce differs from the server's"));
        }
        let proof = BASE64
            .decode(proof)
            .map_err(|_| malformed("the proof is not base64"))?;
        if proof.len() != self.mechanism.hash_bytes() {
            return Err(malformed("the proof has the wrong length"));
        }
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let mechanism = self.mechanism;
        let client_signature = mechanism.hmac(&self.credential.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        let stored_key = mechanism.hash(&client_key);
        if !bool::from(stored_key.ct_eq(&self.credential.stored_key)) || !self.known {
            return Err(ScramError::InvalidCredentials);
        }
        let server_signature = mechanism.hmac(&self.credential.server_key, auth_message.as_bytes());
        let server_final = format!("v={}", BASE64.encode(server_signature));
        Ok((self.user, server_final.into_bytes()))
    }
}

/// client-first-message = gs2-header client-first-message-bare.
struct ClientFirst {
    gs2_header: String,
    authzid: Option<String>,
    bare: String,
    user: String,
    client_nonce: String,
}

impl ClientFirst {
    fn parse(message: &[u8]) -> Result<ClientFirst, ScramError> {
        let malformed = |reason: &str| ScramError::Malformed {
            message: "client first",
            reason: reason.to_string(),
        };
        let text = std::str::from_utf8(message).map_err(|_| malformed("not UTF-8"))?;
        let mut parts = text.splitn(3, ',');
        let (Some(flag), Some(authzid_field), Some(bare)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("no GS2 header"));
        };
        match flag {
            "n" | "y" => {}
            _ if flag.starts_with("p=") => {
                return Err(ScramError::Unsupported(
                    "channel binding is not supported (use SCRAM without -PLUS)",
                ))
            }
            _ => return Err(malformed("the GS2 header must start with n or y")),
        }
        let authzid = match authzid_field {
            "" => None,
            _ => Some(sasl_name(
                authzid_field
                    .strip_prefix("a=")
                    .ok_or_else(|| malformed("bad authorization id"))?,
            )?),
        };
        let gs2_header = format!("{flag},{authzid_field},");
        let mut fields = bare.split(',');
        let user = fields
            .next()
            .and_then(|f| f.strip_prefix("n="))
            .ok_or_else(|| malformed("no user name (n=)"))?;
        let user = sasl_name(user)?;
        let client_nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .ok_or_else(|| malformed("no nonce (r=)"))?;
        if client_nonce.is_empty() || !client_nonce.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(malformed("the nonce must be printable"));
        }
        for extension in fields {
            if extension.starts_with("m=") {
                return Err(ScramError::Unsupported(
                    "mandatory extensions are not supported",
                ));
            }
            if extension == "tokenauth=true" {
                return Err(ScramError::Unsupported(
                    "delegation tokens are not supported",
                ));
            }
        }
        if user.is_empty() {
            return Err(malformed("empty user name"));
        }
        Ok(ClientFirst {
            gs2_header,
            authzid,
            bare: bare.to_string(),
            user,
            client_nonce: client_nonce.to_string(),
        })
    }
}

/// Decodes a `saslname`: `=2C` is a comma, `=3D` an equals sign, any other `=` is an error.
fn sasl_name(text: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3);
        match escape {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => {
                return Err(ScramError::Malformed {
                    message: "client first",
                    reason: "bad escape in a name (only =2C and =3D)".into(),
                })
            }
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677, section 3: the SCRAM-SHA-256 example exchange, end to end.
    #[test]
    fn rfc_7677_test_vector() {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let mechanism = ScramMechanism::Sha256;
        let salted = mechanism.salted_password(b"pencil", &salt, 4096);
        let credential = mechanism.credential_from_salted(salt, 4096, &salted);
        let (state, server_first) = ServerFirst::start_with_nonce(
            mechanism,
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            |user| (user == "user").then(|| credential.clone()),
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(server_first).unwrap(),
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let client_final = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                            p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let (user, server_final) = state.finish(client_final.as_bytes()).unwrap();
        assert_eq!(user, "user");
        assert_eq!(
            String::from_utf8(server_final).unwrap(),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        assert!(credential.verify_password(mechanism, "pencil"));
        assert!(!credential.verify_password(mechanism, "pencil2"));
    }

    /// A client side written from the RFC, to drive the server with any mechanism.
    fn client_final(
        mechanism: ScramMechanism,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
    ) -> (String, Vec<u8>) {
        let fields: Vec<&str> = server_first.split(',').collect();
        let nonce = fields[0].strip_prefix("r=").unwrap();
        let salt = BASE64
            .decode(fields[1].strip_prefix("s=").unwrap())
            .unwrap();
        let iterations: u32 = fields[2].strip_prefix("i=").unwrap().parse().unwrap();
        let salted = mechanism.salted_password(password.as_bytes(), &salt, iterations);
        let client_key = mechanism.hmac(&salted, b"Client Key");
        let stored_key = mechanism.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = mechanism.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = mechanism.hmac(&salted, b"Server Key");
        let expected_final = format!(
            "v={}",
            BASE64.encode(mechanism.hmac(&server_key, auth_message.as_bytes()))
        );
        (
            format!("{without_proof},p={}", BASE64.encode(proof)),
            expected_final.into_bytes(),
        )
    }

    fn exchange(
        mechanism: ScramMechanism,
        stored: &ScramCredential,
        password: &str,
    ) -> Result<String, ScramError> {
        let bare = "n=al=3Dice=2C,r=fyko+d2lbbFgONRv9qkxdawL";
        let (state, server_first) =
            ServerFirst::start(mechanism, format!("n,,{bare}").as_bytes(), |user| {
                (user == "al=ice,").then(|| stored.clone())
            })?;
        let server_first = String::from_utf8(server_first).unwrap();
        let (message, expected) = client_final(mechanism, password, bare, &server_first);
        let (user, server_final) = state.finish(message.as_bytes())?;
        assert_eq!(server_final, expected, "the server's signature");
        Ok(user)
    }

    #[test]
    fn sha_512_round_trip_and_wrong_password() {
        let mechanism = ScramMechanism::Sha512;
        let stored = mechanism.new_credential("s3cret", 4096).unwrap();
        assert_eq!(stored.stored_key.len(), 64);
        assert_eq!(exchange(mechanism, &stored, "s3cret").unwrap(), "al=ice,");
        assert!(matches!(
            exchange(mechanism, &stored, "wrong"),
            Err(ScramError::InvalidCredentials)
        ));
        // The credential does not hold the password, and its Debug shows no key.
        let json = serde_json::to_string(&stored).unwrap();
        assert!(!json.contains("s3cret"));
        assert!(!format!("{stored:?}").contains(&BASE64.encode(&stored.stored_key)));
        let back: ScramCredential = serde_json::from_str(&json).unwrap();
        assert_eq!(back, stored);
    }

    #[test]
    fn unknown_users_and_bad_messages_are_refused() {
        let mechanism = ScramMechanism::Sha256;
        let stored = mechanism.new_credential("pw", 4096).unwrap();
        let lookup = |user: &str| (user == "bob").then(|| stored.clone());
        let start = |message: &str| ServerFirst::start(mechanism, message.as_bytes(), lookup);
        // An unknown user gets a server-first with a salt that is stable for its name, and
        // fails at the proof like a wrong password.
        let (eve, first) = start("n,,n=eve,r=abc").unwrap();
        let (_, again) = start("n,,n=eve,r=abc").unwrap();
        let salt = |m: &[u8]| {
            String::from_utf8(m.to_vec())
                .unwrap()
                .split(',')
                .nth(1)
                .unwrap()
                .to_string()
        };
        assert_eq!(salt(&first), salt(&again));
        let nonce = String::from_utf8(first).unwrap();
        let nonce = nonce.split(',').next().unwrap();
        let proof = BASE64.encode([0u8; 32]);
        assert!(matches!(
            eve.finish(format!("c=biws,{nonce},p={proof}").as_bytes()),
            Err(ScramError::InvalidCredentials)
        ));
        assert!(matches!(
            start("n,a=eve,n=bob,r=abc"),
            Err(ScramError::AuthorizationId { .. })
        ));
        assert!(start("n,a=bob,n=bob,r=abc").is_ok());
        for bad in [
            "",
            "n",
            "n,,",
            "x,,n=bob,r=abc",
            "n,,r=abc",
            "n,,n=bob",
            "n,,n=bob,r=",
            "n,,n=b=ob,r=abc",
            "n,,n=bob,r=abc,m=x",
        ] {
            assert!(
                matches!(
                    start(bad),
                    Err(ScramError::Malformed { .. } | ScramError::Unsupported(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            start("p=tls-unique,,n=bob,r=abc"),
            Err(ScramError::Unsupported(_))
        ));
        let (state, _) = start("n,,n=bob,r=abc").unwrap();
        assert!(matches!(
            state.finish(b"c=biws,r=abc,p=AAAA"),
            Err(ScramError::Malformed { .. })
        ));
    }

    #[test]
    fn mechanisms_have_kafkas_names_and_codes() {
        for mechanism in ScramMechanism::ALL {
            assert_eq!(ScramMechanism::from_name(mechanism.name()), Some(mechanism));
            assert_eq!(
                ScramMechanism::from_kafka_type(mechanism.kafka_type()),
                Some(mechanism)
            );
        }
        assert_eq!(ScramMechanism::from_kafka_type(0), None);
        assert_eq!(ScramMechanism::Sha256.hash_bytes(), 32);
    }
}
