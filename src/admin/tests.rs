//! Tests of the router itself (no broker): routing, auth, errors, and that the OpenAPI document
//! and the router agree. Handlers with a broker are tested against the real binary
//! (`tests/e2e/test_search.py`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use tower::ServiceExt;

use super::*;

fn state(token: Option<&str>) -> AdminState {
    AdminState {
        ready: Arc::new(AtomicBool::new(false)),
        broker: None,
        users: None,
        token: token.map(Arc::from),
        faults: None,
    }
}

async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
) -> (StatusCode, String) {
    send(
        app,
        request(method, uri, token).body(Body::empty()).unwrap(),
    )
    .await
}

fn request(method: Method, uri: &str, token: Option<&str>) -> axum::http::request::Builder {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    request
}

/// A request with a JSON body.
fn json(method: Method, uri: &str, token: Option<&str>, body: &str) -> Request<Body> {
    request(method, uri, token)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, String) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn ready_follows_the_flag_and_unknown_routes_are_json_404() {
    let state = state(None);
    let app = router(state.clone());
    assert_eq!(call(&app, Method::GET, "/health/ready", None).await.0, 503);
    state.ready.store(true, Ordering::Release);
    assert_eq!(call(&app, Method::GET, "/health/ready", None).await.0, 200);
    assert_eq!(call(&app, Method::GET, "/health/live", None).await.0, 200);
    let (status, body) = call(&app, Method::GET, "/nope", None).await;
    assert_eq!(status, 404);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "no such route");
}

#[tokio::test]
async fn with_a_token_every_v1_route_needs_it_and_health_does_not() {
    let app = router(state(Some("s3cret")));
    for token in [None, Some("wrong"), Some("s3cre"), Some("s3cret-and-more")] {
        let (status, body) = call(&app, Method::GET, "/v1/topics", token).await;
        assert_eq!(status, 401, "{token:?}");
        assert!(body.contains("\"error\""), "{body}");
    }
    // The right token passes auth (no broker here: 503, not 401).
    assert_eq!(
        call(&app, Method::GET, "/v1/topics", Some("s3cret"))
            .await
            .0,
        503
    );
    assert_eq!(
        call(&app, Method::GET, "/v1/openapi.json", Some("s3cret"))
            .await
            .0,
        200
    );
    assert_eq!(call(&app, Method::GET, "/health/live", None).await.0, 200);
}

/// Every operation in the document is served by the router (not the fallback), and every
/// route the issue asks for is in the document.
#[tokio::test]
async fn the_openapi_document_and_the_router_agree() {
    let (app, doc) = router_and_openapi(state(None));
    let (status, served) = call(&app, Method::GET, "/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    let served: serde_json::Value = serde_json::from_str(&served).unwrap();
    assert_eq!(served["openapi"].as_str().map(|v| &v[..2]), Some("3."));
    let paths = served["paths"].as_object().unwrap();
    assert_eq!(paths.len(), doc.paths.paths.len());
    let mut operations = Vec::new();
    let mut operation_ids = std::collections::BTreeSet::new();
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            operations.push((method.to_uppercase(), path.clone()));
            let id = operation["operationId"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(
                operation_ids.insert(id.clone()),
                "operation id {id} is not unique"
            );
        }
    }
    for (method, path) in &operations {
        let uri = path.replace("{topic}", "t");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let (status, body) = call(&app, method.clone(), &uri, None).await;
        assert!(
            !body.contains("no such route") && status != 405,
            "{method} {path} is documented but not served: {status} {body}"
        );
    }
    let expected = [
        ("GET", "/health/live"),
        ("GET", "/health/ready"),
        ("GET", "/metrics"),
        ("GET", "/v1/cluster"),
        ("GET", "/v1/topics"),
        ("POST", "/v1/topics"),
        ("GET", "/v1/topics/{topic}"),
        ("DELETE", "/v1/topics/{topic}"),
        ("PATCH", "/v1/topics/{topic}/configs"),
        ("GET", "/v1/topics/{topic}/partitions"),
        ("GET", "/v1/segments"),
        ("POST", "/v1/indexer/run"),
        ("GET", "/v1/search"),
        ("POST", "/v1/search"),
        ("GET", "/v1/groups"),
        ("GET", "/v1/groups/{group}"),
        ("GET", "/v1/openapi.json"),
        ("GET", "/v1/users"),
        ("PUT", "/v1/users/{name}"),
        ("DELETE", "/v1/users/{name}"),
    ];
    for (method, path) in expected {
        assert!(
            operations.contains(&(method.to_string(), path.to_string())),
            "{method} {path} missing from the document"
        );
    }
    // A /v1 path not in the document is not served.
    assert_eq!(call(&app, Method::GET, "/v1/nothing", None).await.0, 404);
}

#[tokio::test]
async fn bad_bodies_and_queries_are_400_with_json() {
    let app = router(state(None));
    let request = Request::post("/v1/search")
        .header("content-type", "application/json")
        .body(Body::from("{not json"))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 400);
    let (status, body) = call(&app, Method::GET, "/v1/search?topic=t&limit=x", None).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"error\""), "{body}");
}

async fn call_json(
    app: &Router,
    method: Method,
    uri: &str,
    body: &str,
) -> (StatusCode, serde_json::Value, String) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    (status, json, text)
}

