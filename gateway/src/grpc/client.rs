//! [`GrpcStore`]: a remote StoreAPI endpoint (Thanos sidecar, store gateway, receiver, ruler,
//! querier, or another gauntlet) as a [`Store`].
//!
//! The connection is made lazily and re-established by tonic, so an endpoint that is down at
//! start is not fatal: calls fail with `Unavailable` until it comes back.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use gauntlet_proto::thanos::info::InfoRequest;
use gauntlet_proto::thanos::info::InfoResponse;
use gauntlet_proto::thanos::info::info_client::InfoClient;
use gauntlet_proto::thanos::store_client::StoreClient;
use gauntlet_proto::thanos::{
    LabelNamesRequest, LabelNamesResponse, LabelValuesRequest, LabelValuesResponse, SeriesRequest,
};
use tonic::transport::{Channel, Endpoint};

use super::MAX_MESSAGE_BYTES;
use crate::query::store::{SeriesStream, Store, StoreError};

/// A StoreAPI endpoint reached over gRPC.
#[derive(Clone)]
pub struct GrpcStore {
    address: String,
    store: StoreClient<Channel>,
    info: InfoClient<Channel>,
}

impl GrpcStore {
    /// A client for `address` (`host:port`, or a full `http://host:port` URI). Nothing is
    /// dialled until the first call.
    pub fn connect_lazy(address: &str) -> Result<Self, StoreError> {
        let uri = if address.contains("://") {
            address.to_owned()
        } else {
            format!("http://{address}")
        };
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|error| StoreError::InvalidArgument(format!("endpoint {address:?}: {error}")))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        let channel = endpoint.connect_lazy();
        Ok(Self {
            address: address.to_owned(),
            store: StoreClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            info: InfoClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        })
    }

    /// The address this store was created with.
    pub fn address(&self) -> &str {
        &self.address
    }
}

#[async_trait]
impl Store for GrpcStore {
    async fn info(&self) -> Result<InfoResponse, StoreError> {
        Ok(self.info.clone().info(InfoRequest {}).await?.into_inner())
    }

    async fn series(&self, request: SeriesRequest) -> Result<SeriesStream, StoreError> {
        let frames = self.store.clone().series(request).await?.into_inner();
        Ok(Box::pin(
            frames.map(|frame| frame.map_err(StoreError::from)),
        ))
    }

    async fn label_names(
        &self,
        request: LabelNamesRequest,
    ) -> Result<LabelNamesResponse, StoreError> {
        Ok(self.store.clone().label_names(request).await?.into_inner())
    }

    async fn label_values(
        &self,
        request: LabelValuesRequest,
    ) -> Result<LabelValuesResponse, StoreError> {
        Ok(self.store.clone().label_values(request).await?.into_inner())
    }
}
