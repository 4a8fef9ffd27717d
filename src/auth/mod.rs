//! SASL authentication of Kafka clients: the mechanisms this broker offers (PLAIN,
//! SCRAM-SHA-256, SCRAM-SHA-512, Kafka's names), their server-side exchanges, and the SCRAM
//! credentials they check against. Pure logic without I/O: the connection (`server::auth`)
//! drives an exchange with the tokens of SaslAuthenticate requests, and the credentials live
//! in the user store (`metadata::users`).

pub mod plain;
pub mod scram;

use serde::{Serialize, Serializer};

use scram::ScramMechanism;

/// A SASL mechanism, as Kafka's `sasl.enabled.mechanisms` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Scram(ScramMechanism),
}

impl Mechanism {
    pub const ALL: [Mechanism; 3] = [
        Mechanism::Plain,
        Mechanism::Scram(ScramMechanism::Sha256),
        Mechanism::Scram(ScramMechanism::Sha512),
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Scram(scram) => scram.name(),
        }
    }

    /// Kafka's names are case-sensitive (clients send them upper case).
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// The enabled mechanisms (`--sasl-enabled-mechanisms`), in the order given: a non-empty list
/// without repeats, written as Kafka writes it (`PLAIN,SCRAM-SHA-512`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mechanisms(Vec<Mechanism>);

impl Mechanisms {
    /// Parses a comma-separated list; the error names what is accepted.
    pub fn parse(text: &str) -> Result<Mechanisms, String> {
        let mut list = Vec::new();
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let mechanism = Mechanism::from_name(name).ok_or_else(|| {
                format!(
                    "unknown SASL mechanism `{name}` (known: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)"
                )
            })?;
            if !list.contains(&mechanism) {
                list.push(mechanism);
            }
        }
        if list.is_empty() {
            return Err("at least one SASL mechanism must be enabled".into());
        }
        Ok(Mechanisms(list))
    }

    pub fn contains(&self, mechanism: Mechanism) -> bool {
        self.0.contains(&mechanism)
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.0.iter().map(|m| m.name())
    }
}

impl std::fmt::Display for Mechanisms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.names().collect::<Vec<_>>().join(","))
    }
}

/// As a string, so `--check-config`'s output is a valid config file again.
impl Serialize for Mechanisms {
    fn serialize<S: Serializer>(&self, out: S) -> Result<S::Ok, S::Error> {
        out.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mechanism_lists_parse_like_kafkas() {
        let all = Mechanisms::parse("PLAIN,SCRAM-SHA-256,SCRAM-SHA-512").unwrap();
        assert_eq!(all.to_string(), "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512");
        let one = Mechanisms::parse(" SCRAM-SHA-512 , SCRAM-SHA-512").unwrap();
        assert_eq!(one.to_string(), "SCRAM-SHA-512");
        assert!(!one.contains(Mechanism::Plain));
        assert!(Mechanisms::parse("plain").unwrap_err().contains("unknown"));
        assert!(Mechanisms::parse("GSSAPI").is_err());
        assert!(Mechanisms::parse("").is_err());
        assert!(Mechanisms::parse(",").is_err());
    }
}
