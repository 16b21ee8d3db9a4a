//! Writes a complete block: chunk segment files as series arrive, then the `index`, an empty
//! `tombstones` file and `meta.json` last, each streamed through a [`std::io::Write`] sink.
//!
//! Memory stays proportional to the number of series and chunks, never to the number of
//! samples: chunk bytes go straight to the segment sink, and per series only its label
//! references (into an interned string table) and its chunk metas are kept until the index is
//! written. The index needs the full symbol table before the first series entry and every
//! series before the postings, which is what forces keeping those. Files are written
//! front to back, without seeking.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::chunks::{
    DEFAULT_SEGMENT_SIZE, MAX_CHUNK_OVERHEAD, SEGMENT_HEADER_LEN, encode_chunk, segment_file_name,
    segment_header,
};
use super::encoding::{crc32c, crc32c_append, put_uvarint, put_varint, uvarint_len};
use super::error::WriteError;
use super::index::{ChunkMeta, INDEX_MAGIC, INDEX_VERSION, SERIES_ALIGNMENT, Toc};
use super::meta::{BlockCompaction, BlockFile, BlockMeta, BlockStats, META_VERSION, ThanosMeta};
use super::tombstones::encode_tombstones;
use super::ulid::Ulid;
use crate::chunkenc::{ENCODING_XOR, XorChunk};
use crate::histogram_chunk::{ENCODING_FLOAT_HISTOGRAM, ENCODING_HISTOGRAM};
use crate::labels::Labels;

/// Samples per chunk when the writer encodes raw samples, as Prometheus's head does.
pub const SAMPLES_PER_CHUNK: usize = 120;

/// Where the files of a block go. `create` opens a file by its path relative to the block
/// directory (`chunks/000001`, `index`, `tombstones`, `meta.json`); `finish` is called once it
/// is completely written.
pub trait BlockSink {
    /// A file being written.
    type File: Write;
    /// Opens `rel_path` for writing.
    fn create(&mut self, rel_path: &str) -> std::io::Result<Self::File>;
    /// Completes `rel_path` (flush, sync, close).
    fn finish(&mut self, rel_path: &str, file: Self::File) -> std::io::Result<()>;
}

/// Writes a block's files under a directory with `std::fs` (works on `wasm32-wasip2` with a
/// preopened directory too).
#[derive(Debug, Clone)]
pub struct DirSink {
    dir: PathBuf,
}

impl DirSink {
    /// Files go under `dir`, which is created as needed.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The block directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl BlockSink for DirSink {
    type File = std::io::BufWriter<std::fs::File>;

    fn create(&mut self, rel_path: &str) -> std::io::Result<Self::File> {
        let path = self.dir.join(rel_path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        Ok(std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(path)?,
        ))
    }

    fn finish(&mut self, _rel_path: &str, file: Self::File) -> std::io::Result<()> {
        let file = file
            .into_inner()
            .map_err(std::io::IntoInnerError::into_error)?;
        file.sync_all()
    }
}

/// Keeps a block's files in memory (tests, or uploading to object storage from a plugin).
#[derive(Debug, Clone, Default)]
pub struct MemorySink {
    /// Finished files by path relative to the block directory.
    pub files: std::collections::BTreeMap<String, Vec<u8>>,
}

impl BlockSink for MemorySink {
    type File = Vec<u8>;

    fn create(&mut self, _rel_path: &str) -> std::io::Result<Vec<u8>> {
        Ok(Vec::new())
    }

    fn finish(&mut self, rel_path: &str, file: Vec<u8>) -> std::io::Result<()> {
        self.files.insert(rel_path.to_owned(), file);
        Ok(())
    }
}

/// An encoded chunk handed to [`BlockWriter::add_chunks`].
#[derive(Debug, Clone, Copy)]
pub struct EncodedChunk<'a> {
    /// Timestamp of the first sample.
    pub min_time: i64,
    /// Timestamp of the last sample.
    pub max_time: i64,
    /// 1 = XOR, 2 = histogram, 3 = float histogram.
    pub encoding: u8,
    /// The chunk's bytes, sample count header included.
    pub data: &'a [u8],
}

