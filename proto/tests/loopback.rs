//! Loopback test of the generated gRPC code: a `thanos.Store` + `thanos.info.Info` server over
//! in-memory series, bound to 127.0.0.1, queried with the generated clients.

mod support;

use std::pin::Pin;

use futures::{Stream, StreamExt};
use gauntlet_proto::thanos::info::info_client::InfoClient;
use gauntlet_proto::thanos::info::info_server::{Info, InfoServer};
use gauntlet_proto::thanos::info::{InfoRequest, InfoResponse, StoreInfo};
use gauntlet_proto::thanos::label_matcher::Type as MatchType;
use gauntlet_proto::thanos::series_response::Result as Frame;
use gauntlet_proto::thanos::store_client::StoreClient;
use gauntlet_proto::thanos::store_server::{Store, StoreServer};
use gauntlet_proto::thanos::{
    AggrChunk, Chunk, Label, LabelMatcher, LabelNamesRequest, LabelNamesResponse,
    LabelValuesRequest, LabelValuesResponse, Series, SeriesRequest, SeriesResponse, ZLabelSet,
    chunk::Encoding,
};
use regex::Regex;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const WARNING: &str = "test store: one block could not be read";

fn label(name: &str, value: &str) -> Label {
    Label {
        name: name.into(),
        value: value.into(),
    }
}

fn labels(pairs: &[(&str, &str)]) -> Vec<Label> {
    pairs.iter().map(|(n, v)| label(n, v)).collect()
}

/// A series with one XOR chunk of `samples`.
fn series(pairs: &[(&str, &str)], samples: &[(i64, f64)]) -> Series {
    let raw = Chunk {
        r#type: Encoding::Xor.into(),
        data: support::encode_xor(samples).into(),
        hash: 0,
    };
    let chunk = AggrChunk {
        min_time: samples[0].0,
        max_time: samples[samples.len() - 1].0,
        raw: Some(raw),
        ..Default::default()
    };
    Series {
        labels: labels(pairs),
        chunks: vec![chunk],
    }
}

/// Three series sorted by labels, samples every 15 s from t = 1000 s.
fn test_series() -> Vec<Series> {
    let ramp: Vec<(i64, f64)> = (0..10)
        .map(|i| (1_000_000 + i * 15_000, i as f64))
        .collect();
    let jitter = [
        (1_000_000, 0.5),
        (1_015_000, 0.25),
        (1_030_007, 1e9),
        (1_044_990, -3.75),
    ];
    let flat: Vec<(i64, f64)> = (0..5).map(|i| (1_000_000 + i * 15_000, 42.0)).collect();
    vec![
        series(
            &[("__name__", "up"), ("instance", "a:9090"), ("job", "api")],
            &ramp,
        ),
        series(
            &[("__name__", "up"), ("instance", "b:9090"), ("job", "api")],
            &jitter,
        ),
        series(
            &[("__name__", "up"), ("instance", "c:9100"), ("job", "node")],
            &flat,
        ),
    ]
}

/// A matcher compiled for the in-memory filter.
enum Matcher {
    Eq(String, String),
    Neq(String, String),
    Re(String, Regex),
    Nre(String, Regex),
}

impl Matcher {
    fn compile(m: &LabelMatcher) -> Result<Self, Status> {
        let regex = || {
            Regex::new(&format!("^(?:{})$", m.value))
                .map_err(|e| Status::invalid_argument(e.to_string()))
        };
        let name = m.name.clone();
        Ok(match m.r#type() {
            MatchType::Eq => Self::Eq(name, m.value.clone()),
            MatchType::Neq => Self::Neq(name, m.value.clone()),
            MatchType::Re => Self::Re(name, regex()?),
            MatchType::Nre => Self::Nre(name, regex()?),
        })
    }

    /// A missing label matches as the empty string, as in Prometheus.
    fn matches(&self, labels: &[Label]) -> bool {
        let value = |name: &str| {
            labels
                .iter()
                .find(|l| l.name == name)
                .map_or("", |l| l.value.as_str())
        };
        match self {
            Self::Eq(n, v) => value(n) == v,
            Self::Neq(n, v) => value(n) != v,
            Self::Re(n, r) => r.is_match(value(n)),
            Self::Nre(n, r) => !r.is_match(value(n)),
        }
    }
}

/// The in-memory store served over gRPC.
struct TestStore {
    series: Vec<Series>,
}

impl TestStore {
    fn select(&self, matchers: &[LabelMatcher]) -> Result<Vec<&Series>, Status> {
        let matchers = matchers
            .iter()
            .map(Matcher::compile)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self
            .series
            .iter()
            .filter(|s| matchers.iter().all(|m| m.matches(&s.labels)))
            .collect())
    }
}

