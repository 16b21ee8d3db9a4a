//! Reader for the block `index` file, format version 2: header, table of contents, symbol
//! table, series entries, label indices, postings lists and the postings offset table.
//!
//! Each piece decodes from a byte slice that starts where the piece starts, so a store gateway
//! can fetch exactly the ranges it needs from object storage (the last [`TOC_LEN`] bytes first,
//! then the symbol table and the postings offset table, then postings and series on demand)
//! and hand them over. [`IndexReader`] puts the pieces together over a whole file in memory.
//!
//! Every length and count read from the file is checked against the bytes at hand before
//! anything is allocated; a corrupt section is a [`BlockError`] naming the section, never a
//! panic.

use std::ops::Range;

use super::encoding::{Decbuf, checked_section, checked_uvarint_section};
use super::error::{BlockError, ErrorKind};
use super::postings::{intersect, subtract, union};
use crate::labels::{Label, Labels};

/// Magic number at the start of an index file.
pub const INDEX_MAGIC: u32 = 0xBAAA_D700;
/// The index format version this crate writes.
pub const INDEX_VERSION: u8 = 2;
/// Size of the header: magic and version.
pub const INDEX_HEADER_LEN: usize = 5;
/// Size of the table of contents at the end of the file: six offsets and a CRC32.
pub const TOC_LEN: usize = 6 * 8 + 4;
/// Series entries start at multiples of this; a series' reference is its offset divided by it.
pub const SERIES_ALIGNMENT: u64 = 16;

const FILE: &str = "index";

fn err(section: &'static str) -> impl FnOnce(ErrorKind) -> BlockError {
    move |kind| BlockError::new(FILE, section, kind)
}

/// Checks the 5-byte header and returns the format version (2, or 3 which shares its layout).
pub fn parse_header(bytes: &[u8]) -> Result<u8, BlockError> {
    let mut d = Decbuf::new(bytes);
    let magic = d.be32().map_err(err("header"))?;
    if magic != INDEX_MAGIC {
        return Err(BlockError::new(FILE, "header", ErrorKind::BadMagic(magic)));
    }
    let version = d.byte().map_err(err("header"))?;
    if !(2..=3).contains(&version) {
        return Err(BlockError::new(
            FILE,
            "header",
            ErrorKind::UnsupportedVersion(version),
        ));
    }
    Ok(version)
}

/// The table of contents: where each section starts (0 when a section is absent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Toc {
    /// Offset of the symbol table.
    pub symbols: u64,
    /// Offset of the first series entry.
    pub series: u64,
    /// Offset of the first label index (where the series section ends).
    pub label_indices: u64,
    /// Offset of the label offset table.
    pub label_indices_table: u64,
    /// Offset of the first postings list.
    pub postings: u64,
    /// Offset of the postings offset table.
    pub postings_table: u64,
}

impl Toc {
    /// Parses the table of contents from the last [`TOC_LEN`] bytes of the file (a longer slice
    /// is fine: its last [`TOC_LEN`] bytes are used).
    pub fn parse(bytes: &[u8]) -> Result<Self, BlockError> {
        if bytes.len() < TOC_LEN {
            return Err(BlockError::new(FILE, "TOC", ErrorKind::Truncated));
        }
        let b = &bytes[bytes.len() - TOC_LEN..];
        let mut d = Decbuf::new(b);
        let mut offsets = [0u64; 6];
        for o in &mut offsets {
            *o = d.be64().map_err(err("TOC"))?;
        }
        let stored = d.be32().map_err(err("TOC"))?;
        super::encoding::check_crc(&b[..TOC_LEN - 4], stored).map_err(err("TOC"))?;
        let [
            symbols,
            series,
            label_indices,
            label_indices_table,
            postings,
            postings_table,
        ] = offsets;
        Ok(Self {
            symbols,
            series,
            label_indices,
            label_indices_table,
            postings,
            postings_table,
        })
    }

