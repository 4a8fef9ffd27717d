//! Topic configs: the Kafka names this broker understands, their defaults and their checks.
//! A topic stores only what was set explicitly; everything else is the default, which
//! DescribeConfigs reports as such.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown topic config `{0}`")]
    Unknown(String),
    #[error("topic config `{name}`: {reason}")]
    Invalid { name: String, reason: String },
}

/// Kafka's DescribeConfigs `config_type` codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
}

pub struct TopicConfigDef {
    pub name: &'static str,
    pub config_type: ConfigType,
    pub documentation: &'static str,
    check: fn(&str) -> Result<(), String>,
}

pub const MAX_MESSAGE_BYTES: &str = "max.message.bytes";
pub const RETENTION_MS: &str = "retention.ms";
pub const RETENTION_BYTES: &str = "retention.bytes";

/// Every topic config accepted by CreateTopics and reported by DescribeConfigs.
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    TopicConfigDef {
        name: "cleanup.policy",
        config_type: ConfigType::String,
        documentation: "Only `delete` is supported: old data is removed by retention.",
        check: |v| match v {
            "delete" => Ok(()),
            _ => Err("only `delete` is supported".into()),
        },
    },
    TopicConfigDef {
        name: "compression.type",
        config_type: ConfigType::String,
        documentation:
            "Only `producer` is supported: batches are stored as the producer compressed them.",
        check: |v| match v {
            "producer" => Ok(()),
            _ => Err("only `producer` is supported".into()),
        },
    },
    TopicConfigDef {
        name: MAX_MESSAGE_BYTES,
        config_type: ConfigType::Int,
        documentation: "The largest record batch this topic accepts.",
        check: |v| positive_i32(v),
    },
    TopicConfigDef {
        name: "message.timestamp.type",
        config_type: ConfigType::String,
        documentation: "Only `CreateTime` is supported: record timestamps are the producer's.",
        check: |v| match v {
            "CreateTime" => Ok(()),
            _ => Err("only `CreateTime` is supported".into()),
        },
    },
    TopicConfigDef {
        name: "min.insync.replicas",
        config_type: ConfigType::Int,
        documentation: "Always 1: a single broker with a durable WAL.",
        check: |v| match v {
            "1" => Ok(()),
            _ => Err("a single broker has exactly 1 in-sync replica".into()),
        },
    },
    TopicConfigDef {
        name: RETENTION_BYTES,
        config_type: ConfigType::Long,
        documentation:
            "Bytes a partition keeps before the oldest data is deleted; -1 for no limit.",
        check: |v| at_least_minus_one(v),
    },
    TopicConfigDef {
        name: RETENTION_MS,
        config_type: ConfigType::Long,
        documentation: "How long records are kept before they are deleted; -1 for ever.",
        check: |v| at_least_minus_one(v),
    },
];

fn positive_i32(value: &str) -> Result<(), String> {
    match value.parse::<i32>() {
        Ok(v) if v > 0 => Ok(()),
        _ => Err(format!("`{value}` is not a positive 32-bit integer")),
    }
}

fn at_least_minus_one(value: &str) -> Result<(), String> {
    match value.parse::<i64>() {
        Ok(v) if v >= -1 => Ok(()),
        _ => Err(format!("`{value}` is not an integer >= -1")),
    }
}

pub fn definition(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|def| def.name == name)
}

/// The default of a topic config; `max.message.bytes` comes from the broker's setting.
pub fn default_value(name: &str, broker_message_max_bytes: i32) -> String {
    match name {
        "cleanup.policy" => "delete".into(),
        "compression.type" => "producer".into(),
        MAX_MESSAGE_BYTES => broker_message_max_bytes.to_string(),
        "message.timestamp.type" => "CreateTime".into(),
        "min.insync.replicas" => "1".into(),
        RETENTION_BYTES => "-1".into(),
        RETENTION_MS => "604800000".into(),
        _ => String::new(),
    }
}

/// Checks one config name and value.
pub fn validate(name: &str, value: &str) -> Result<(), ConfigError> {
    let def = definition(name).ok_or_else(|| ConfigError::Unknown(name.to_string()))?;
    (def.check)(value).map_err(|reason| ConfigError::Invalid {
        name: name.to_string(),
        reason,
    })
}

/// Checks a whole set of explicit configs.
pub fn validate_all(configs: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    configs
        .iter()
        .try_for_each(|(name, value)| validate(name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_configs_validate_and_unknown_ones_do_not() {
        assert!(validate(RETENTION_MS, "1000").is_ok());
        assert!(validate(RETENTION_MS, "-2").is_err());
        assert!(validate(MAX_MESSAGE_BYTES, "0").is_err());
        assert!(validate("cleanup.policy", "compact").is_err());
        assert_eq!(
            validate("no.such", "1"),
            Err(ConfigError::Unknown("no.such".into()))
        );
    }

    #[test]
    fn every_definition_accepts_its_own_default() {
        for def in TOPIC_CONFIGS {
            assert!(
                validate(def.name, &default_value(def.name, 1_048_588)).is_ok(),
                "{}",
                def.name
            );
        }
    }
}
