//! The index-header: the parts of a block's `index` needed to resolve matchers without
//! touching object storage — the table of contents, the symbol table and the postings offset
//! table — built from three range reads of the remote index and kept in `--data-dir` so a
//! restart reads none of them again.
//!
//! The local file is `magic | index size | TOC | symbols | postings offset table | CRC32C`;
//! a file that fails to parse is rebuilt from the bucket, never trusted.

use std::path::Path as FsPath;

use gauntlet_tsdb::block::encoding::crc32c;
use gauntlet_tsdb::block::index::{INDEX_HEADER_LEN, TOC_LEN, parse_header};
use gauntlet_tsdb::block::{BlockError, PostingsOffsetTable, Symbols, Toc};
use object_store::ObjectStore;
use object_store::path::Path;

use super::fetch::{self, FetchError};

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
    /// Its postings offset table.
    pub postings: PostingsOffsetTable,
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
    /// remote index `index_path` and writes it to `local`. Returns it and whether the bucket
    /// was read.
    pub async fn load_or_build(
        bucket: &dyn ObjectStore,
        index_path: &Path,
        local: &FsPath,
    ) -> Result<(Self, bool), ReadError> {
        if let Ok(bytes) = tokio::fs::read(local).await {
            match Self::decode(&bytes) {
                Some(header) => return Ok((header, false)),
                None => tracing::warn!(
                    path = %local.display(),
                    "local index-header unreadable; rebuilding it from the bucket"
                ),
            }
        }
        let (file, header) = Self::build(bucket, index_path).await?;
        if let Some(dir) = local.parent() {
            let _ = tokio::fs::create_dir_all(dir).await;
        }
        let tmp = local.with_extension("tmp");
        let written = async {
            tokio::fs::write(&tmp, &file).await?;
            tokio::fs::rename(&tmp, local).await
        }
        .await;
        if let Err(error) = written {
            tracing::warn!(path = %local.display(), %error, "cannot persist the index-header");
        }
        Ok((header, true))
    }

    /// Builds the header from range reads of the remote index: the TOC (with the file size),
    /// then the symbol table and the postings offset table.
    async fn build(
        bucket: &dyn ObjectStore,
        index_path: &Path,
    ) -> Result<(Vec<u8>, Self), ReadError> {
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
        let header = Self::from_parts(index_size, toc, &symbols, &table, file.len() as u64)?;
        Ok((file, header))
    }

    fn from_parts(
        index_size: u64,
        toc: Toc,
        symbols: &[u8],
        table: &[u8],
        file_size: u64,
    ) -> Result<Self, BlockError> {
        Ok(Self {
            index_size,
            toc,
            symbols: Symbols::parse(symbols)?,
            postings: PostingsOffsetTable::parse(table, toc.postings_end())?,
            file_size,
        })
    }

    /// Parses a local header file; `None` when it is damaged or from another format.
    fn decode(bytes: &[u8]) -> Option<Self> {
        let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if crc32c(body).to_be_bytes() != crc {
            return None;
        }
        let rest = body.strip_prefix(MAGIC.as_slice())?;
        let (size, rest) = rest.split_at_checked(8)?;
        let index_size = u64::from_be_bytes(size.try_into().ok()?);
        let (toc, rest) = rest.split_at_checked(TOC_LEN)?;
        let toc = Toc::parse(toc).ok()?;
        let (len, rest) = rest.split_at_checked(8)?;
        let (symbols, rest) =
            rest.split_at_checked(usize::try_from(u64::from_be_bytes(len.try_into().ok()?)).ok()?)?;
        let (len, rest) = rest.split_at_checked(8)?;
        let (table, rest) =
            rest.split_at_checked(usize::try_from(u64::from_be_bytes(len.try_into().ok()?)).ok()?)?;
        if !rest.is_empty() {
            return None;
        }
        Self::from_parts(index_size, toc, symbols, table, bytes.len() as u64).ok()
    }
}