    /// Checks that every offset lies inside an index of `file_len` bytes, before the TOC.
    pub fn check_bounds(&self, file_len: u64) -> Result<(), BlockError> {
        let end = file_len.saturating_sub(TOC_LEN as u64);
        for (name, off) in [
            ("symbol table", self.symbols),
            ("series", self.series),
            ("label indices", self.label_indices),
            ("label offset table", self.label_indices_table),
            ("postings", self.postings),
            ("postings offset table", self.postings_table),
        ] {
            if off > end || (off != 0 && off < INDEX_HEADER_LEN as u64) {
                return Err(BlockError::invalid(
                    FILE,
                    "TOC",
                    format!("{name} offset {off} outside the file ({file_len} bytes)"),
                ));
            }
        }
        if self.postings_table == 0 || self.symbols == 0 {
            return Err(BlockError::invalid(
                FILE,
                "TOC",
                "symbol table or postings offset table missing",
            ));
        }
        Ok(())
    }

    /// Where the postings section ends: the next section after it.
    pub fn postings_end(&self) -> u64 {
        [self.label_indices_table, self.postings_table]
            .into_iter()
            .filter(|&o| o > self.postings)
            .min()
            .unwrap_or(self.postings_table)
    }

    /// The 52 bytes of this table of contents, CRC included.
    pub fn encode(&self) -> [u8; TOC_LEN] {
        let mut out = [0u8; TOC_LEN];
        for (i, o) in [
            self.symbols,
            self.series,
            self.label_indices,
            self.label_indices_table,
            self.postings,
            self.postings_table,
        ]
        .into_iter()
        .enumerate()
        {
            out[i * 8..i * 8 + 8].copy_from_slice(&o.to_be_bytes());
        }
        let crc = super::encoding::crc32c(&out[..TOC_LEN - 4]);
        out[TOC_LEN - 4..].copy_from_slice(&crc.to_be_bytes());
        out
    }
}

/// Length in bytes of a section with a 4-byte length prefix and a CRC32 suffix, given at least
/// its first 4 bytes: tells a caller how much to fetch.
pub fn section_len(first_bytes: &[u8], section: &'static str) -> Result<u64, BlockError> {
    let len = Decbuf::new(first_bytes).be32().map_err(err(section))?;
    Ok(u64::from(len) + 8)
}

/// The symbol table: every label name and value, sorted, referenced by position.
#[derive(Debug, Clone, Default)]
pub struct Symbols {
    /// The section body after the count: uvarint-prefixed strings.
    data: Vec<u8>,
    /// Offset in `data` of each symbol's length prefix.
    offsets: Vec<u32>,
}

impl Symbols {
    /// Parses the symbol table from bytes starting at its offset ([`Toc::symbols`]); bytes past
    /// the section are ignored. Checks the CRC, UTF-8 and the sort order.
    pub fn parse(bytes: &[u8]) -> Result<Self, BlockError> {
        const S: &str = "symbol table";
        let body = checked_section(bytes).map_err(err(S))?;
        let mut d = Decbuf::new(body);
        let count = d.be32().map_err(err(S))?;
        let data = d.rest();
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        // Each symbol takes at least one byte (its length).
        if count > data.len() {
            return Err(BlockError::invalid(
                FILE,
                S,
                format!("{count} symbols cannot fit in {} bytes", data.len()),
            ));
        }
        let mut offsets = Vec::with_capacity(count);
        let mut d = Decbuf::new(data);
        let mut last: Option<&str> = None;
        for _ in 0..count {
            let off = data.len() - d.len();
            let off = u32::try_from(off)
                .map_err(|_| BlockError::invalid(FILE, S, "symbol table over 4 GiB"))?;
            offsets.push(off);
            let s = d.uvarint_str().map_err(err(S))?;
            if last.is_some_and(|l| l >= s) {
                return Err(BlockError::invalid(FILE, S, "symbols not sorted"));
            }
            last = Some(s);
        }
        Ok(Self {
            data: data.to_vec(),
            offsets,
        })
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// Whether there are no symbols.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// The symbol with reference `r`.
    pub fn lookup(&self, r: u32) -> Result<&str, BlockError> {
        let off = usize::try_from(r)
            .ok()
            .and_then(|i| self.offsets.get(i))
            .ok_or_else(|| {
                BlockError::invalid(
                    FILE,
                    "symbol table",
                    format!("unknown symbol reference {r}"),
                )
            })?;
        let off = *off as usize;
        let mut d = Decbuf::new(self.data.get(off..).unwrap_or_default());
        d.uvarint_str().map_err(err("symbol table"))
    }

    /// The reference of `s`, if it is a symbol.
    pub fn reverse_lookup(&self, s: &str) -> Option<u32> {
        let mut lo = 0usize;
        let mut hi = self.offsets.len();
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let m = self.lookup(u32::try_from(mid).ok()?).ok()?;
            match m.cmp(s) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return u32::try_from(mid).ok(),
            }
        }
        None
    }

    /// All symbols in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.offsets.len()).filter_map(|i| self.lookup(u32::try_from(i).ok()?).ok())
    }
}

