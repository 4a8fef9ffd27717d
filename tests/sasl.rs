//! SASL on the Kafka listener, against the real binary: the raw wire (what is admitted before
//! authentication, what a failure looks like), a real client library (rskafka) logging in
//! with SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN, users managed over the admin API and the
//! Kafka APIs, and users surviving a restart.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, ApiKey, ApiVersionsRequest,
    DescribeUserScramCredentialsRequest, MetadataRequest, SaslAuthenticateRequest,
    SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::client::{ClientBuilder, Credentials, SaslConfig};
use rskafka::record::Record;
use serde_json::json;
use strata::auth::scram::ScramMechanism;

const SASL_AUTHENTICATION_FAILED: i16 = 58;
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const ILLEGAL_SASL_STATE: i16 = 34;
const RESOURCE_NOT_FOUND: i16 = 91;
const UNACCEPTABLE_CREDENTIAL: i16 = 93;

fn sasl_broker(extra: &[&str]) -> Strata {
    let mut args = vec!["--kafka-security-protocol", "SASL_PLAINTEXT"];
    args.extend_from_slice(extra);
    Strata::start_with(&args)
}

async fn add_user(strata: &Strata, user: &str, mechanism: &str, password: &str) {
    let body = json!({"mechanism": mechanism, "password": password});
    let path = format!("/v1/users/{user}");
    let (status, answer) = admin_call(strata.admin, "PUT", &path, None, Some(&body)).await;
    assert_eq!(status, 200, "{answer}");
    assert!(!answer.to_string().contains(password), "{answer}");
}

async fn handshake(conn: &mut Conn, mechanism: &str) -> SaslHandshakeResponse {
    let request = SaslHandshakeRequest::default().with_mechanism(str_bytes(mechanism));
    conn.call(1, request).await
}

async fn authenticate(conn: &mut Conn, token: &[u8]) -> SaslAuthenticateResponse {
    let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token.to_vec()));
    conn.call(2, request).await
}

/// A connection logged in with PLAIN.
async fn plain_login(strata: &Strata, user: &str, password: &str) -> Conn {
    let mut conn = Conn::connect(strata.kafka).await;
    assert_eq!(handshake(&mut conn, "PLAIN").await.error_code, 0);
    let answer = authenticate(&mut conn, format!("\0{user}\0{password}").as_bytes()).await;
    assert_eq!(answer.error_code, 0, "{answer:?}");
    conn
}