#[tonic::async_trait]
impl Store for TestStore {
    type SeriesStream = Pin<Box<dyn Stream<Item = Result<SeriesResponse, Status>> + Send>>;

    /// Answers every matching series, with a warning frame after the first one.
    async fn series(
        &self,
        request: Request<SeriesRequest>,
    ) -> Result<Response<Self::SeriesStream>, Status> {
        let req = request.into_inner();
        let mut frames = Vec::new();
        for s in self.select(&req.matchers)? {
            let mut s = s.clone();
            s.chunks
                .retain(|c| c.max_time >= req.min_time && c.min_time <= req.max_time);
            if req.skip_chunks {
                s.chunks.clear();
            }
            frames.push(Ok(SeriesResponse {
                result: Some(Frame::Series(s)),
            }));
            if frames.len() == 1 {
                frames.push(Ok(SeriesResponse {
                    result: Some(Frame::Warning(WARNING.into())),
                }));
            }
        }
        Ok(Response::new(Box::pin(futures::stream::iter(frames))))
    }

    async fn label_names(
        &self,
        request: Request<LabelNamesRequest>,
    ) -> Result<Response<LabelNamesResponse>, Status> {
        let selected = self.select(&request.get_ref().matchers)?;
        let mut names: Vec<String> = selected
            .iter()
            .flat_map(|s| s.labels.iter().map(|l| l.name.clone()))
            .collect();
        names.sort();
        names.dedup();
        Ok(Response::new(LabelNamesResponse {
            names,
            ..Default::default()
        }))
    }

    async fn label_values(
        &self,
        request: Request<LabelValuesRequest>,
    ) -> Result<Response<LabelValuesResponse>, Status> {
        let req = request.get_ref();
        let mut values: Vec<String> = self
            .select(&req.matchers)?
            .iter()
            .flat_map(|s| s.labels.iter().filter(|l| l.name == req.label))
            .map(|l| l.value.clone())
            .collect();
        values.sort();
        values.dedup();
        Ok(Response::new(LabelValuesResponse {
            values,
            ..Default::default()
        }))
    }
}

#[tonic::async_trait]
impl Info for TestStore {
    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let times = self.series.iter().flat_map(|s| &s.chunks);
        let min_time = times.clone().map(|c| c.min_time).min().unwrap_or_default();
        let max_time = times.map(|c| c.max_time).max().unwrap_or_default();
        Ok(Response::new(InfoResponse {
            label_sets: vec![ZLabelSet {
                labels: labels(&[("cluster", "eu-1"), ("replica", "0")]),
            }],
            component_type: "store".into(),
            store: Some(StoreInfo {
                min_time,
                max_time,
                supports_sharding: false,
                supports_without_replica_labels: true,
                tsdb_infos: Vec::new(),
            }),
            ..Default::default()
        }))
    }
}

/// Starts the test store on 127.0.0.1 on a free port and returns a channel to it.
async fn start() -> Result<Channel, Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tonic::transport::Server::builder()
        .add_service(StoreServer::new(TestStore {
            series: test_series(),
        }))
        .add_service(InfoServer::new(TestStore {
            series: test_series(),
        }))
        .serve_with_incoming(TcpListenerStream::new(listener));
    tokio::spawn(server);
    Ok(Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?)
}

fn matcher(r#type: MatchType, name: &str, value: &str) -> LabelMatcher {
    LabelMatcher {
        r#type: r#type.into(),
        name: name.into(),
        value: value.into(),
    }
}

fn label_value<'a>(series: &'a Series, name: &str) -> Option<&'a str> {
    series
        .labels
        .iter()
        .find(|l| l.name == name)
        .map(|l| l.value.as_str())
}

/// Collects a Series stream into its frames, in arrival order.
async fn series_frames(
    client: &mut StoreClient<Channel>,
    request: SeriesRequest,
) -> Result<Vec<Frame>, Box<dyn std::error::Error>> {
    let mut stream = client.series(request).await?.into_inner();
    let mut frames = Vec::new();
    while let Some(frame) = stream.next().await {
        frames.push(frame?.result.ok_or("empty frame")?);
    }
    Ok(frames)
}

#[tokio::test]
async fn info_reports_labels_time_range_and_component() -> TestResult {
    let mut client = InfoClient::new(start().await?);
    let info = client.info(InfoRequest {}).await?.into_inner();

    assert_eq!(info.component_type, "store");
    assert_eq!(info.label_sets.len(), 1);
    assert_eq!(
        info.label_sets[0].labels,
        labels(&[("cluster", "eu-1"), ("replica", "0")])
    );
    let store = info.store.ok_or("store info missing")?;
    assert_eq!((store.min_time, store.max_time), (1_000_000, 1_135_000));
    assert!(store.supports_without_replica_labels);
    assert!(!store.supports_sharding);
    assert!(info.rules.is_none() && info.query.is_none() && info.exemplars.is_none());
    Ok(())
}