/// One entry of the postings offset table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ValueOffset {
    value: String,
    offset: u64,
}

/// One entry of the postings offset table, with where it starts among the bytes decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PostingsOffsetEntry<'a> {
    /// Label name (empty for the list of every series).
    pub name: &'a str,
    /// Label value.
    pub value: &'a str,
    /// Where the postings list starts in the index file.
    pub offset: u64,
    /// Where the entry starts in the bytes given to [`PostingsOffsetEntries`].
    pub at: usize,
}

/// Decodes postings offset table entries one after the other from bytes that start at an
/// entry, e.g. a part of a table's body between two entries a reader kept the positions of.
#[derive(Debug, Clone)]
pub struct PostingsOffsetEntries<'a> {
    bytes: &'a [u8],
    d: Decbuf<'a>,
    failed: bool,
}

impl<'a> PostingsOffsetEntries<'a> {
    /// Entries of `bytes`, which start at an entry and end at one's end.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            d: Decbuf::new(bytes),
            failed: false,
        }
    }

    /// The body of a whole postings offset table (bytes starting at [`Toc::postings_table`])
    /// after its CRC is checked, and its entry count. The body's entries start at offset 4.
    pub fn table_body(bytes: &[u8]) -> Result<(&[u8], u32), BlockError> {
        const S: &str = "postings offset table";
        let body = checked_section(bytes).map_err(err(S))?;
        let count = Decbuf::new(body).be32().map_err(err(S))?;
        if u64::from(count) * 4 > body.len() as u64 {
            return Err(BlockError::invalid(
                FILE,
                S,
                format!("{count} entries cannot fit in {} bytes", body.len()),
            ));
        }
        Ok((body, count))
    }
}

impl<'a> Iterator for PostingsOffsetEntries<'a> {
    type Item = Result<PostingsOffsetEntry<'a>, BlockError>;

    fn next(&mut self) -> Option<Self::Item> {
        const S: &str = "postings offset table";
        if self.failed || self.d.is_empty() {
            return None;
        }
        let at = self.bytes.len() - self.d.len();
        let mut entry = || -> Result<PostingsOffsetEntry<'a>, BlockError> {
            let keys = self.d.uvarint().map_err(err(S))?;
            if keys != 2 {
                return Err(BlockError::invalid(
                    FILE,
                    S,
                    format!("entry has {keys} keys, expected 2"),
                ));
            }
            let name = self.d.uvarint_str().map_err(err(S))?;
            let value = self.d.uvarint_str().map_err(err(S))?;
            let offset = self.d.uvarint().map_err(err(S))?;
            Ok(PostingsOffsetEntry {
                name,
                value,
                offset,
                at,
            })
        };
        let result = entry();
        self.failed = result.is_err();
        Some(result)
    }
}