/// Settings of a [`BlockWriter`].
#[derive(Debug, Clone)]
pub struct BlockWriterOptions {
    /// Largest segment file; a chunk that would overflow it starts a new one.
    pub segment_size: u64,
    /// The block's ULID; generated when `None`.
    pub ulid: Option<Ulid>,
    /// `(minTime, maxTime)` for `meta.json`; by default the first sample's time and the last
    /// sample's time plus one.
    pub time_range: Option<(i64, i64)>,
    /// The `thanos` section; when set, its `files` and `segment_files` are filled in.
    pub thanos: Option<ThanosMeta>,
    /// Samples per chunk for [`BlockWriter::add_samples`].
    pub samples_per_chunk: usize,
}

impl Default for BlockWriterOptions {
    fn default() -> Self {
        Self {
            segment_size: DEFAULT_SEGMENT_SIZE,
            ulid: None,
            time_range: None,
            thanos: None,
            samples_per_chunk: SAMPLES_PER_CHUNK,
        }
    }
}

/// Strings interned once: labels are kept as pairs of ids.
#[derive(Default)]
struct Interner {
    ids: HashMap<Arc<str>, u32>,
    strings: Vec<Arc<str>>,
}

impl Interner {
    fn intern(&mut self, s: &str) -> Result<u32, WriteError> {
        if let Some(&id) = self.ids.get(s) {
            return Ok(id);
        }
        let id = u32::try_from(self.strings.len())
            .map_err(|_| WriteError::Input("more than 2^32 distinct label strings".into()))?;
        let s: Arc<str> = Arc::from(s);
        self.strings.push(s.clone());
        self.ids.insert(s, id);
        Ok(id)
    }
}

struct PendingSeries {
    /// (name id, value id) in label order.
    labels: Box<[(u32, u32)]>,
    chunks: Box<[ChunkMeta]>,
}

struct OpenSegment<F> {
    index: u32,
    file: F,
    pos: u64,
}

/// Writes one block. Series must be added in strictly increasing label order (as
/// [`Labels::compare`] orders them), which is also the order their chunks are written in.
pub struct BlockWriter<S: BlockSink> {
    sink: S,
    options: BlockWriterOptions,
    ulid: Ulid,
    interner: Interner,
    series: Vec<PendingSeries>,
    last_labels: Option<Labels>,
    segment: Option<OpenSegment<S::File>>,
    files: Vec<(String, u64)>,
    stats: BlockStats,
    min_time: i64,
    max_time: i64,
    chunk_max_size: u64,
    buf: Vec<u8>,
}

impl<S: BlockSink> BlockWriter<S> {
    /// A writer for a new block.
    pub fn new(sink: S, options: BlockWriterOptions) -> Result<Self, WriteError> {
        let ulid = match options.ulid {
            Some(u) => u,
            None => Ulid::generate().map_err(|e| WriteError::Input(e.to_string()))?,
        };
        if options.segment_size < (SEGMENT_HEADER_LEN + MAX_CHUNK_OVERHEAD) as u64
            || options.segment_size > u64::from(u32::MAX)
        {
            return Err(WriteError::Input(format!(
                "segment size {} outside 18 B .. 4 GiB",
                options.segment_size
            )));
        }
        if options.samples_per_chunk == 0 || options.samples_per_chunk > usize::from(u16::MAX) {
            return Err(WriteError::Input(
                "samples per chunk must be 1..=65535".into(),
            ));
        }
        Ok(Self {
            sink,
            options,
            ulid,
            interner: Interner::default(),
            series: Vec::new(),
            last_labels: None,
            segment: None,
            files: Vec::new(),
            stats: BlockStats::default(),
            min_time: i64::MAX,
            max_time: i64::MIN,
            chunk_max_size: 0,
            buf: Vec::new(),
        })
    }

    /// The block's ULID.
    pub fn ulid(&self) -> Ulid {
        self.ulid
    }

