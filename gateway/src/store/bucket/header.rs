//! The index-header: the parts of a block's `index` needed to resolve matchers without
//! touching object storage — the table of contents, the symbol table and the postings offset
//! table — built from three range reads of the remote index and kept in `--data-dir` so a
//! restart reads none of them again.
//!
//! The local file is `magic | index size | TOC | symbols | postings offset table | CRC32C`;
//! a file that fails to parse is rebuilt from the bucket, never trusted. In memory are the
//! TOC, the symbols and a sample of the postings offset table ([`SampledPostingsTable`]); the
//! rest of that table is read from the local file when a lookup needs it.

use std::path::Path as FsPath;

use gauntlet_tsdb::block::encoding::crc32c;
use gauntlet_tsdb::block::index::{INDEX_HEADER_LEN, TOC_LEN, parse_header};
use gauntlet_tsdb::block::{BlockError, Symbols, Toc};
use object_store::ObjectStore;
use object_store::path::Path;

use super::fetch::{self, FetchError};
use super::postings_table::SampledPostingsTable;

const MAGIC: &[u8; 8] = b"GNTIDXH1";

/// Why reading a block failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Reading from the bucket failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The block is corrupt.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// Reading the local index-header failed.
    #[error("reading the local index-header: {0}")]
    Local(#[from] std::io::Error),
}

/// A block's index-header in memory.
#[derive(Debug)]
pub struct IndexHeader {
    /// Size of the remote `index` file.
    pub index_size: u64,
    /// Its table of contents.
    pub toc: Toc,
    /// Its symbol table.
    pub symbols: Symbols,
    /// Its postings offset table, sampled.
    pub postings: SampledPostingsTable,
    /// Bytes of the local file (what the header costs on disk).
    pub file_size: u64,
}

impl IndexHeader {
    /// Where the series section ends: the first section after it.
    pub fn series_end(&self) -> u64 {
        let t = &self.toc;
        [
            t.label_indices,
            t.label_indices_table,
            t.postings,
            t.postings_table,
        ]
        .into_iter()
        .filter(|&o| o > t.series)
        .min()
        .unwrap_or(self.index_size)
    }

    /// Loads the header from `local` if it is there and intact, otherwise builds it from the
    /// remote index `index_path` and writes it to `local`; keeps one postings offset table
    /// value in `sampling` in memory. Returns it and whether the bucket was read.
    pub async fn load_or_build(
        bucket: &dyn ObjectStore,
        index_path: &Path,
        local: &FsPath,
        sampling: usize,
    ) -> Result<(Self, bool), ReadError> {
        if let Ok(bytes) = tokio::fs::read(local).await {
            match Self::decode(&bytes, local, sampling) {
                Some(header) => return Ok((header, false)),
                None => tracing::warn!(
                    path = %local.display(),
                    "local index-header unreadable; rebuilding it from the bucket"
                ),
            }
        }
        let file = Self::build(bucket, index_path).await?;
        if let Some(dir) = local.parent() {
            let _ = tokio::fs::create_dir_all(dir).await;
        }
        let tmp = local.with_extension("tmp");
        let written = async {
            tokio::fs::write(&tmp, &file).await?;
            tokio::fs::rename(&tmp, local).await
        }
        .await;
        if let Err(error) = &written {
            tracing::warn!(
                path = %local.display(),
                %error,
                "cannot persist the index-header; keeping its whole postings offset table in memory"
            );
        }
        let persisted = written.is_ok().then_some(local);
        let header = Self::parse(&file, persisted, sampling).map_err(|e| {
            e.unwrap_or_else(|| {
                BlockError::invalid("index", "index-header", "built header does not parse").into()
            })
        })?;
        Ok((header, true))
    }

    /// Builds the local header file from range reads of the remote index: the TOC (with the
    /// file size), then the symbol table and the postings offset table, each checked.
    async fn build(bucket: &dyn ObjectStore, index_path: &Path) -> Result<Vec<u8>, ReadError> {
        let (tail, index_size) = fetch::get_suffix(bucket, index_path, TOC_LEN as u64).await?;
        let toc = Toc::parse(&tail)?;
        toc.check_bounds(index_size)?;
        let head = fetch::get_range(bucket, index_path, 0..INDEX_HEADER_LEN as u64).await?;
        parse_header(&head)?;
        let toc_start = index_size - TOC_LEN as u64;
        let symbols_end = [
            toc.series,
            toc.label_indices,
            toc.label_indices_table,
            toc.postings,
            toc.postings_table,
        ]
        .into_iter()
        .filter(|&o| o > toc.symbols)
        .min()
        .unwrap_or(toc_start);
        let symbols = fetch::get_range(bucket, index_path, toc.symbols..symbols_end).await?;
        let table = fetch::get_range(bucket, index_path, toc.postings_table..toc_start).await?;
        // Checked before anything is written.
        Symbols::parse(&symbols)?;
        SampledPostingsTable::parse(&table, toc.postings_end(), 1, None)?;
        let mut file = Vec::with_capacity(symbols.len() + table.len() + 96);
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&index_size.to_be_bytes());
        file.extend_from_slice(&toc.encode());
        file.extend_from_slice(&(symbols.len() as u64).to_be_bytes());
        file.extend_from_slice(&symbols);
        file.extend_from_slice(&(table.len() as u64).to_be_bytes());
        file.extend_from_slice(&table);
        let crc = crc32c(&file);
        file.extend_from_slice(&crc.to_be_bytes());
        Ok(file)
    }

    /// Parses a local header file's bytes; `Err(None)` when they are damaged or from another
    /// format. With `local`, the file holding them, the postings offset table is sampled and
    /// read from there; without, it stays whole in memory.
    fn parse(
        bytes: &[u8],
        local: Option<&FsPath>,
        sampling: usize,
    ) -> Result<Self, Option<ReadError>> {
        let (body, crc) = bytes
            .split_at_checked(bytes.len().checked_sub(4).ok_or(None)?)
            .ok_or(None)?;
        if crc32c(body).to_be_bytes() != crc {
            return Err(None);
        }
        let rest = body.strip_prefix(MAGIC.as_slice()).ok_or(None)?;
        let (size, rest) = rest.split_at_checked(8).ok_or(None)?;
        let index_size = u64::from_be_bytes(size.try_into().map_err(|_| None)?);
        let (toc, rest) = rest.split_at_checked(TOC_LEN).ok_or(None)?;
        let toc = Toc::parse(toc).map_err(|_| None)?;
        let (symbols, rest) = section(rest).ok_or(None)?;
        let (table, rest) = section(rest).ok_or(None)?;
        if !rest.is_empty() {
            return Err(None);
        }
        let table_at = (body.len() - table.len()) as u64;
        let file = local.map(|path| (path.to_owned(), table_at));
        Ok(Self {
            index_size,
            toc,
            symbols: Symbols::parse(symbols).map_err(|_| None)?,
            postings: SampledPostingsTable::parse(table, toc.postings_end(), sampling, file)
                .map_err(|_| None)?,
            file_size: bytes.len() as u64,
        })
    }

    /// Parses the local header file at `local`; `None` when it is damaged or from another
    /// format.
    fn decode(bytes: &[u8], local: &FsPath, sampling: usize) -> Option<Self> {
        Self::parse(bytes, Some(local), sampling).ok()
    }
}

/// A `u64` big-endian length and that many bytes, and what follows.
fn section(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = bytes.split_at_checked(8)?;
    let len = usize::try_from(u64::from_be_bytes(len.try_into().ok()?)).ok()?;
    rest.split_at_checked(len)
}
