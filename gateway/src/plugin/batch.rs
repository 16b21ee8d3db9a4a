//! Series batches as they come out of a plugin, before any check: from
//! `store.series-stream.next-batch` (one byte list per chunk) or, when the plugin exports it,
//! `packed-series.next-packed-batch` (one byte list per batch, which the batch's chunks
//! share). Either becomes a [`SeriesBatch`] whose chunk bytes are [`Bytes`], for
//! [`super::validate`] to check.
//!
//! `packed-series` is optional (plugins built against `gauntlet:plugin@0.1.0` lack it), so it
//! is not in the generated bindings: its function is looked up by name once per plugin and
//! type-checked against the records below once per instance, as the generated code would.

use bytes::Bytes;
use wasmtime::Store;
use wasmtime::component::{
    Component, ComponentExportIndex, ComponentType, Instance, Lift, ResourceAny, TypedFunc,
};

use super::bindings::host::gauntlet::plugin::types::{
    ChunkEncoding, Label, PluginError as GuestError,
};
use super::bindings::store_backend::exports::gauntlet::plugin::store as wit;
use super::state::HostState;

/// The optional interface, as components name it.
const PACKED_INTERFACE: &str = "gauntlet:plugin/packed-series@0.1.1";
/// Its function.
const NEXT_PACKED_BATCH: &str = "next-packed-batch";

/// WIT `packed-chunk`.
#[derive(ComponentType, Lift, Debug)]
#[component(record)]
pub struct PackedChunk {
    #[component(name = "min-time")]
    min_time: i64,
    #[component(name = "max-time")]
    max_time: i64,
    encoding: ChunkEncoding,
    size: u32,
}

/// WIT `packed-series`.
#[derive(ComponentType, Lift, Debug)]
#[component(record)]
pub struct PackedSeries {
    labels: Vec<Label>,
    chunks: Vec<PackedChunk>,
}

/// WIT `packed-batch`.
#[derive(ComponentType, Lift, Debug)]
#[component(record)]
pub struct PackedBatch {
    series: Vec<PackedSeries>,
    data: Vec<u8>,
    warnings: Vec<String>,
}

type NextPackedFunc = TypedFunc<(ResourceAny,), (Result<Option<PackedBatch>, GuestError>,)>;

/// One chunk of a plugin's answer, unchecked.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Declared first timestamp.
    pub min_time: i64,
    /// Declared last timestamp.
    pub max_time: i64,
    /// Declared encoding.
    pub encoding: ChunkEncoding,
    /// The encoded bytes (of a packed batch: a slice of the batch's bytes).
    pub data: Bytes,
}

/// One series of a plugin's answer, unchecked.
#[derive(Debug, Clone)]
pub struct Series {
    /// As the plugin sent them.
    pub labels: Vec<Label>,
    /// As the plugin sent them.
    pub chunks: Vec<Chunk>,
}

/// One batch of a plugin's answer, unchecked.
#[derive(Debug, Clone, Default)]
pub struct SeriesBatch {
    /// Series in the plugin's order.
    pub series: Vec<Series>,
    /// Warnings for the user.
    pub warnings: Vec<String>,
}

/// A batch as the plugin returned it.
#[derive(Debug)]
pub enum RawBatch {
    /// From `next-batch`.
    Plain(wit::SeriesBatch),
    /// From `next-packed-batch`.
    Packed(PackedBatch),
}

impl RawBatch {
    /// The batch with its chunk bytes as [`Bytes`]; an error when a packed batch's chunk
    /// sizes do not add up to its bytes.
    pub fn unpack(self) -> Result<SeriesBatch, String> {
        match self {
            Self::Plain(batch) => Ok(SeriesBatch {
                series: batch
                    .series
                    .into_iter()
                    .map(|s| Series {
                        labels: s.labels,
                        chunks: s
                            .chunks
                            .into_iter()
                            .map(|c| Chunk {
                                min_time: c.min_time,
                                max_time: c.max_time,
                                encoding: c.encoding,
                                data: c.data.into(),
                            })
                            .collect(),
                    })
                    .collect(),
                warnings: batch.warnings,
            }),
            Self::Packed(batch) => unpack(batch),
        }
    }
}

