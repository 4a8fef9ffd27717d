//! ApiVersions: the APIs and versions this broker serves, straight from the dispatch table.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, ResponseKind};

use crate::server::dispatch;

pub fn handle(_version: i16, _request: ApiVersionsRequest) -> ApiVersionsResponse {
    response(0)
}

/// The answer to an ApiVersions at a version this broker does not know (sent at v0).
pub fn unsupported_version() -> ResponseKind {
    ResponseKind::ApiVersions(response(ResponseError::UnsupportedVersion.code()))
}

fn response(error_code: i16) -> ApiVersionsResponse {
    let api_keys = dispatch::APIS
        .iter()
        .filter_map(|&api| {
            let versions = dispatch::versions(api)?;
            Some(
                ApiVersion::default()
                    .with_api_key(api as i16)
                    .with_min_version(versions.min)
                    .with_max_version(versions.max),
            )
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(api_keys)
}