/// The postings offset table: for every label name and value, where its postings list starts.
/// The entry with empty name and value lists every series.
#[derive(Debug, Clone, Default)]
pub struct PostingsOffsetTable {
    /// Label names in order, each with its values in order.
    names: Vec<(String, Vec<ValueOffset>)>,
    /// Where the postings section ends, bounding the last list's range.
    postings_end: u64,
}

impl PostingsOffsetTable {
    /// Parses the table from bytes starting at [`Toc::postings_table`]. `postings_end` is
    /// [`Toc::postings_end`]: it bounds the byte range of the last postings list. Checks the
    /// CRC, the sort order and that offsets increase.
    pub fn parse(bytes: &[u8], postings_end: u64) -> Result<Self, BlockError> {
        const S: &str = "postings offset table";
        let body = checked_section(bytes).map_err(err(S))?;
        let mut d = Decbuf::new(body);
        let count = d.be32().map_err(err(S))?;
        // An entry takes at least 4 bytes: key count, two lengths, an offset.
        if u64::from(count) * 4 > d.len() as u64 {
            return Err(BlockError::invalid(
                FILE,
                S,
                format!("{count} entries cannot fit in {} bytes", d.len()),
            ));
        }
        let mut names: Vec<(String, Vec<ValueOffset>)> = Vec::new();
        let mut last_offset: Option<u64> = None;
        for _ in 0..count {
            let keys = d.uvarint().map_err(err(S))?;
            if keys != 2 {
                return Err(BlockError::invalid(
                    FILE,
                    S,
                    format!("entry has {keys} keys, expected 2"),
                ));
            }
            let name = d.uvarint_str().map_err(err(S))?;
            let value = d.uvarint_str().map_err(err(S))?;
            let offset = d.uvarint().map_err(err(S))?;
            if last_offset.is_some_and(|l| l >= offset) || offset >= postings_end {
                return Err(BlockError::invalid(
                    FILE,
                    S,
                    format!("postings offset {offset} out of order or past the postings"),
                ));
            }
            last_offset = Some(offset);
            let entry = ValueOffset {
                value: value.to_owned(),
                offset,
            };
            match names.last_mut() {
                Some((n, values)) if n == name => {
                    if values.last().is_some_and(|v| v.value.as_str() >= value) {
                        return Err(BlockError::invalid(FILE, S, "values not sorted"));
                    }
                    values.push(entry);
                }
                Some((n, _)) if n.as_str() > name => {
                    return Err(BlockError::invalid(FILE, S, "names not sorted"));
                }
                _ => names.push((name.to_owned(), vec![entry])),
            }
        }
        Ok(Self {
            names,
            postings_end,
        })
    }