fn unpack(batch: PackedBatch) -> Result<SeriesBatch, String> {
    let sizes: u64 = batch
        .series
        .iter()
        .flat_map(|s| &s.chunks)
        .map(|c| u64::from(c.size))
        .sum();
    if sizes != batch.data.len() as u64 {
        return Err(format!(
            "packed batch: its chunk sizes add up to {sizes} bytes, but it carries {} bytes",
            batch.data.len()
        ));
    }
    let data = Bytes::from(batch.data);
    let mut at = 0;
    let series = batch
        .series
        .into_iter()
        .map(|s| Series {
            labels: s.labels,
            chunks: s
                .chunks
                .into_iter()
                .map(|c| {
                    let size = c.size as usize;
                    let bytes = data.slice(at..at + size);
                    at += size;
                    Chunk {
                        min_time: c.min_time,
                        max_time: c.max_time,
                        encoding: c.encoding,
                        data: bytes,
                    }
                })
                .collect(),
        })
        .collect();
    Ok(SeriesBatch {
        series,
        warnings: batch.warnings,
    })
}

/// Where `next-packed-batch` is in a component, if it exports `packed-series`.
#[derive(Debug, Clone, Copy)]
pub struct NextPackedIndex(ComponentExportIndex);

impl NextPackedIndex {
    /// Looks the function up; none when the component does not export the interface.
    pub fn find(component: &Component) -> Option<Self> {
        let interface = component.get_export_index(None, PACKED_INTERFACE)?;
        component
            .get_export_index(Some(&interface), NEXT_PACKED_BATCH)
            .map(Self)
    }

    /// The function of one instance, type-checked against the records above.
    pub fn load(
        &self,
        store: &mut Store<HostState>,
        instance: &Instance,
    ) -> wasmtime::Result<NextPacked> {
        Ok(NextPacked(instance.get_typed_func(store, self.0)?))
    }
}

/// `packed-series.next-packed-batch` of one instance.
#[derive(Clone, Copy)]
pub struct NextPacked(NextPackedFunc);

impl NextPacked {
    /// The next packed batch of `stream`, none at its end, or the plugin's own error.
    pub fn call(
        &self,
        store: &mut Store<HostState>,
        stream: ResourceAny,
    ) -> wasmtime::Result<Result<Option<PackedBatch>, GuestError>> {
        Ok(self.0.call(store, (stream,))?.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed(sizes: &[u32], data: &[u8]) -> PackedBatch {
        PackedBatch {
            series: vec![PackedSeries {
                labels: vec![Label {
                    name: "a".into(),
                    value: "1".into(),
                }],
                chunks: sizes
                    .iter()
                    .enumerate()
                    .map(|(i, &size)| PackedChunk {
                        min_time: i as i64 * 10,
                        max_time: i as i64 * 10 + 5,
                        encoding: ChunkEncoding::Xor,
                        size,
                    })
                    .collect(),
            }],
            data: data.to_vec(),
            warnings: vec!["w".into()],
        }
    }

    #[test]
    fn packed_chunks_take_their_bytes_in_order() {
        let batch = RawBatch::Packed(packed(&[2, 0, 3], b"abcde"))
            .unpack()
            .expect("sizes add up");
        let chunks = &batch.series[0].chunks;
        let bytes: Vec<&[u8]> = chunks.iter().map(|c| &c.data[..]).collect();
        assert_eq!(bytes, [&b"ab"[..], b"", b"cde"]);
        assert_eq!((chunks[2].min_time, chunks[2].max_time), (20, 25));
        assert_eq!(batch.warnings, ["w"]);
    }

    #[test]
    fn packed_sizes_must_add_up_to_the_bytes() {
        for (sizes, data) in [(&[2u32, 4][..], &b"abcde"[..]), (&[2, 2], b"abcde")] {
            let error = RawBatch::Packed(packed(sizes, data))
                .unpack()
                .expect_err("sizes do not add up");
            assert!(error.contains("add up to"), "{error}");
        }
        // Sizes whose sum overflows 32 bits are not wrapped around.
        let error = RawBatch::Packed(packed(&[u32::MAX, 6], b"abcde"))
            .unpack()
            .expect_err("sizes do not add up");
        assert!(error.contains("4294967301"), "{error}");
    }
}
