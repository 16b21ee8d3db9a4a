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

/// The files of the block in `dir` other than `meta.json`: paths relative to `dir` (with `/`),
/// sorted, with their sizes. What an upload lists in the `thanos` section of `meta.json`.
pub fn block_files(dir: &std::path::Path) -> std::io::Result<Vec<(String, u64)>> {
    fn walk(
        root: &std::path::Path,
        rel: &str,
        out: &mut Vec<(String, u64)>,
    ) -> std::io::Result<()> {
        let dir = if rel.is_empty() {
            root.to_owned()
        } else {
            root.join(rel)
        };
        let context = |e: std::io::Error| {
            std::io::Error::new(e.kind(), format!("cannot list {}: {e}", dir.display()))
        };
        for entry in std::fs::read_dir(&dir).map_err(context)? {
            let entry = entry.map_err(context)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let meta = entry.metadata().map_err(context)?;
            if meta.is_dir() {
                walk(root, &child, out)?;
            } else if meta.is_file() {
                out.push((child, meta.len()));
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, "", &mut files)?;
    files.retain(|(rel, _)| rel != "meta.json");
    files.sort();
    Ok(files)
}