    /// Adds a series from raw float samples (strictly increasing timestamps), encoded as XOR
    /// chunks of [`BlockWriterOptions::samples_per_chunk`] samples.
    pub fn add_samples(
        &mut self,
        labels: &Labels,
        samples: &[(i64, f64)],
    ) -> Result<(), WriteError> {
        if samples.windows(2).any(|w| w[1].0 <= w[0].0) {
            return Err(WriteError::Input(format!(
                "series {labels}: sample timestamps not strictly increasing"
            )));
        }
        let mut encoded =
            Vec::with_capacity(samples.len().div_ceil(self.options.samples_per_chunk));
        for part in samples.chunks(self.options.samples_per_chunk) {
            let mut c = XorChunk::new();
            for &(t, v) in part {
                c.append(t, v)
                    .map_err(|e| WriteError::Input(format!("series {labels}: {e}")))?;
            }
            encoded.push((part[0].0, part[part.len() - 1].0, c.into_bytes()));
        }
        let chunks: Vec<EncodedChunk<'_>> = encoded
            .iter()
            .map(|(min_time, max_time, data)| EncodedChunk {
                min_time: *min_time,
                max_time: *max_time,
                encoding: ENCODING_XOR,
                data,
            })
            .collect();
        self.add_chunks(labels, &chunks)
    }

