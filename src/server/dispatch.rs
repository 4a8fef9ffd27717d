//! The dispatch table: which Kafka APIs this broker serves, at which versions, and the handler
//! for each. ApiVersions is answered from this table, so nothing is advertised that has no
//! handler here. SaslHandshake and SaslAuthenticate are listed here but answered by
//! `server::auth`, which holds the connection's authentication state.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest, SaslAuthenticateRequest,
    SaslHandshakeRequest,
};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind};
use kafka_protocol::messages::{
    ApiVersionsRequest, CreatePartitionsRequest, CreateTopicsRequest, DeleteRecordsRequest,
    DeleteTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest, FetchRequest,
    IncrementalAlterConfigsRequest, InitProducerIdRequest, ListOffsetsRequest, MetadataRequest,
    OffsetForLeaderEpochRequest, ProduceRequest,
};
use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest, HeartbeatRequest,
    JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest,
    OffsetDeleteRequest, OffsetFetchRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::{Message, Request, VersionRange};

use super::ServerError;
use crate::api;
use crate::broker::Broker;
use crate::protocol;

/// What a handler gives back to the connection.
pub enum Reply {
    Ready(Box<ResponseKind>),
    /// Work that finishes later (a produce waiting for fsync, a fetch waiting for data); the
    /// connection keeps reading meanwhile and still writes responses in request order.
    Deferred(Pin<Box<dyn Future<Output = ResponseKind> + Send>>),
    /// No response at all (produce with acks=0).
    None,
}

impl Reply {
    pub fn ready(body: ResponseKind) -> Reply {
        Reply::Ready(Box::new(body))
    }
}

/// Every API served, each at every version `kafka-protocol` encodes for it.
pub const APIS: &[ApiKey] = &[
    ApiKey::Produce,
    ApiKey::Fetch,
    ApiKey::ListOffsets,
    ApiKey::Metadata,
    ApiKey::ApiVersions,
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
    ApiKey::InitProducerId,
    ApiKey::OffsetForLeaderEpoch,
    ApiKey::DescribeConfigs,
    ApiKey::CreatePartitions,
    ApiKey::DescribeCluster,
    ApiKey::DeleteRecords,
    ApiKey::IncrementalAlterConfigs,
    ApiKey::FindCoordinator,
    ApiKey::JoinGroup,
    ApiKey::SyncGroup,
    ApiKey::Heartbeat,
    ApiKey::LeaveGroup,
    ApiKey::OffsetCommit,
    ApiKey::OffsetFetch,
    ApiKey::ListGroups,
    ApiKey::DescribeGroups,
    ApiKey::DeleteGroups,
    ApiKey::OffsetDelete,
    ApiKey::SaslHandshake,
    ApiKey::SaslAuthenticate,
    ApiKey::DescribeUserScramCredentials,
    ApiKey::AlterUserScramCredentials,
];

/// The versions of `api` this broker serves, or `None` if it does not serve it: those the
/// crate can decode the request and encode the response at (an `ApiKey`'s own range can be
/// wider than its message types', as InitProducerId v6 is in kafka-protocol 0.18).
pub fn versions(api: ApiKey) -> Option<VersionRange> {
    let codable = match api {
        ApiKey::Produce => codable::<ProduceRequest>(),
        ApiKey::Fetch => codable::<FetchRequest>(),
        ApiKey::ListOffsets => codable::<ListOffsetsRequest>(),
        ApiKey::Metadata => codable::<MetadataRequest>(),
        ApiKey::ApiVersions => codable::<ApiVersionsRequest>(),
        ApiKey::CreateTopics => codable::<CreateTopicsRequest>(),
        ApiKey::DeleteTopics => codable::<DeleteTopicsRequest>(),
        ApiKey::InitProducerId => codable::<InitProducerIdRequest>(),
        ApiKey::OffsetForLeaderEpoch => codable::<OffsetForLeaderEpochRequest>(),
        ApiKey::DescribeConfigs => codable::<DescribeConfigsRequest>(),
        ApiKey::CreatePartitions => codable::<CreatePartitionsRequest>(),
        ApiKey::DescribeCluster => codable::<DescribeClusterRequest>(),
        ApiKey::DeleteRecords => codable::<DeleteRecordsRequest>(),
        ApiKey::IncrementalAlterConfigs => codable::<IncrementalAlterConfigsRequest>(),
        ApiKey::FindCoordinator => codable::<FindCoordinatorRequest>(),
        ApiKey::JoinGroup => codable::<JoinGroupRequest>(),
        ApiKey::SyncGroup => codable::<SyncGroupRequest>(),
        ApiKey::Heartbeat => codable::<HeartbeatRequest>(),
        ApiKey::LeaveGroup => codable::<LeaveGroupRequest>(),
        ApiKey::OffsetCommit => codable::<OffsetCommitRequest>(),
        ApiKey::OffsetFetch => codable::<OffsetFetchRequest>(),
        ApiKey::ListGroups => codable::<ListGroupsRequest>(),
        ApiKey::DescribeGroups => codable::<DescribeGroupsRequest>(),
        ApiKey::DeleteGroups => codable::<DeleteGroupsRequest>(),
        ApiKey::OffsetDelete => codable::<OffsetDeleteRequest>(),
        // v0 is followed by raw SASL tokens outside Kafka's framing; clients use v1.
        ApiKey::SaslHandshake => codable::<SaslHandshakeRequest>().intersect(&SASL_HANDSHAKE_V1),
        ApiKey::SaslAuthenticate => codable::<SaslAuthenticateRequest>(),
        ApiKey::DescribeUserScramCredentials => codable::<DescribeUserScramCredentialsRequest>(),
        ApiKey::AlterUserScramCredentials => codable::<AlterUserScramCredentialsRequest>(),
        _ => return None,
    };
    Some(codable.intersect(&api.valid_versions()))
}

