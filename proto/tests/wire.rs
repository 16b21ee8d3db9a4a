//! Wire-format checks: key fields encode with upstream's field numbers and wire types, checked
//! byte by byte, and malformed input decodes to an error rather than a panic.

use gauntlet_proto::prometheus::{
    self, BucketSpan, ChunkedReadResponse, ChunkedSeries, Histogram, ReadRequest,
    read_request::ResponseType,
};
use gauntlet_proto::thanos::info::{InfoResponse, StoreInfo};
use gauntlet_proto::thanos::{
    self, AggrChunk, Chunk, Label, LabelMatcher, PartialResponseStrategy, SeriesRequest,
    SeriesResponse, chunk::Encoding, series_response::Result as Frame,
};
use prost::Message;

/// Protobuf wire types.
const VARINT: u8 = 0;
const LEN: u8 = 2;

/// The tag byte of a field with number below 16.
fn tag(field: u8, wire_type: u8) -> u8 {
    field << 3 | wire_type
}

#[test]
fn series_request_fields() {
    let req = SeriesRequest {
        min_time: 1,
        max_time: 2,
        ..Default::default()
    };
    assert_eq!(req.encode_to_vec(), [tag(1, VARINT), 1, tag(2, VARINT), 2]);

    // int64, not sint64: a negative time is ten varint bytes, not zigzag.
    let req = SeriesRequest {
        min_time: -1,
        ..Default::default()
    };
    let mut expected = vec![tag(1, VARINT)];
    expected.extend([0xff; 9]);
    expected.push(0x01);
    assert_eq!(req.encode_to_vec(), expected);

    let req = SeriesRequest {
        matchers: vec![LabelMatcher {
            r#type: 2,
            name: "a".into(),
            value: "b".into(),
        }],
        partial_response_strategy: PartialResponseStrategy::Abort.into(),
        skip_chunks: true,
        ..Default::default()
    };
    #[rustfmt::skip]
    let expected = [
        tag(3, LEN), 8, tag(1, VARINT), 2, tag(2, LEN), 1, b'a', tag(3, LEN), 1, b'b',
        tag(7, VARINT), 1,
        tag(8, VARINT), 1,
    ];
    assert_eq!(req.encode_to_vec(), expected);

    // Fields 12 to 15 (query hints, shard info, replica labels, limit).
    let req = SeriesRequest {
        query_hints: Some(thanos::QueryHints {
            step_millis: 3,
            ..Default::default()
        }),
        shard_info: Some(thanos::ShardInfo {
            total_shards: 4,
            ..Default::default()
        }),
        without_replica_labels: vec!["r".into()],
        limit: 5,
        ..Default::default()
    };
    #[rustfmt::skip]
    let expected = [
        tag(12, LEN), 2, tag(1, VARINT), 3,
        tag(13, LEN), 2, tag(2, VARINT), 4,
        tag(14, LEN), 1, b'r',
        tag(15, VARINT), 5,
    ];
    assert_eq!(req.encode_to_vec(), expected);
}

#[test]
fn series_response_variants() {
    let warning = SeriesResponse {
        result: Some(Frame::Warning("w".into())),
    };
    assert_eq!(warning.encode_to_vec(), [tag(2, LEN), 1, b'w']);

    let series = SeriesResponse {
        result: Some(Frame::Series(thanos::Series::default())),
    };
    assert_eq!(series.encode_to_vec(), [tag(1, LEN), 0]);

    let hints = SeriesResponse {
        result: Some(Frame::Hints(prost_types::Any::default())),
    };
    assert_eq!(hints.encode_to_vec(), [tag(3, LEN), 0]);

    // A hand-built warning frame decodes to the warning variant.
    let decoded = SeriesResponse::decode(&[tag(2, LEN), 2, b'h', b'i'][..]);
    assert_eq!(
        decoded,
        Ok(SeriesResponse {
            result: Some(Frame::Warning("hi".into()))
        })
    );
}

#[test]
fn chunk_fields() {
    let chunk = Chunk {
        r#type: Encoding::FloatHistogram.into(),
        data: vec![0xab].into(),
        hash: 7,
    };
    assert_eq!(
        chunk.encode_to_vec(),
        [tag(1, VARINT), 2, tag(2, LEN), 1, 0xab, tag(3, VARINT), 7]
    );
    assert_eq!(i32::from(Encoding::Xor), 0);
    assert_eq!(i32::from(Encoding::Histogram), 1);

    // AggrChunk: times 1 and 2, raw chunk 3, counter chunk 8.
    let aggr = AggrChunk {
        min_time: 1,
        max_time: 2,
        raw: Some(Chunk::default()),
        counter: Some(Box::new(Chunk::default())),
        ..Default::default()
    };
    assert_eq!(
        aggr.encode_to_vec(),
        [
            tag(1, VARINT),
            1,
            tag(2, VARINT),
            2,
            tag(3, LEN),
            0,
            tag(8, LEN),
            0
        ]
    );
}