    /// Adds a series with its encoded chunks, in time order and not overlapping.
    pub fn add_chunks(
        &mut self,
        labels: &Labels,
        chunks: &[EncodedChunk<'_>],
    ) -> Result<(), WriteError> {
        if labels.is_empty() {
            return Err(WriteError::Input("series without labels".into()));
        }
        if let Some(last) = &self.last_labels
            && labels.compare(last) != std::cmp::Ordering::Greater
        {
            return Err(WriteError::Input(format!(
                "series {labels} added after {last}: series must be in increasing label order"
            )));
        }
        for (i, c) in chunks.iter().enumerate() {
            if c.max_time < c.min_time {
                return Err(WriteError::Input(format!(
                    "series {labels}: chunk maxTime {} before minTime {}",
                    c.max_time, c.min_time
                )));
            }
            if i > 0 && c.min_time <= chunks[i - 1].max_time {
                return Err(WriteError::Input(format!(
                    "series {labels}: chunks overlap or are out of order"
                )));
            }
            if !matches!(
                c.encoding,
                ENCODING_XOR | ENCODING_HISTOGRAM | ENCODING_FLOAT_HISTOGRAM
            ) || c.data.len() < 2
            {
                return Err(WriteError::Input(format!(
                    "series {labels}: chunk with encoding {} and {} bytes",
                    c.encoding,
                    c.data.len()
                )));
            }
        }
        let mut ids = Vec::with_capacity(labels.len());
        for l in labels.iter() {
            ids.push((
                self.interner.intern(&l.name)?,
                self.interner.intern(&l.value)?,
            ));
        }
        let mut metas = Vec::with_capacity(chunks.len());
        for c in chunks {
            let chunk_ref = self.write_chunk(c)?;
            metas.push(ChunkMeta {
                min_time: c.min_time,
                max_time: c.max_time,
                chunk_ref,
            });
            let n = u64::from(u16::from_be_bytes([c.data[0], c.data[1]]));
            self.stats.num_samples += n;
            if c.encoding == ENCODING_XOR {
                self.stats.num_float_samples += n;
            } else {
                self.stats.num_histogram_samples += n;
            }
            self.stats.num_chunks += 1;
            self.min_time = self.min_time.min(c.min_time);
            self.max_time = self.max_time.max(c.max_time);
        }
        self.stats.num_series += 1;
        self.series.push(PendingSeries {
            labels: ids.into_boxed_slice(),
            chunks: metas.into_boxed_slice(),
        });
        self.last_labels = Some(labels.clone());
        Ok(())
    }

    fn write_chunk(&mut self, c: &EncodedChunk<'_>) -> Result<u64, WriteError> {
        self.buf.clear();
        encode_chunk(c.encoding, c.data, &mut self.buf);
        let size = self.buf.len() as u64;
        if size + SEGMENT_HEADER_LEN as u64 > u64::from(u32::MAX) {
            return Err(WriteError::Input(
                "chunk larger than a segment can hold".into(),
            ));
        }
        self.chunk_max_size = self.chunk_max_size.max(size);
        let cut = match &self.segment {
            None => true,
            Some(s) => {
                s.pos > SEGMENT_HEADER_LEN as u64 && s.pos + size > self.options.segment_size
            }
        };
        if cut {
            let index = match self.segment.take() {
                Some(s) => {
                    self.finish_segment(s)?;
                    self.files.len()
                }
                None => 0,
            };
            let index = u32::try_from(index)
                .map_err(|_| WriteError::Input("too many segment files".into()))?;
            let name = segment_file_name(index);
            let mut file = self
                .sink
                .create(&name)
                .map_err(|e| WriteError::io(&name, e))?;
            file.write_all(&segment_header())
                .map_err(|e| WriteError::io(&name, e))?;
            self.segment = Some(OpenSegment {
                index,
                file,
                pos: SEGMENT_HEADER_LEN as u64,
            });
        }
        let Some(seg) = self.segment.as_mut() else {
            return Err(WriteError::Input("no open segment".into()));
        };
        let offset = u32::try_from(seg.pos)
            .map_err(|_| WriteError::Input("segment offset over 4 GiB".into()))?;
        seg.file
            .write_all(&self.buf)
            .map_err(|e| WriteError::io(segment_file_name(seg.index), e))?;
        seg.pos += size;
        Ok((u64::from(seg.index) << 32) | u64::from(offset))
    }

    fn finish_segment(&mut self, s: OpenSegment<S::File>) -> Result<(), WriteError> {
        let name = segment_file_name(s.index);
        self.sink
            .finish(&name, s.file)
            .map_err(|e| WriteError::io(&name, e))?;
        self.files.push((name, s.pos));
        Ok(())
    }

    /// Writes the index, the tombstones and `meta.json` (last), and returns the meta and the
    /// sink. A block needs at least one series.
    pub fn finish(mut self) -> Result<(BlockMeta, S), WriteError> {
        if self.series.is_empty() {
            return Err(WriteError::Input(
                "a block needs at least one series".into(),
            ));
        }
        if let Some(s) = self.segment.take() {
            self.finish_segment(s)?;
        }
        let index_size = {
            let mut file = self
                .sink
                .create("index")
                .map_err(|e| WriteError::io("index", e))?;
            let (size, series_max) = {
                let mut out = Out::new(&mut file);
                let series_max = write_index(&mut out, &self.interner, &self.series)?;
                (out.pos, series_max)
            };
            self.sink
                .finish("index", file)
                .map_err(|e| WriteError::io("index", e))?;
            if let Some(t) = self.options.thanos.as_mut() {
                t.index_stats = Some(super::meta::IndexStats {
                    series_max_size: series_max,
                    chunk_max_size: self.chunk_max_size,
                });
            }
            size
        };
        let tombstones = encode_tombstones(&[]);
        write_file(&mut self.sink, "tombstones", &tombstones)?;

        let (min_time, max_time) = self
            .options
            .time_range
            .unwrap_or((self.min_time, self.max_time.saturating_add(1)));
        if min_time > max_time {
            return Err(WriteError::Input(format!(
                "time range {min_time}..{max_time} is inverted"
            )));
        }
        let ulid = self.ulid.to_string();
        let mut thanos = self.options.thanos.take();
        if let Some(t) = thanos.as_mut() {
            t.segment_files = self
                .files
                .iter()
                .map(|(n, _)| n.trim_start_matches("chunks/").to_owned())
                .collect();
            let mut files: Vec<BlockFile> = self
                .files
                .iter()
                .map(|(n, size)| BlockFile {
                    rel_path: n.clone(),
                    size_bytes: *size,
                    hash: None,
                })
                .collect();
            files.push(BlockFile {
                rel_path: "index".into(),
                size_bytes: index_size,
                hash: None,
            });
            files.push(BlockFile {
                rel_path: "meta.json".into(),
                size_bytes: 0,
                hash: None,
            });
            t.files = files;
        }
        let meta = BlockMeta {
            ulid: ulid.clone(),
            min_time,
            max_time,
            stats: self.stats.clone(),
            compaction: BlockCompaction {
                level: 1,
                sources: vec![ulid],
                ..BlockCompaction::default()
            },
            version: META_VERSION,
            thanos,
            extra: std::collections::BTreeMap::new(),
        };
        write_file(&mut self.sink, "meta.json", &meta.to_json())?;
        Ok((meta, self.sink))
    }
}

fn write_file<S: BlockSink>(sink: &mut S, name: &str, bytes: &[u8]) -> Result<(), WriteError> {
    let mut f = sink.create(name).map_err(|e| WriteError::io(name, e))?;
    f.write_all(bytes).map_err(|e| WriteError::io(name, e))?;
    sink.finish(name, f).map_err(|e| WriteError::io(name, e))
}

/// A sink that counts what it wrote.
struct Out<'w, W: Write> {
    w: &'w mut W,
    pos: u64,
}