    /// Label names in order, the empty name of the all-series list excluded.
    pub fn label_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.names
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| !n.is_empty())
    }

    /// Values of label `name` in order.
    pub fn label_values<'s>(&'s self, name: &str) -> impl Iterator<Item = &'s str> + 's {
        self.values_of(name).iter().map(|v| v.value.as_str())
    }

    fn values_of(&self, name: &str) -> &[ValueOffset] {
        self.names
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .map_or(&[], |i| &self.names[i].1)
    }

    /// Byte range in the index file holding the postings list of `name`=`value` (possibly
    /// with trailing padding, which [`decode_postings`] ignores), or `None` when no series has
    /// that label.
    pub fn range(&self, name: &str, value: &str) -> Option<Range<u64>> {
        let Ok(ni) = self.names.binary_search_by(|(n, _)| n.as_str().cmp(name)) else {
            return None;
        };
        let values = &self.names[ni].1;
        let vi = values
            .binary_search_by(|v| v.value.as_str().cmp(value))
            .ok()?;
        Some(values[vi].offset..self.next_offset(ni, vi))
    }

    /// Byte range of the list of every series.
    pub fn all_postings_range(&self) -> Option<Range<u64>> {
        self.range("", "")
    }

    /// Byte ranges of the postings lists of every value of `name` for which `keep` holds, in
    /// value order.
    pub fn ranges_matching<'s>(
        &'s self,
        name: &str,
        mut keep: impl FnMut(&str) -> bool + 's,
    ) -> impl Iterator<Item = (&'s str, Range<u64>)> + 's {
        let ni = self
            .names
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok();
        let values = ni.map_or(&[][..], |i| &self.names[i].1[..]);
        values
            .iter()
            .enumerate()
            .filter(move |(_, v)| keep(&v.value))
            .filter_map(move |(vi, v)| {
                let ni = ni?;
                Some((v.value.as_str(), v.offset..self.next_offset(ni, vi)))
            })
    }

    fn next_offset(&self, ni: usize, vi: usize) -> u64 {
        let values = &self.names[ni].1;
        if let Some(next) = values.get(vi + 1) {
            return next.offset;
        }
        self.names
            .get(ni + 1)
            .and_then(|(_, vs)| vs.first())
            .map_or(self.postings_end, |v| v.offset)
    }

    /// Number of label name/value pairs, the all-series entry included.
    pub fn len(&self) -> usize {
        self.names.iter().map(|(_, v)| v.len()).sum()
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// A decoded postings list: series references in increasing order, borrowed from the file.
#[derive(Debug, Clone, Copy)]
pub struct PostingsList<'a> {
    refs: &'a [u8],
}

impl<'a> PostingsList<'a> {
    /// Number of series in the list.
    pub fn len(&self) -> usize {
        self.refs.len() / 4
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.refs.is_empty()
    }

    /// The series references in file order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + 'a {
        self.refs
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }

    /// The references as a vector, checked to be strictly increasing.
    pub fn to_vec(&self) -> Result<Vec<u32>, BlockError> {
        let mut out = Vec::with_capacity(self.len());
        for r in self.iter() {
            if out.last().is_some_and(|&l| l >= r) {
                return Err(BlockError::invalid(
                    FILE,
                    "postings",
                    "references not increasing",
                ));
            }
            out.push(r);
        }
        Ok(out)
    }
}

/// Decodes a postings list from bytes starting at its offset (trailing bytes are ignored).
pub fn decode_postings(bytes: &[u8]) -> Result<PostingsList<'_>, BlockError> {
    const S: &str = "postings";
    let body = checked_section(bytes).map_err(err(S))?;
    let mut d = Decbuf::new(body);
    let count = d.be32().map_err(err(S))?;
    if u64::from(count) * 4 != d.len() as u64 {
        return Err(BlockError::invalid(
            FILE,
            S,
            format!("{count} entries declared in {} bytes", d.len()),
        ));
    }
    Ok(PostingsList { refs: d.rest() })
}

/// Where a chunk lives and which time range it covers, as the index records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkMeta {
    /// Timestamp of the first sample, milliseconds.
    pub min_time: i64,
    /// Timestamp of the last sample, milliseconds (inclusive).
    pub max_time: i64,
    /// Chunk reference: segment index in the upper 32 bits, byte offset in the lower 32.
    pub chunk_ref: u64,
}

/// A series entry: its labels and its chunks in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesEntry {
    /// The series' labels.
    pub labels: Labels,
    /// Its chunks, ordered by time and reference.
    pub chunks: Vec<ChunkMeta>,
}

/// Decodes a series entry from bytes starting at its offset (series reference × 16); bytes
/// past the entry are ignored.
pub fn decode_series(bytes: &[u8], symbols: &Symbols) -> Result<SeriesEntry, BlockError> {
    Ok(decode_series_with_len(bytes, symbols)?.0)
}

/// Size in bytes of the series entry whose first bytes (at least its uvarint length prefix,
/// at most 10 bytes are looked at) are given, CRC included: tells a caller how much to fetch.
pub fn series_entry_len(first_bytes: &[u8]) -> Result<u64, BlockError> {
    let head = &first_bytes[..first_bytes.len().min(10)];
    let (len, n) = super::encoding::read_uvarint(head).map_err(err("series"))?;
    Ok(len.saturating_add(n as u64).saturating_add(4))
}

