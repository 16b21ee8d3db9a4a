//! gRPC: serving any [`Store`] as `thanos.Store` + `thanos.info.Info`, and [`GrpcStore`], the
//! client side that makes a remote StoreAPI endpoint a [`Store`].
//!
//! Both directions carry the Thanos wire messages unchanged, so chunks are never re-encoded on
//! the way through. Neither side trusts the peer's message sizes beyond the configured limit.

mod client;

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use gauntlet_proto::thanos::info::info_server::{Info, InfoServer};
use gauntlet_proto::thanos::info::{InfoRequest, InfoResponse};
use gauntlet_proto::thanos::store_server::StoreServer;
use gauntlet_proto::thanos::{
    LabelNamesRequest, LabelNamesResponse, LabelValuesRequest, LabelValuesResponse, SeriesRequest,
    SeriesResponse,
};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

pub use client::GrpcStore;

use crate::query::store::Store;
use crate::shutdown::Shutdown;

/// Largest gRPC message accepted in either direction (one series frame, one label response).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Adapts a [`Store`] to the generated `thanos.Store` and `thanos.info.Info` services.
#[derive(Clone)]
pub struct StoreService {
    store: Arc<dyn Store>,
}

impl StoreService {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

type GrpcSeriesStream = Pin<Box<dyn Stream<Item = Result<SeriesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl gauntlet_proto::thanos::store_server::Store for StoreService {
    type SeriesStream = GrpcSeriesStream;

    async fn series(
        &self,
        request: Request<SeriesRequest>,
    ) -> Result<Response<Self::SeriesStream>, Status> {
        let frames = self.store.series(request.into_inner()).await?;
        Ok(Response::new(Box::pin(
            frames.map(|frame| frame.map_err(Status::from)),
        )))
    }

    async fn label_names(
        &self,
        request: Request<LabelNamesRequest>,
    ) -> Result<Response<LabelNamesResponse>, Status> {
        Ok(Response::new(
            self.store.label_names(request.into_inner()).await?,
        ))
    }

    async fn label_values(
        &self,
        request: Request<LabelValuesRequest>,
    ) -> Result<Response<LabelValuesResponse>, Status> {
        Ok(Response::new(
            self.store.label_values(request.into_inner()).await?,
        ))
    }
}

#[tonic::async_trait]
impl Info for StoreService {
    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        Ok(Response::new(self.store.info().await?))
    }
}

/// Serves `store` on `listener` until `shutdown` is requested; in-flight calls finish first.
pub async fn serve(
    listener: TcpListener,
    store: Arc<dyn Store>,
    shutdown: Shutdown,
) -> Result<(), tonic::transport::Error> {
    let service = StoreService::new(store);
    // Without TCP_NODELAY, the frames of a streamed answer wait on delayed ACKs (about 40 ms
    // a call); tonic ignores its own setting for a caller-provided listener.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(
            StoreServer::new(service.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            InfoServer::new(service)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(incoming, shutdown.requested())
        .await
}