impl<'w, W: Write> Out<'w, W> {
    fn new(w: &'w mut W) -> Self {
        Self { w, pos: 0 }
    }

    fn write(&mut self, b: &[u8]) -> Result<(), WriteError> {
        self.w
            .write_all(b)
            .map_err(|e| WriteError::io("index", e))?;
        self.pos += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self, align: u64) -> Result<(), WriteError> {
        let rem = self.pos % align;
        if rem != 0 {
            let zeros = [0u8; 16];
            // `align` is at most 16.
            #[allow(clippy::cast_possible_truncation)]
            self.write(&zeros[..(align - rem) as usize])?;
        }
        Ok(())
    }
}

fn too_large(what: &str) -> WriteError {
    WriteError::Input(format!("index {what} exceeds the format's 32-bit limit"))
}

/// Writes the whole index; returns the largest series entry's size.
fn write_index<W: Write>(
    out: &mut Out<'_, W>,
    interner: &Interner,
    series: &[PendingSeries],
) -> Result<u64, WriteError> {
    let mut toc = Toc::default();
    let mut head = INDEX_MAGIC.to_be_bytes().to_vec();
    head.push(INDEX_VERSION);
    out.write(&head)?;

    // Symbols: sorted strings; `sym[id]` maps an interned id to its symbol reference.
    let mut order: Vec<u32> =
        (0..u32::try_from(interner.strings.len()).unwrap_or(u32::MAX)).collect();
    order
        .sort_unstable_by(|&a, &b| interner.strings[a as usize].cmp(&interner.strings[b as usize]));
    let mut sym = vec![0u32; order.len()];
    for (r, &id) in order.iter().enumerate() {
        sym[id as usize] = u32::try_from(r).map_err(|_| too_large("symbol count"))?;
    }
    toc.symbols = out.pos;
    let body_len: u64 = 4 + order
        .iter()
        .map(|&id| {
            let n = interner.strings[id as usize].len() as u64;
            uvarint_len(n) as u64 + n
        })
        .sum::<u64>();
    let body_len32 = u32::try_from(body_len).map_err(|_| too_large("symbol table"))?;
    out.write(&body_len32.to_be_bytes())?;
    let count = u32::try_from(order.len()).map_err(|_| too_large("symbol count"))?;
    let mut crc = crc32c(&count.to_be_bytes());
    out.write(&count.to_be_bytes())?;
    let mut buf = Vec::with_capacity(1 << 16);
    for &id in &order {
        let s = interner.strings[id as usize].as_bytes();
        put_uvarint(&mut buf, s.len() as u64);
        buf.extend_from_slice(s);
        if buf.len() >= 1 << 15 {
            crc = crc32c_append(crc, &buf);
            out.write(&buf)?;
            buf.clear();
        }
    }
    crc = crc32c_append(crc, &buf);
    out.write(&buf)?;
    out.write(&crc.to_be_bytes())?;

    // Series, 16-byte aligned; collect (name, value, series) triples for the postings.
    out.pad(SERIES_ALIGNMENT)?;
    toc.series = out.pos;
    let mut triples: Vec<(u32, u32, u32)> =
        Vec::with_capacity(series.iter().map(|s| s.labels.len()).sum());
    let mut all = Vec::with_capacity(series.len());
    let mut series_max = 0u64;
    for s in series {
        out.pad(SERIES_ALIGNMENT)?;
        let id =
            u32::try_from(out.pos / SERIES_ALIGNMENT).map_err(|_| too_large("series section"))?;
        all.push(id);
        buf.clear();
        put_uvarint(&mut buf, s.labels.len() as u64);
        for &(n, v) in &s.labels {
            let (n, v) = (sym[n as usize], sym[v as usize]);
            put_uvarint(&mut buf, u64::from(n));
            put_uvarint(&mut buf, u64::from(v));
            triples.push((n, v, id));
        }
        put_uvarint(&mut buf, s.chunks.len() as u64);
        let mut prev: Option<&ChunkMeta> = None;
        for c in &s.chunks {
            // Deltas are non-negative: the writer checked the order of times and references.
            #[allow(clippy::cast_sign_loss)]
            match prev {
                None => {
                    put_varint(&mut buf, c.min_time);
                    put_uvarint(&mut buf, c.max_time.wrapping_sub(c.min_time) as u64);
                    put_uvarint(&mut buf, c.chunk_ref);
                }
                Some(p) => {
                    put_uvarint(&mut buf, c.min_time.wrapping_sub(p.max_time) as u64);
                    put_uvarint(&mut buf, c.max_time.wrapping_sub(c.min_time) as u64);
                    #[allow(clippy::cast_possible_wrap)]
                    put_varint(&mut buf, c.chunk_ref.wrapping_sub(p.chunk_ref) as i64);
                }
            }
            prev = Some(c);
        }
        let mut len = Vec::with_capacity(5);
        put_uvarint(&mut len, buf.len() as u64);
        out.write(&len)?;
        out.write(&buf)?;
        out.write(&crc32c(&buf).to_be_bytes())?;
        series_max = series_max.max((len.len() + buf.len() + 4) as u64);
    }
    toc.label_indices = out.pos;

    // Postings grouped by (name, value) in symbol order, which is string order.
    triples.sort_unstable();
    let groups = group_postings(&triples);

    // Label indices: per name, the sorted symbol references of its values.
    let mut label_index_offsets: Vec<(u32, u64)> = Vec::new();
    let mut i = 0;
    while i < groups.len() {
        let name = groups[i].0;
        let j = i + groups[i..].iter().take_while(|g| g.0 == name).count();
        out.pad(4)?;
        label_index_offsets.push((name, out.pos));
        let n = u32::try_from(j - i).map_err(|_| too_large("label index"))?;
        buf.clear();
        buf.extend_from_slice(&1u32.to_be_bytes());
        buf.extend_from_slice(&n.to_be_bytes());
        for g in &groups[i..j] {
            buf.extend_from_slice(&g.1.to_be_bytes());
        }
        write_section(out, &buf, "label index")?;
        i = j;
    }

    // Postings: the list of every series first, then one list per label pair.
    out.pad(4)?;
    toc.postings = out.pos;
    let mut postings_offsets: Vec<u64> = Vec::with_capacity(groups.len() + 1);
    out.pad(4)?;
    postings_offsets.push(out.pos);
    write_postings(out, &mut buf, all.iter().copied(), all.len())?;
    for &(_, _, start, end) in &groups {
        out.pad(4)?;
        postings_offsets.push(out.pos);
        write_postings(
            out,
            &mut buf,
            triples[start..end].iter().map(|t| t.2),
            end - start,
        )?;
    }

    // Label offset table.
    toc.label_indices_table = out.pos;
    buf.clear();
    let n =
        u32::try_from(label_index_offsets.len()).map_err(|_| too_large("label offset table"))?;
    buf.extend_from_slice(&n.to_be_bytes());
    for &(name, off) in &label_index_offsets {
        buf.push(1);
        let s = interner.strings[order[name as usize] as usize].as_bytes();
        put_uvarint(&mut buf, s.len() as u64);
        buf.extend_from_slice(s);
        put_uvarint(&mut buf, off);
    }
    write_section(out, &buf, "label offset table")?;

    // Postings offset table, streamed: its length is computed first.
    toc.postings_table = out.pos;
    let name_of = |r: u32| interner.strings[order[r as usize] as usize].as_bytes();
    let entry_len = |n: &[u8], v: &[u8], off: u64| {
        1 + uvarint_len(n.len() as u64)
            + n.len()
            + uvarint_len(v.len() as u64)
            + v.len()
            + uvarint_len(off)
    };
    let mut body_len = 4 + entry_len(b"", b"", postings_offsets[0]) as u64;
    for (g, &off) in groups.iter().zip(&postings_offsets[1..]) {
        body_len += entry_len(name_of(g.0), name_of(g.1), off) as u64;
    }
    let body_len32 = u32::try_from(body_len).map_err(|_| too_large("postings offset table"))?;
    out.write(&body_len32.to_be_bytes())?;
    buf.clear();
    let count = u32::try_from(groups.len() + 1).map_err(|_| too_large("postings offset table"))?;
    buf.extend_from_slice(&count.to_be_bytes());
    let mut crc = 0u32;
    let entries = std::iter::once((&b""[..], &b""[..]))
        .chain(groups.iter().map(|g| (name_of(g.0), name_of(g.1))))
        .zip(&postings_offsets);
    for ((n, v), &off) in entries {
        buf.push(2);
        put_uvarint(&mut buf, n.len() as u64);
        buf.extend_from_slice(n);
        put_uvarint(&mut buf, v.len() as u64);
        buf.extend_from_slice(v);
        put_uvarint(&mut buf, off);
        if buf.len() >= 1 << 15 {
            crc = crc32c_append(crc, &buf);
            out.write(&buf)?;
            buf.clear();
        }
    }
    crc = crc32c_append(crc, &buf);
    out.write(&buf)?;
    out.write(&crc.to_be_bytes())?;

    out.write(&toc.encode())?;
    Ok(series_max)
}

