//! Prometheus TSDB blocks: the directory a block lives in (`meta.json`, `index`, `chunks/`,
//! `tombstones`) and the codecs for each file.
//!
//! Readers are sans-IO: they decode byte slices the caller fetched (from a file, a memory map
//! or object storage ranges) and never touch the filesystem. They never panic on corrupt input:
//! every failure is a [`BlockError`] naming the file and section. The writer streams every file
//! through [`std::io::Write`] sinks; [`DirSink`] puts them in a directory.

pub mod chunks;
pub mod encoding;
pub mod error;
pub mod index;
pub mod meta;
pub mod postings;
pub mod tombstones;
pub mod ulid;
pub mod writer;

pub use chunks::{ChunkRef, ChunksReader, RawChunk, decode_chunk};
pub use error::{BlockError, ErrorKind, WriteError};
pub use index::{
    ChunkMeta, IndexReader, MatchType, Matcher, PostingsList, PostingsOffsetEntries,
    PostingsOffsetEntry, PostingsOffsetTable, SeriesEntry, Symbols, Toc, decode_postings,
    decode_series,
};
pub use meta::{BlockMeta, BlockStats, ThanosMeta};
pub use tombstones::{Tombstone, encode_tombstones, parse_tombstones};
pub use ulid::Ulid;
pub use writer::{
    BlockSink, BlockWriter, BlockWriterOptions, DirSink, EncodedChunk, MemorySink, write_block_dir,
};
