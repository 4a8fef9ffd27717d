//! SASL/PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd` in one token. Only parsing lives
//! here; the password is checked against the user's stored SCRAM credential
//! (`ScramCredential::verify_password`), so no password is stored for PLAIN either.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlainError {
    #[error("Invalid SASL/PLAIN response: expected 3 tokens, got {0}")]
    Tokens(usize),
    #[error("Invalid SASL/PLAIN response: not UTF-8")]
    NotUtf8,
    #[error("Authentication failed: username not specified")]
    NoUser,
    #[error("Authentication failed: password not specified")]
    NoPassword,
    #[error("Authentication failed: Client requested an authorization id that is different from username")]
    AuthorizationId,
}

/// A parsed PLAIN token. Its `Debug` never shows the password.
pub struct PlainCredentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for PlainCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainCredentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Parses a PLAIN token with Kafka's rules: exactly three fields, user and password not empty,
/// an authorization id only if it names the user itself.
pub fn parse(token: &[u8]) -> Result<PlainCredentials, PlainError> {
    let text = std::str::from_utf8(token).map_err(|_| PlainError::NotUtf8)?;
    let fields: Vec<&str> = text.split('\0').collect();
    let [authzid, user, password] = fields.as_slice() else {
        return Err(PlainError::Tokens(fields.len()));
    };
    if user.is_empty() {
        return Err(PlainError::NoUser);
    }
    if password.is_empty() {
        return Err(PlainError::NoPassword);
    }
    if !authzid.is_empty() && authzid != user {
        return Err(PlainError::AuthorizationId);
    }
    Ok(PlainCredentials {
        user: user.to_string(),
        password: password.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_tokens_parse_with_kafkas_rules() {
        let ok = parse(b"\0alice\0pw").unwrap();
        assert_eq!((ok.user.as_str(), ok.password.as_str()), ("alice", "pw"));
        let ok = parse(b"alice\0alice\0p\x01w").unwrap();
        assert_eq!(ok.password, "p\u{1}w");
        assert!(!format!("{ok:?}").contains("p\u{1}w"));
        assert_eq!(
            parse(b"bob\0alice\0pw").unwrap_err(),
            PlainError::AuthorizationId
        );
        assert_eq!(parse(b"\0\0pw").unwrap_err(), PlainError::NoUser);
        assert_eq!(parse(b"\0alice\0").unwrap_err(), PlainError::NoPassword);
        assert_eq!(parse(b"alice\0pw").unwrap_err(), PlainError::Tokens(2));
        assert_eq!(parse(b"").unwrap_err(), PlainError::Tokens(1));
        assert_eq!(parse(b"\0a\0b\0c").unwrap_err(), PlainError::Tokens(4));
        assert_eq!(parse(b"\0a\0\xff").unwrap_err(), PlainError::NotUtf8);
    }
}