#[tokio::test]
async fn series_streams_chunks_and_warning_in_order() -> TestResult {
    let mut client = StoreClient::new(start().await?);
    let request = SeriesRequest {
        min_time: 0,
        max_time: i64::MAX,
        matchers: vec![matcher(MatchType::Eq, "__name__", "up")],
        ..Default::default()
    };
    let frames = series_frames(&mut client, request).await?;

    let expected = test_series();
    assert_eq!(frames.len(), 4, "three series and one warning: {frames:?}");
    assert_eq!(frames[0], Frame::Series(expected[0].clone()));
    assert_eq!(frames[1], Frame::Warning(WARNING.into()));
    assert_eq!(frames[2], Frame::Series(expected[1].clone()));
    assert_eq!(frames[3], Frame::Series(expected[2].clone()));

    // The chunk bytes survive the trip and still decode to the original samples.
    let Frame::Series(second) = &frames[2] else {
        return Err("frame 2 is not a series".into());
    };
    let raw = second.chunks[0].raw.as_ref().ok_or("raw chunk missing")?;
    assert_eq!(raw.r#type(), Encoding::Xor);
    assert_eq!(&raw.data[..2], &[0, 4], "XOR header holds the sample count");
    assert_eq!(
        support::decode_xor(&raw.data),
        [
            (1_000_000, 0.5),
            (1_015_000, 0.25),
            (1_030_007, 1e9),
            (1_044_990, -3.75)
        ]
    );
    Ok(())
}

#[tokio::test]
async fn series_honours_regex_matcher() -> TestResult {
    let mut client = StoreClient::new(start().await?);
    let request = SeriesRequest {
        min_time: 0,
        max_time: i64::MAX,
        matchers: vec![
            matcher(MatchType::Eq, "__name__", "up"),
            matcher(MatchType::Re, "instance", ".*:9090"),
        ],
        skip_chunks: true,
        ..Default::default()
    };
    let frames = series_frames(&mut client, request).await?;

    let series: Vec<&Series> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Series(s) => Some(s),
            _ => None,
        })
        .collect();
    let instances: Vec<_> = series.iter().map(|s| label_value(s, "instance")).collect();
    assert_eq!(instances, [Some("a:9090"), Some("b:9090")]);
    assert!(
        series.iter().all(|s| s.chunks.is_empty()),
        "skip_chunks drops chunks"
    );

    // The regex is anchored: a partial match selects nothing.
    let request = SeriesRequest {
        matchers: vec![matcher(MatchType::Re, "instance", "9090")],
        ..Default::default()
    };
    assert!(series_frames(&mut client, request).await?.is_empty());

    // A bad regex comes back as a gRPC error.
    let request = SeriesRequest {
        matchers: vec![matcher(MatchType::Re, "job", "(")],
        ..Default::default()
    };
    let status = client
        .series(request)
        .await
        .err()
        .ok_or("bad regex accepted")?;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    Ok(())
}

#[tokio::test]
async fn label_names_and_values_round_trip() -> TestResult {
    let mut client = StoreClient::new(start().await?);

    let names = client
        .label_names(LabelNamesRequest::default())
        .await?
        .into_inner();
    assert_eq!(names.names, ["__name__", "instance", "job"]);
    assert!(names.warnings.is_empty());

    let request = LabelValuesRequest {
        label: "job".into(),
        ..Default::default()
    };
    let values = client.label_values(request).await?.into_inner();
    assert_eq!(values.values, ["api", "node"]);

    let request = LabelValuesRequest {
        label: "instance".into(),
        matchers: vec![matcher(MatchType::Neq, "job", "api")],
        ..Default::default()
    };
    let values = client.label_values(request).await?.into_inner();
    assert_eq!(values.values, ["c:9100"]);
    Ok(())
}

#[test]
fn test_xor_encoder_matches_hand_assembled_chunk() {
    #[rustfmt::skip]
    let expected = [
        0x00, 0x03,                                     // three samples
        0xd0, 0x0f,                                     // t0 = 1000, signed varint
        0x3f, 0xf0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // v0 = 1.0, raw bits
        0xe8, 0x07,                                     // t1 - t0 = 1000, uvarint
        // Bits: 0 (v1 unchanged), 0 (delta of delta 0), 1 1 (new window), 00001
        // (1 leading zero), 001011 (11 significant bits), 11111111111 (1.0 xor 2.0 >> 52),
        // then padding.
        0b0011_0000, 0b1001_0111, 0b1111_1111, 0b1100_0000,
    ];
    let samples = [(1000, 1.0), (2000, 1.0), (3000, 2.0)];
    assert_eq!(support::encode_xor(&samples), expected);
    assert_eq!(support::decode_xor(&expected), samples);
}