fn mechanisms(response: &SaslHandshakeResponse) -> Vec<String> {
    response.mechanisms.iter().map(|m| m.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_authentication_only_the_handshake_is_served_then_everything_is() {
    let strata = sasl_broker(&[]);
    add_user(&strata, "alice", "SCRAM-SHA-256", "alice-pw").await;

    // Any other request first closes the connection without an answer.
    let mut conn = Conn::connect(strata.kafka).await;
    conn.send(12, MetadataRequest::default()).await;
    conn.expect_closed().await;
    let mut conn = Conn::connect(strata.kafka).await;
    conn.send(2, SaslAuthenticateRequest::default()).await;
    conn.expect_closed().await;

    let mut conn = Conn::connect(strata.kafka).await;
    let versions = conn.call(3, ApiVersionsRequest::default()).await;
    let range = |api: ApiKey| {
        let entry = versions.api_keys.iter().find(|a| a.api_key == api as i16);
        entry.map(|a| (a.min_version, a.max_version))
    };
    assert_eq!(range(ApiKey::SaslHandshake), Some((1, 1)));
    assert_eq!(range(ApiKey::SaslAuthenticate), Some((0, 2)));
    let answer = handshake(&mut conn, "PLAIN").await;
    assert_eq!(answer.error_code, 0);
    assert_eq!(
        mechanisms(&answer),
        ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
    );
    let answer = authenticate(&mut conn, b"\0alice\0alice-pw").await;
    assert_eq!(answer.error_code, 0, "{answer:?}");
    assert_eq!(answer.session_lifetime_ms, 0);
    conn.create_topic("after-login", 1).await;
    let base = conn.produce_ok("after-login", 0, simple_batch(0, 3)).await;
    assert_eq!(base, 0);
    assert_eq!(conn.high_watermark("after-login", 0).await, 3);
    // A second handshake is Kafka's ILLEGAL_SASL_STATE, and the connection carries on.
    assert_eq!(
        handshake(&mut conn, "PLAIN").await.error_code,
        ILLEGAL_SASL_STATE
    );
    assert_eq!(conn.high_watermark("after-login", 0).await, 3);

    // After the handshake only SaslAuthenticate is admitted.
    let mut conn = Conn::connect(strata.kafka).await;
    handshake(&mut conn, "SCRAM-SHA-512").await;
    conn.send(3, ApiVersionsRequest::default()).await;
    conn.expect_closed().await;

    // Before authentication a frame may not be larger than a SASL token needs.
    let mut conn = Conn::connect(strata.kafka).await;
    conn.send_raw(&(1024 * 1024i32).to_be_bytes()).await;
    conn.expect_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_answered_with_kafkas_codes_then_the_connection_closes() {
    let strata = sasl_broker(&[]);
    add_user(&strata, "alice", "SCRAM-SHA-512", "alice-pw").await;
    let cases: [(&str, &[u8], &str); 4] = [
        ("wrong password", b"\0alice\0nope", "invalid credentials"),
        (
            "unknown user",
            b"\0mallory\0alice-pw",
            "invalid credentials",
        ),
        ("two fields", b"alice\0alice-pw", "expected 3 tokens"),
        (
            "another authzid",
            b"bob\0alice\0alice-pw",
            "authorization id",
        ),
    ];
    for (what, token, message) in cases {
        let mut conn = Conn::connect(strata.kafka).await;
        assert_eq!(handshake(&mut conn, "PLAIN").await.error_code, 0);
        let answer = authenticate(&mut conn, token).await;
        assert_eq!(answer.error_code, SASL_AUTHENTICATION_FAILED, "{what}");
        let text = answer.error_message.as_deref().unwrap_or_default();
        assert!(text.contains(message), "{what}: {text}");
        conn.expect_closed().await;
    }
    // SCRAM for an unknown user runs to the proof and fails there, like a wrong password.
    let mut conn = Conn::connect(strata.kafka).await;
    handshake(&mut conn, "SCRAM-SHA-512").await;
    let answer = authenticate(&mut conn, b"n,,n=mallory,r=abcdef").await;
    assert_eq!(answer.error_code, 0, "{answer:?}");
    let server_first = String::from_utf8(answer.auth_bytes.to_vec()).unwrap();
    let nonce = server_first.split(',').next().unwrap();
    assert!(
        nonce.starts_with("r=abcdef") && nonce.len() > 20,
        "{server_first}"
    );
    let proof = "A".repeat(86) + "==";
    let client_final = format!("c=biws,{nonce},p={proof}");
    let answer = authenticate(&mut conn, client_final.as_bytes()).await;
    assert_eq!(answer.error_code, SASL_AUTHENTICATION_FAILED);
    let text = answer.error_message.as_deref().unwrap_or_default();
    assert!(text.contains("invalid credentials"), "{text}");
    conn.expect_closed().await;

    let mut conn = Conn::connect(strata.kafka).await;
    let answer = handshake(&mut conn, "GSSAPI").await;
    assert_eq!(answer.error_code, UNSUPPORTED_SASL_MECHANISM);
    assert_eq!(mechanisms(&answer).len(), 3);
    conn.expect_closed().await;

    // The broker keeps serving the others.
    let mut conn = plain_login(&strata, "alice", "alice-pw").await;
    conn.create_topic("still-serving", 1).await;

    // Only the enabled mechanisms are offered.
    let only_scram = sasl_broker(&["--sasl-enabled-mechanisms", "SCRAM-SHA-512"]);
    let mut conn = Conn::connect(only_scram.kafka).await;
    let answer = handshake(&mut conn, "PLAIN").await;
    assert_eq!(answer.error_code, UNSUPPORTED_SASL_MECHANISM);
    assert_eq!(mechanisms(&answer), ["SCRAM-SHA-512"]);
    conn.expect_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_listener_answers_sasl_requests_illegal_sasl_state() {
    let strata = Strata::start();
    let mut conn = Conn::connect(strata.kafka).await;
    assert_eq!(
        handshake(&mut conn, "PLAIN").await.error_code,
        ILLEGAL_SASL_STATE
    );
    assert_eq!(
        authenticate(&mut conn, b"\0a\0b").await.error_code,
        ILLEGAL_SASL_STATE
    );
    conn.create_topic("open", 1).await;
}

/// Bounds a client operation: rskafka retries some errors without a deadline.
async fn bounded<T>(what: &str, work: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), work)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 20 s"))
}

fn credentials(user: &str, password: &str) -> Credentials {
    Credentials::new(user.to_string(), password.to_string())
}

/// Logs in with rskafka, produces one record to `topic` and reads it back.
async fn round_trip(strata: &Strata, sasl: SaslConfig, topic: &str) {
    let client = bounded(
        "connect",
        ClientBuilder::new(vec![strata.bootstrap()])
            .sasl_config(sasl)
            .build(),
    )
    .await
    .expect("log in");
    let controller = client.controller_client().expect("controller client");
    bounded("create", controller.create_topic(topic, 1, 1, 5_000))
        .await
        .expect("create the topic");
    let partition = bounded(
        "partition client",
        client.partition_client(topic, 0, UnknownTopicHandling::Retry),
    )
    .await
    .expect("partition client");
    let record = Record {
        key: Some(b"k".to_vec()),
        value: Some(topic.as_bytes().to_vec()),
        headers: Default::default(),
        timestamp: rskafka::chrono::DateTime::from_timestamp_millis(1_700_000_000_000).unwrap(),
    };
    bounded(
        "produce",
        partition.produce(vec![record], Compression::NoCompression),
    )
    .await
    .expect("produce");
    let (records, high_watermark) =
        bounded("fetch", partition.fetch_records(0, 1..1_000_000, 1_000))
            .await
            .expect("fetch");
    assert_eq!(high_watermark, 1);
    assert_eq!(records[0].record.value.as_deref(), Some(topic.as_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_client_logs_in_with_every_mechanism_and_users_survive_a_restart() {
    let mut strata = sasl_broker(&[]);
    add_user(&strata, "carol", "SCRAM-SHA-512", "carol-pw").await;
    round_trip(
        &strata,
        SaslConfig::ScramSha512(credentials("carol", "carol-pw")),
        "scram-512",
    )
    .await;
    round_trip(
        &strata,
        SaslConfig::Plain(credentials("carol", "carol-pw")),
        "plain",
    )
    .await;
    // Refusals are on the raw wire above: rskafka retries a failed login without end.

    // The Kafka APIs, as an AdminClient sends them: the client salts the password.
    let mut conn = plain_login(&strata, "carol", "carol-pw").await;
    let mechanism = ScramMechanism::Sha256;
    let salt = b"dave's salt".to_vec();
    let salted = mechanism.salted_password(b"dave-pw", &salt, 4096);
    let upsert = |name: &str, iterations: i32| {
        ScramCredentialUpsertion::default()
            .with_name(str_bytes(name))
            .with_mechanism(mechanism.kafka_type())
            .with_iterations(iterations)
            .with_salt(Bytes::from(salt.clone()))
            .with_salted_password(Bytes::from(salted.clone()))
    };
    let request = AlterUserScramCredentialsRequest::default()
        .with_upsertions(vec![upsert("dave", 4096), upsert("eve", 10)])
        .with_deletions(vec![ScramCredentialDeletion::default()
            .with_name(str_bytes("nobody"))
            .with_mechanism(2)]);
    let answer = conn.call(0, request).await;
    let code = |user: &str| {
        let result = answer.results.iter().find(|r| r.user.as_str() == user);
        result.map(|r| r.error_code)
    };
    assert_eq!(code("dave"), Some(0), "{answer:?}");
    assert_eq!(code("eve"), Some(UNACCEPTABLE_CREDENTIAL), "{answer:?}");
    assert_eq!(code("nobody"), Some(RESOURCE_NOT_FOUND), "{answer:?}");

    let described = conn
        .call(
            0,
            DescribeUserScramCredentialsRequest::default().with_users(None),
        )
        .await;
    let mut seen: Vec<(String, i8, i32)> = described
        .results
        .iter()
        .flat_map(|r| {
            r.credential_infos
                .iter()
                .map(|c| (r.user.to_string(), c.mechanism, c.iterations))
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [("carol".into(), 2, 8192), ("dave".into(), 1, 4096)],
        "{described:?}"
    );
    let described = conn
        .call(
            0,
            DescribeUserScramCredentialsRequest::default()
                .with_users(Some(vec![UserName::default().with_name(str_bytes("eve"))])),
        )
        .await;
    assert_eq!(described.results[0].error_code, RESOURCE_NOT_FOUND);

    round_trip(
        &strata,
        SaslConfig::ScramSha256(credentials("dave", "dave-pw")),
        "scram-256",
    )
    .await;

    // Users are durable: after a restart both still log in; no password is on disk.
    strata.restart();
    round_trip(
        &strata,
        SaslConfig::ScramSha512(credentials("carol", "carol-pw")),
        "after-restart-512",
    )
    .await;
    round_trip(
        &strata,
        SaslConfig::Plain(credentials("dave", "dave-pw")),
        "after-restart-plain",
    )
    .await;
    let metadata = std::fs::read_to_string(strata.data_dir().join("meta/metadata.json")).unwrap();
    assert!(metadata.contains("SCRAM-SHA-512"));
    for password in ["carol-pw", "dave-pw"] {
        assert!(!metadata.contains(password));
        assert!(!strata.log().contains(password), "{password} in the log");
    }
}