/// The user routes on a real user store (a metadata directory), without a broker.
#[tokio::test]
async fn users_are_created_listed_and_deleted_and_passwords_never_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let metadata = Arc::new(crate::metadata::Metadata::open(dir.path()).unwrap());
    let users = Users::new(metadata);
    let mut state = state(None);
    state.users = Some(users.clone());
    let app = router(state);

    let put = r#"{"mechanism": "SCRAM-SHA-512", "password": "alice-secret-1"}"#;
    let (status, body, text) = call_json(&app, Method::PUT, "/v1/users/alice", put).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(body["name"], "alice");
    assert_eq!(body["credentials"][0]["mechanism"], "SCRAM-SHA-512");
    assert_eq!(body["credentials"][0]["iterations"], 8192);
    assert!(!text.contains("alice-secret-1"), "{text}");
    let put = r#"{"mechanism": "SCRAM-SHA-256", "password": "alice-secret-1", "iterations": 4096}"#;
    let (status, body, _) = call_json(&app, Method::PUT, "/v1/users/alice", put).await;
    assert_eq!(status, 200);
    assert_eq!(body["credentials"].as_array().unwrap().len(), 2);
    assert!(users.verify_password("alice", "alice-secret-1"));

    let (status, body, text) = call_json(&app, Method::GET, "/v1/users", "").await;
    assert_eq!(status, 200);
    assert_eq!(body.as_array().unwrap().len(), 1, "{text}");
    assert!(
        !text.contains("alice-secret-1") && !text.contains("salt"),
        "{text}"
    );

    let bad = [
        r#"{"mechanism": "PLAIN", "password": "x"}"#,
        r#"{"mechanism": "SCRAM-SHA-512", "password": ""}"#,
        r#"{"mechanism": "SCRAM-SHA-512", "password": "x", "iterations": 100}"#,
        r#"{"mechanism": "SCRAM-SHA-512", "password": "x", "iterations": 100000}"#,
        r#"{"mechanism": "SCRAM-SHA-512", "password": "x", "salt": "y"}"#,
        r#"{"mechanism": "SCRAM-SHA-512"}"#,
        r#"{not json"#,
    ];
    for body in bad {
        let (status, json, text) = call_json(&app, Method::PUT, "/v1/users/bob", body).await;
        assert_eq!(status, 400, "{body}: {text}");
        assert!(json["error"].is_string(), "{text}");
    }
    let long_name = format!("/v1/users/{}", "x".repeat(300));
    let put = r#"{"mechanism": "SCRAM-SHA-512", "password": "x"}"#;
    assert_eq!(call_json(&app, Method::PUT, &long_name, put).await.0, 400);

    let (status, _, _) = call_json(&app, Method::DELETE, "/v1/users/bob", "").await;
    assert_eq!(status, 404);
    // The first deletion of a mechanism removes it; the second finds nothing.
    for expected in [204, 404] {
        let uri = "/v1/users/alice?mechanism=SCRAM-SHA-256";
        let (status, _, _) = call_json(&app, Method::DELETE, uri, "").await;
        assert_eq!(status, expected);
    }
    let (status, _, _) = call_json(&app, Method::DELETE, "/v1/users/alice?mechanism=MD5", "").await;
    assert_eq!(status, 400);
    let (status, _, _) = call_json(&app, Method::DELETE, "/v1/users/alice", "").await;
    assert_eq!(status, 204);
    let (_, body, _) = call_json(&app, Method::GET, "/v1/users", "").await;
    assert_eq!(body, serde_json::json!([]));
    assert!(!users.verify_password("alice", "alice-secret-1"));
}

#[tokio::test]
async fn the_user_routes_need_the_token() {
    let app = router(state(Some("s3cret")));
    for (method, uri) in [
        (Method::GET, "/v1/users"),
        (Method::PUT, "/v1/users/alice"),
        (Method::DELETE, "/v1/users/alice"),
    ] {
        assert_eq!(call(&app, method, uri, None).await.0, 401);
    }
}

/// `/v1/faults` exists only with fault injection on; there it sets, lists and clears faults and
/// answers bad input with a JSON 4xx.
#[tokio::test]
async fn fault_routes_only_with_fault_injection() {
    let app = router(state(None));
    let (status, _) = call(&app, Method::GET, "/v1/faults", None).await;
    assert_eq!(status, 404);
    let (_, doc) = router_and_openapi(state(None));
    assert!(!doc.paths.paths.keys().any(|p| p.contains("faults")));

    let faults = crate::faults::Faults::enabled();
    let with = AdminState {
        faults: Some(faults.clone()),
        ..state(Some("t"))
    };
    let (app, doc) = router_and_openapi(with);
    assert!(doc.paths.paths.contains_key("/v1/faults/{point}"));
    let served = serde_json::to_value(&doc).unwrap();
    let ids: Vec<&str> = served["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .filter_map(|operation| operation["operationId"].as_str())
        .collect();
    let unique: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "operation ids are unique: {ids:?}");
    let (status, _) = call(&app, Method::GET, "/v1/faults", None).await;
    assert_eq!(status, 401, "the token guards the fault routes too");

    let put = |uri: &str, body: &str| send(&app, json(Method::PUT, uri, Some("t"), body));
    let (status, body) = put(
        "/v1/faults/wal.fsync",
        r#"{"action":"error","errno":"EIO"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("wal.fsync"), "{body}");
    assert!(faults.hit(crate::faults::Point::WalFsync).is_some());
    let (status, body) = put("/v1/faults/disk.melt", r#"{"action":"crash"}"#).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    let (status, body) = put("/v1/faults/wal.write", r#"{"action":"explode"}"#).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    let (status, body) = call(&app, Method::DELETE, "/v1/faults", Some("t")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "{}"));
    assert!(faults.hit(crate::faults::Point::WalFsync).is_none());

    let unguarded = router(AdminState {
        faults: Some(faults.clone()),
        ..state(None)
    });
    let delay = r#"{"action":"delay","ms":5}"#;
    let uri = "/v1/faults/object_store.get";
    let (status, body) = send(&unguarded, json(Method::PUT, uri, None, delay)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(&unguarded, Method::DELETE, uri, None).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "{}"));
}