#[test]
fn info_fields() {
    let info = InfoResponse {
        component_type: "q".into(),
        store: Some(StoreInfo {
            supports_without_replica_labels: true,
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        info.encode_to_vec(),
        [tag(2, LEN), 1, b'q', tag(3, LEN), 2, tag(5, VARINT), 1]
    );
}

#[test]
fn remote_read_fields() {
    // proto3 packs repeated enums: one length-delimited field 2.
    let req = ReadRequest {
        accepted_response_types: vec![ResponseType::StreamedXorChunks.into()],
        ..Default::default()
    };
    assert_eq!(req.encode_to_vec(), [tag(2, LEN), 1, 1]);
    // Decoders must also accept the unpacked form.
    let unpacked = ReadRequest::decode(&[tag(2, VARINT), 1][..]);
    assert_eq!(unpacked.map(|r| r.accepted_response_types), Ok(vec![1]));

    let resp = ChunkedReadResponse {
        chunked_series: vec![ChunkedSeries::default()],
        query_index: 2,
    };
    assert_eq!(resp.encode_to_vec(), [tag(1, LEN), 0, tag(2, VARINT), 2]);

    let chunk = prometheus::Chunk {
        min_time_ms: 1,
        max_time_ms: 2,
        r#type: prometheus::chunk::Encoding::Xor.into(),
        data: vec![9].into(),
    };
    assert_eq!(
        chunk.encode_to_vec(),
        [
            tag(1, VARINT),
            1,
            tag(2, VARINT),
            2,
            tag(3, VARINT),
            1,
            tag(4, LEN),
            1,
            9
        ]
    );
}

#[test]
fn remote_write_fields() {
    let req = prometheus::WriteRequest {
        timeseries: vec![prometheus::TimeSeries {
            samples: vec![prometheus::Sample {
                value: 1.0,
                timestamp: 3,
            }],
            ..Default::default()
        }],
        metadata: vec![prometheus::MetricMetadata::default()],
    };
    #[rustfmt::skip]
    let expected = [
        tag(1, LEN), 13, tag(2, LEN), 11,
        tag(1, 1), 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, // value: fixed64, little-endian 1.0
        tag(2, VARINT), 3,
        tag(3, LEN), 0,
    ];
    assert_eq!(req.encode_to_vec(), expected);

    // Histogram schema is sint32 and bucket deltas are packed sint64 (zigzag).
    let h = Histogram {
        schema: -1,
        positive_spans: vec![BucketSpan {
            offset: -2,
            length: 2,
        }],
        positive_deltas: vec![-1, 1],
        ..Default::default()
    };
    #[rustfmt::skip]
    let expected = [
        tag(4, VARINT), 1,
        tag(11, LEN), 4, tag(1, VARINT), 3, tag(2, VARINT), 2,
        tag(12, LEN), 2, 1, 2,
    ];
    assert_eq!(h.encode_to_vec(), expected);
}

#[test]
fn truncated_input_is_an_error() {
    let series = thanos::Series {
        labels: vec![Label {
            name: "__name__".into(),
            value: "up".into(),
        }],
        chunks: vec![AggrChunk {
            min_time: 1_000,
            max_time: 2_000,
            raw: Some(Chunk {
                r#type: 0,
                data: vec![0, 1, 2, 3, 4, 5].into(),
                hash: 0,
            }),
            ..Default::default()
        }],
    };
    let bytes = series.encode_to_vec();
    assert_eq!(thanos::Series::decode(&bytes[..]), Ok(series));

    // Every cut inside the single top-level chunk field is an error; none panics.
    let chunks_start = 2 + "__name__".len() + 2 + "up".len() + 2;
    for len in 0..bytes.len() {
        let result = thanos::Series::decode(&bytes[..len]);
        if len > chunks_start {
            assert!(result.is_err(), "decoded a {len}-byte prefix");
        }
    }

    // A length prefix far beyond the input is an error, not an allocation.
    let huge = [tag(1, LEN), 0xff, 0xff, 0xff, 0xff, 0x0f];
    assert!(thanos::Series::decode(&huge[..]).is_err());
    assert!(SeriesResponse::decode(&huge[..]).is_err());
    assert!(ChunkedReadResponse::decode(&huge[..]).is_err());
}

/// Answers hold one `AggrChunk` per chunk: the rarely used aggregates are boxed so that a raw
/// chunk does not carry five inline `Chunk`s.
#[test]
fn aggr_chunk_stays_small() {
    let size = std::mem::size_of::<AggrChunk>();
    assert!(
        size <= 2 * 8 + std::mem::size_of::<Chunk>() + 5 * 8,
        "{size} bytes"
    );
}