/// Like [`decode_series`], also returning how many bytes the entry spans (CRC included).
pub fn decode_series_with_len(
    bytes: &[u8],
    symbols: &Symbols,
) -> Result<(SeriesEntry, usize), BlockError> {
    const S: &str = "series";
    let (body, total) = checked_uvarint_section(bytes).map_err(err(S))?;
    let mut d = Decbuf::new(body);
    let nlabels = d.uvarint().map_err(err(S))?;
    if nlabels.saturating_mul(2) > d.len() as u64 {
        return Err(BlockError::invalid(
            FILE,
            S,
            format!("{nlabels} labels cannot fit in {} bytes", d.len()),
        ));
    }
    let mut labels: Vec<Label> = Vec::with_capacity(usize::try_from(nlabels).unwrap_or(0));
    for _ in 0..nlabels {
        let n = d.uvarint32().map_err(err(S))?;
        let v = d.uvarint32().map_err(err(S))?;
        let name = symbols.lookup(n)?;
        let value = symbols.lookup(v)?;
        if labels.last().is_some_and(|l| l.name.as_str() >= name) {
            return Err(BlockError::invalid(FILE, S, "label names not sorted"));
        }
        labels.push(Label::new(name, value));
    }
    let nchunks = d.uvarint().map_err(err(S))?;
    // A chunk takes at least 3 bytes.
    if nchunks.saturating_mul(3) > d.len() as u64 {
        return Err(BlockError::invalid(
            FILE,
            S,
            format!("{nchunks} chunks cannot fit in {} bytes", d.len()),
        ));
    }
    let mut chunks = Vec::with_capacity(usize::try_from(nchunks).unwrap_or(0));
    let overflow = || BlockError::invalid(FILE, S, "chunk time or reference overflows");
    let mut prev: Option<ChunkMeta> = None;
    for _ in 0..nchunks {
        let c = if let Some(p) = prev {
            let dmin = d.uvarint().map_err(err(S))?;
            let dmax = d.uvarint().map_err(err(S))?;
            let dref = d.varint().map_err(err(S))?;
            let min_time = add_delta(p.max_time, dmin).ok_or_else(overflow)?;
            let max_time = add_delta(min_time, dmax).ok_or_else(overflow)?;
            let chunk_ref = p.chunk_ref.checked_add_signed(dref).ok_or_else(overflow)?;
            ChunkMeta {
                min_time,
                max_time,
                chunk_ref,
            }
        } else {
            let min_time = d.varint().map_err(err(S))?;
            let dmax = d.uvarint().map_err(err(S))?;
            let chunk_ref = d.uvarint().map_err(err(S))?;
            ChunkMeta {
                min_time,
                max_time: add_delta(min_time, dmax).ok_or_else(overflow)?,
                chunk_ref,
            }
        };
        chunks.push(c);
        prev = Some(c);
    }
    Ok((
        SeriesEntry {
            labels: Labels::from_sorted(labels),
            chunks,
        },
        total,
    ))
}

fn add_delta(base: i64, delta: u64) -> Option<i64> {
    base.checked_add_unsigned(delta)
}

/// Parses the label offset table (bytes starting at [`Toc::label_indices_table`]): label name
/// → offset of its label index. Blocks written by recent Prometheus versions have none.
pub fn parse_label_offset_table(bytes: &[u8]) -> Result<Vec<(String, u64)>, BlockError> {
    const S: &str = "label offset table";
    let body = checked_section(bytes).map_err(err(S))?;
    let mut d = Decbuf::new(body);
    let count = d.be32().map_err(err(S))?;
    if u64::from(count) * 3 > d.len() as u64 {
        return Err(BlockError::invalid(
            FILE,
            S,
            format!("{count} entries cannot fit in {} bytes", d.len()),
        ));
    }
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let keys = d.uvarint().map_err(err(S))?;
        if keys != 1 {
            return Err(BlockError::invalid(
                FILE,
                S,
                format!("entry has {keys} keys, expected 1"),
            ));
        }
        let name = d.uvarint_str().map_err(err(S))?;
        let offset = d.uvarint().map_err(err(S))?;
        out.push((name.to_owned(), offset));
    }
    Ok(out)
}