const SASL_HANDSHAKE_V1: VersionRange = VersionRange { min: 1, max: 1 };

/// A request of a served api at a served version, decoded.
#[derive(Debug)]
pub struct DecodedRequest {
    pub api: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    pub body: RequestKind,
}

/// A request frame checked against the dispatch table and decoded.
#[derive(Debug)]
pub enum Parsed {
    Request(Box<DecodedRequest>),
    /// ApiVersions at a version this broker does not serve. Kafka answers it at v0 with the
    /// versions it has (and UNSUPPORTED_VERSION), so the client can pick one and ask again.
    UnsupportedApiVersions {
        correlation_id: i32,
    },
}

/// Checks a request frame (without its length prefix) against the dispatch table, then decodes
/// its header and body. An unknown api, an api outside the table, an unsupported version of
/// any api but ApiVersions, or bytes that do not decode are errors: the connection closes.
pub fn parse_request(frame: Bytes) -> Result<Parsed, ServerError> {
    let (key, version) = protocol::peek_api(&frame)?;
    let api = ApiKey::try_from(key).map_err(|_| protocol::ProtocolError::UnknownApiKey(key))?;
    let supported = versions(api).ok_or(ServerError::NotImplemented(api))?;
    if version < supported.min || version > supported.max {
        if api == ApiKey::ApiVersions {
            let correlation_id = protocol::peek_correlation_id(&frame).unwrap_or(0);
            return Ok(Parsed::UnsupportedApiVersions { correlation_id });
        }
        return Err(ServerError::UnsupportedVersion {
            api,
            version,
            supported,
        });
    }
    let (header, body) = protocol::decode_request(api, version, frame)?;
    Ok(Parsed::Request(Box::new(DecodedRequest {
        api,
        version,
        header,
        body,
    })))
}

fn codable<R: Request>() -> VersionRange {
    R::VERSIONS.intersect(&<R::Response as Message>::VERSIONS)
}