/// Runs of equal (name, value) in sorted triples: (name, value, start, end).
fn group_postings(triples: &[(u32, u32, u32)]) -> Vec<(u32, u32, usize, usize)> {
    let mut groups = Vec::new();
    let mut start = 0;
    for i in 1..=triples.len() {
        if i == triples.len()
            || (triples[i].0, triples[i].1) != (triples[start].0, triples[start].1)
        {
            groups.push((triples[start].0, triples[start].1, start, i));
            start = i;
        }
    }
    groups
}

fn write_section<W: Write>(
    out: &mut Out<'_, W>,
    body: &[u8],
    what: &str,
) -> Result<(), WriteError> {
    let len = u32::try_from(body.len()).map_err(|_| too_large(what))?;
    out.write(&len.to_be_bytes())?;
    out.write(body)?;
    out.write(&crc32c(body).to_be_bytes())
}

fn write_postings<W: Write>(
    out: &mut Out<'_, W>,
    buf: &mut Vec<u8>,
    refs: impl Iterator<Item = u32>,
    n: usize,
) -> Result<(), WriteError> {
    buf.clear();
    let n32 = u32::try_from(n).map_err(|_| too_large("postings list"))?;
    buf.extend_from_slice(&n32.to_be_bytes());
    for r in refs {
        buf.extend_from_slice(&r.to_be_bytes());
    }
    write_section(out, buf, "postings list")
}

/// Writes a block of float series into a new directory `parent/<ULID>` (through a temporary
/// directory renamed at the end) and returns its meta and path. Series must be in increasing
/// label order with strictly increasing timestamps.
pub fn write_block_dir<'s>(
    parent: &Path,
    mut options: BlockWriterOptions,
    series: impl IntoIterator<Item = (&'s Labels, &'s [(i64, f64)])>,
) -> Result<(BlockMeta, PathBuf), WriteError> {
    let ulid = match options.ulid {
        Some(u) => u,
        None => Ulid::generate().map_err(|e| WriteError::Input(e.to_string()))?,
    };
    options.ulid = Some(ulid);
    let tmp = parent.join(format!("{ulid}.tmp-for-creation"));
    let mut w = BlockWriter::new(DirSink::new(&tmp), options)?;
    for (labels, samples) in series {
        w.add_samples(labels, samples)?;
    }
    let (meta, _) = w.finish()?;
    let dir = parent.join(ulid.to_string());
    std::fs::rename(&tmp, &dir).map_err(|e| WriteError::io(dir.display().to_string(), e))?;
    Ok((meta, dir))
}