/// Decodes a label index (bytes starting at its offset) into the symbol references of its
/// values. Only single-name label indices exist in practice; others are refused.
pub fn decode_label_index(bytes: &[u8]) -> Result<Vec<u32>, BlockError> {
    const S: &str = "label index";
    let body = checked_section(bytes).map_err(err(S))?;
    let mut d = Decbuf::new(body);
    let names = d.be32().map_err(err(S))?;
    let entries = d.be32().map_err(err(S))?;
    if names != 1 {
        return Err(BlockError::invalid(
            FILE,
            S,
            format!("label index over {names} names"),
        ));
    }
    if u64::from(entries) * 4 != d.len() as u64 {
        return Err(BlockError::invalid(
            FILE,
            S,
            format!("{entries} entries declared in {} bytes", d.len()),
        ));
    }
    let mut out = Vec::with_capacity(entries as usize);
    for _ in 0..entries {
        out.push(d.be32().map_err(err(S))?);
    }
    Ok(out)
}

/// How a [`Matcher`] compares a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchType {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~` (fully anchored)
    Regex,
    /// `!~` (fully anchored)
    NotRegex,
}

/// A label matcher as PromQL selectors use them. A missing label has the empty value.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// The label name.
    pub name: String,
    /// How to compare.
    pub kind: MatchType,
    /// The value or regular expression.
    pub value: String,
    re: Option<regex::Regex>,
}

impl Matcher {
    /// A matcher; regular expressions are anchored at both ends as in Prometheus.
    pub fn new(
        kind: MatchType,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Self, regex::Error> {
        let value = value.into();
        let re = match kind {
            MatchType::Regex | MatchType::NotRegex => {
                Some(regex::Regex::new(&format!("^(?s:{value})$"))?)
            }
            MatchType::Equal | MatchType::NotEqual => None,
        };
        Ok(Self {
            name: name.into(),
            kind,
            value,
            re,
        })
    }

    /// Whether `value` satisfies the matcher.
    pub fn matches(&self, value: &str) -> bool {
        match (self.kind, &self.re) {
            (MatchType::Equal, _) => value == self.value,
            (MatchType::NotEqual, _) => value != self.value,
            (MatchType::Regex, Some(re)) => re.is_match(value),
            (MatchType::NotRegex, Some(re)) => !re.is_match(value),
            (MatchType::Regex | MatchType::NotRegex, None) => false,
        }
    }
}

/// A whole index file in memory, checked on open (header, TOC, symbol table, postings offset
/// table); series and postings are decoded on demand.
#[derive(Debug)]
pub struct IndexReader<'a> {
    bytes: &'a [u8],
    version: u8,
    toc: Toc,
    symbols: Symbols,
    postings: PostingsOffsetTable,
}