pub async fn dispatch(
    broker: &Arc<Broker>,
    header: RequestHeader,
    body: RequestKind,
    peer: SocketAddr,
) -> Result<Reply, ServerError> {
    let version = header.request_api_version;
    let reply = match body {
        RequestKind::Produce(request) => api::produce::handle(broker, version, request).await,
        RequestKind::Fetch(request) => Reply::Deferred(Box::pin(api::fetch::handle(
            broker.clone(),
            version,
            request,
        ))),
        RequestKind::ListOffsets(request) => Reply::ready(ResponseKind::ListOffsets(
            api::list_offsets::handle(broker, version, request).await,
        )),
        RequestKind::Metadata(request) => Reply::ready(ResponseKind::Metadata(
            api::metadata::handle(broker, version, request),
        )),
        RequestKind::ApiVersions(request) => Reply::ready(ResponseKind::ApiVersions(
            api::api_versions::handle(version, request),
        )),
        RequestKind::CreateTopics(request) => Reply::ready(ResponseKind::CreateTopics(
            api::create_topics::handle(broker, version, request),
        )),
        RequestKind::DeleteTopics(request) => Reply::ready(ResponseKind::DeleteTopics(
            api::delete_topics::handle(broker, version, request),
        )),
        RequestKind::InitProducerId(request) => Reply::ready(ResponseKind::InitProducerId(
            api::init_producer_id::handle(broker, request),
        )),
        RequestKind::OffsetForLeaderEpoch(request) => {
            Reply::ready(ResponseKind::OffsetForLeaderEpoch(
                api::offset_for_leader_epoch::handle(broker, request),
            ))
        }
        RequestKind::DescribeConfigs(request) => Reply::ready(ResponseKind::DescribeConfigs(
            api::describe_configs::handle(broker, version, request),
        )),
        RequestKind::CreatePartitions(request) => Reply::ready(ResponseKind::CreatePartitions(
            api::create_partitions::handle(broker, request),
        )),
        RequestKind::DescribeCluster(request) => Reply::ready(ResponseKind::DescribeCluster(
            api::describe_cluster::handle(broker, request),
        )),
        RequestKind::DeleteRecords(request) => Reply::ready(ResponseKind::DeleteRecords(
            api::delete_records::handle(broker, request),
        )),
        RequestKind::IncrementalAlterConfigs(request) => {
            Reply::ready(ResponseKind::IncrementalAlterConfigs(
                api::incremental_alter_configs::handle(broker, request),
            ))
        }
        RequestKind::FindCoordinator(request) => Reply::ready(ResponseKind::FindCoordinator(
            api::find_coordinator::handle(broker, version, request),
        )),
        RequestKind::JoinGroup(request) => {
            let client_id = header
                .client_id
                .map(|id| id.to_string())
                .unwrap_or_default();
            let client_host = format!("/{}", peer.ip());
            api::join_group::handle(broker, version, request, client_id, client_host)
        }
        RequestKind::SyncGroup(request) => api::sync_group::handle(broker, version, request),
        RequestKind::Heartbeat(request) => Reply::ready(ResponseKind::Heartbeat(
            api::heartbeat::handle(broker, request),
        )),
        RequestKind::LeaveGroup(request) => Reply::ready(ResponseKind::LeaveGroup(
            api::leave_group::handle(broker, version, request),
        )),
        RequestKind::OffsetCommit(request) => api::offset_commit::handle(broker, version, request),
        RequestKind::OffsetFetch(request) => Reply::ready(ResponseKind::OffsetFetch(
            api::offset_fetch::handle(broker, version, request),
        )),
        RequestKind::ListGroups(request) => Reply::ready(ResponseKind::ListGroups(
            api::list_groups::handle(broker, version, request),
        )),
        RequestKind::DescribeGroups(request) => Reply::ready(ResponseKind::DescribeGroups(
            api::describe_groups::handle(broker, version, request),
        )),
        RequestKind::DeleteGroups(request) => api::delete_groups::handle(broker, request),
        RequestKind::OffsetDelete(request) => api::offset_delete::handle(broker, request),
        RequestKind::DescribeUserScramCredentials(request) => {
            Reply::ready(ResponseKind::DescribeUserScramCredentials(
                api::describe_user_scram_credentials::handle(broker, request),
            ))
        }
        RequestKind::AlterUserScramCredentials(request) => {
            Reply::ready(ResponseKind::AlterUserScramCredentials(
                api::alter_user_scram_credentials::handle(broker, request),
            ))
        }
        other => {
            let api = ApiKey::try_from(header.request_api_key).unwrap_or(ApiKey::ApiVersions);
            tracing::warn!(
                ?api,
                "request for an api outside the dispatch table: {:?}",
                std::mem::discriminant(&other)
            );
            return Err(ServerError::NotImplemented(api));
        }
    };
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_api_has_versions_and_nothing_else_does() {
        for api in APIS {
            let range = versions(*api).unwrap();
            assert!(!range.is_empty(), "{api:?}");
        }
        assert_eq!(
            versions(ApiKey::InitProducerId).unwrap().max,
            5,
            "the request type stops at v5"
        );
        assert_eq!(
            versions(ApiKey::SaslHandshake).unwrap(),
            SASL_HANDSHAKE_V1,
            "v0's raw tokens are not served"
        );
        assert!(versions(ApiKey::CreateAcls).is_none());
    }
}