impl<'a> IndexReader<'a> {
    /// Opens an index held in memory.
    pub fn new(bytes: &'a [u8]) -> Result<Self, BlockError> {
        let version = parse_header(bytes)?;
        let toc = Toc::parse(bytes)?;
        toc.check_bounds(bytes.len() as u64)?;
        let symbols = Symbols::parse(at(bytes, toc.symbols))?;
        let postings =
            PostingsOffsetTable::parse(at(bytes, toc.postings_table), toc.postings_end())?;
        Ok(Self {
            bytes,
            version,
            toc,
            symbols,
            postings,
        })
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The table of contents.
    pub fn toc(&self) -> &Toc {
        &self.toc
    }

    /// The symbol table.
    pub fn symbols(&self) -> &Symbols {
        &self.symbols
    }

    /// The postings offset table.
    pub fn postings_table(&self) -> &PostingsOffsetTable {
        &self.postings
    }

    /// Label names in order.
    pub fn label_names(&self) -> Vec<&str> {
        self.postings.label_names().collect()
    }

    /// Values of label `name` in order.
    pub fn label_values(&self, name: &str) -> Vec<&str> {
        self.postings.label_values(name).collect()
    }

    /// References of the series with label `name`=`value` (empty when there are none).
    pub fn postings(&self, name: &str, value: &str) -> Result<Vec<u32>, BlockError> {
        match self.postings.range(name, value) {
            Some(r) => self.read_postings(&r),
            None => Ok(Vec::new()),
        }
    }

    /// References of every series, in order.
    pub fn all_postings(&self) -> Result<Vec<u32>, BlockError> {
        self.postings("", "")
    }

    fn read_postings(&self, r: &Range<u64>) -> Result<Vec<u32>, BlockError> {
        decode_postings(at(self.bytes, r.start))?.to_vec()
    }

    /// The series with reference `series_ref` (its offset divided by 16).
    pub fn series(&self, series_ref: u32) -> Result<SeriesEntry, BlockError> {
        let off = u64::from(series_ref) * SERIES_ALIGNMENT;
        if off < self.toc.series || off >= self.toc.label_indices.max(self.toc.series + 1) {
            return Err(BlockError::invalid(
                FILE,
                "series",
                format!("series reference {series_ref} outside the series section"),
            ));
        }
        decode_series(at(self.bytes, off), &self.symbols)
    }

    /// References of the series selected by all of `matchers`, in order, computed from
    /// postings as Prometheus does: intersect what must match, subtract what must not.
    /// No matchers select every series.
    pub fn select(&self, matchers: &[Matcher]) -> Result<Vec<u32>, BlockError> {
        let mut positive: Vec<Vec<u32>> = Vec::new();
        let mut negative: Vec<Vec<u32>> = Vec::new();
        for m in matchers {
            if m.matches("") {
                // Series without the label match; subtract those whose value does not.
                let lists = self.lists_where(&m.name, |v| !m.matches(v))?;
                if !lists.is_empty() {
                    negative.push(union(lists));
                }
            } else {
                let lists = self.lists_where(&m.name, |v| m.matches(v))?;
                positive.push(union(lists));
            }
        }
        let base = if positive.is_empty() {
            self.all_postings()?
        } else {
            intersect(positive)
        };
        Ok(negative.into_iter().fold(base, |acc, n| subtract(&acc, &n)))
    }

    fn lists_where(
        &self,
        name: &str,
        keep: impl FnMut(&str) -> bool,
    ) -> Result<Vec<Vec<u32>>, BlockError> {
        self.postings
            .ranges_matching(name, keep)
            .map(|(_, r)| self.read_postings(&r))
            .collect()
    }

    /// The label indices, name → values, when the index has them (blocks written by
    /// Prometheus up to 2.x do; newer ones point the label offset table at the postings
    /// offset table instead, and this returns an empty list).
    pub fn label_indices(&self) -> Result<Vec<(String, Vec<String>)>, BlockError> {
        let t = self.toc.label_indices_table;
        if t == 0 || t == self.toc.postings_table {
            return Ok(Vec::new());
        }
        let table = parse_label_offset_table(at(self.bytes, t))?;
        let mut out = Vec::with_capacity(table.len());
        for (name, off) in table {
            let refs = decode_label_index(at(self.bytes, off))?;
            let values = refs
                .into_iter()
                .map(|r| self.symbols.lookup(r).map(str::to_owned))
                .collect::<Result<Vec<_>, _>>()?;
            out.push((name, values));
        }
        Ok(out)
    }
}

/// The bytes of `b` from `off` on (empty when `off` is past the end).
fn at(b: &[u8], off: u64) -> &[u8] {
    usize::try_from(off)
        .ok()
        .and_then(|o| b.get(o..))
        .unwrap_or_default()
}
