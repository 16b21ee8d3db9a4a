//! The index-header's postings offset table, sampled as Thanos samples it
//! (`--store.index-header-posting-offsets-in-mem-sampling`): memory holds every n-th value of
//! each label name, its first and last always, with where its entry lies in the local
//! index-header file. A lookup binary-searches the samples, then reads and decodes only the
//! entries between two of them from that file (a positioned read of at most n entries; a
//! regular expression or a label's values read the name's entries once). Prometheus's reader
//! keeps every entry: on blocks with many label values that table is most of a header's memory.
//!
//! The file is checked when the table is built (CRC, order, increasing offsets), and every
//! read is decoded again with bounds checks: a file changed underneath is an error, never a
//! panic.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;

use gauntlet_tsdb::block::{BlockError, PostingsOffsetEntries};

use super::header::ReadError;

/// Values kept in memory per label name: one in this many (Thanos's default).
pub const DEFAULT_SAMPLING: usize = 32;

const SECTION: &str = "postings offset table";

/// A value kept in memory.
#[derive(Debug)]
struct Sample {
    value: String,
    /// Where its postings list starts in the index.
    offset: u64,
    /// Where its entry starts in the local file.
    at: u64,
}

/// One label name's part of the table.
#[derive(Debug)]
struct Name {
    name: String,
    /// Every n-th value, the first and the last included, in order.
    samples: Vec<Sample>,
    /// Number of values.
    values: usize,
    /// Where the entry after its last one starts in the local file.
    end: u64,
}

impl Name {
    fn all_in_memory(&self) -> bool {
        self.samples.len() == self.values
    }
}

/// The sampled table of one block.
#[derive(Debug)]
pub struct SampledPostingsTable {
    names: Vec<Name>,
    /// Where the postings section ends, bounding the last list's range.
    postings_end: u64,
    /// The local index-header holding the whole table, opened for each read (a store with
    /// thousands of blocks keeps no descriptor per block); `None` when every entry is in
    /// memory.
    file: Option<PathBuf>,
}

fn invalid(detail: impl Into<String>) -> BlockError {
    BlockError::invalid("index", SECTION, detail.into())
}

impl SampledPostingsTable {
    /// Builds the table from its bytes as found in the index (from [`Toc::postings_table`]),
    /// which the file at `file` holds from position `table_at`; keeps one value in `sampling`
    /// of each name. Without a file, every entry is kept.
    ///
    /// [`Toc::postings_table`]: gauntlet_tsdb::block::Toc::postings_table
    pub fn parse(
        table: &[u8],
        postings_end: u64,
        sampling: usize,
        file: Option<(PathBuf, u64)>,
    ) -> Result<Self, BlockError> {
        let (body, count) = PostingsOffsetEntries::table_body(table)?;
        let sampling = if file.is_some() { sampling.max(1) } else { 1 };
        // The body follows the section's 4-byte length; its entries follow the 4-byte count.
        let base = file.as_ref().map_or(0, |(_, at)| *at) + 8;
        let entries = body.get(4..).unwrap_or_default();
        let mut names: Vec<Name> = Vec::new();
        // The current name's last entry: value, offset, position.
        let mut last: Option<(&str, u64, u64)> = None;
        let mut last_offset: Option<u64> = None;
        let mut seen: u64 = 0;
        for entry in PostingsOffsetEntries::new(entries) {
            let entry = entry?;
            seen += 1;
            let at = base + entry.at as u64;
            if last_offset.is_some_and(|l| l >= entry.offset) || entry.offset >= postings_end {
                return Err(invalid(format!(
                    "postings offset {} out of order or past the postings",
                    entry.offset
                )));
            }
            last_offset = Some(entry.offset);
            let sample = Sample {
                value: entry.value.to_owned(),
                offset: entry.offset,
                at,
            };
            match names.last_mut() {
                Some(current) if current.name == entry.name => {
                    if last.is_some_and(|(v, _, _)| v >= entry.value) {
                        return Err(invalid("values not sorted"));
                    }
                    if current.values % sampling == 0 {
                        current.samples.push(sample);
                    }
                    current.values += 1;
                }
                Some(current) if current.name.as_str() > entry.name => {
                    return Err(invalid("names not sorted"));
                }
                _ => {
                    if let Some(current) = names.last_mut() {
                        close(current, last, at);
                    }
                    names.push(Name {
                        name: entry.name.to_owned(),
                        samples: vec![sample],
                        values: 1,
                        end: at,
                    });
                }
            }
            last = Some((entry.value, entry.offset, at));
        }
        if seen != u64::from(count) {
            return Err(invalid(format!("{seen} entries, {count} announced")));
        }
        let end = base + entries.len() as u64;
        if let Some(current) = names.last_mut() {
            close(current, last, end);
        }
        for name in &mut names {
            name.samples.shrink_to_fit();
        }
        names.shrink_to_fit();
        Ok(Self {
            names,
            postings_end,
            file: file.map(|(f, _)| f),
        })
    }

    /// Label names in order, the empty name of the all-series list excluded.
    pub fn label_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.names
            .iter()
            .map(|n| n.name.as_str())
            .filter(|n| !n.is_empty())
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.names
            .binary_search_by(|n| n.name.as_str().cmp(name))
            .ok()
    }

    /// Values of label `name` in order.
    pub fn label_values(&self, name: &str) -> Result<Vec<String>, ReadError> {
        let Some(ni) = self.find(name) else {
            return Ok(Vec::new());
        };
        let (entries, _) = self.entries(ni, 0, None)?;
        Ok(entries.into_iter().map(|(v, _)| v).collect())
    }

    /// Byte range in the index holding the postings list of `name`=`value` (possibly with
    /// trailing padding), or `None` when no series has that label.
    pub fn range(&self, name: &str, value: &str) -> Result<Option<Range<u64>>, ReadError> {
        let Some(ni) = self.find(name) else {
            return Ok(None);
        };
        let samples = &self.names[ni].samples;
        let after = samples.partition_point(|s| s.value.as_str() <= value);
        let Some(i) = after.checked_sub(1) else {
            return Ok(None);
        };
        let to = (after < samples.len()).then_some(after);
        let (entries, next) = self.entries(ni, i, to)?;
        let Some(k) = entries.iter().position(|(v, _)| v == value) else {
            return Ok(None);
        };
        let end = entries.get(k + 1).map_or(next, |(_, o)| *o);
        Ok(Some(entries[k].1..end))
    }

    /// Byte range of the list of every series.
    pub fn all_postings_range(&self) -> Result<Option<Range<u64>>, ReadError> {
        self.range("", "")
    }

    /// Byte ranges of the postings lists of every value of `name` for which `keep` holds, in
    /// value order.
    pub fn ranges_matching(
        &self,
        name: &str,
        mut keep: impl FnMut(&str) -> bool,
    ) -> Result<Vec<Range<u64>>, ReadError> {
        let Some(ni) = self.find(name) else {
            return Ok(Vec::new());
        };
        let (entries, next) = self.entries(ni, 0, None)?;
        let mut out = Vec::new();
        for (k, (value, offset)) in entries.iter().enumerate() {
            if keep(value) {
                let end = entries.get(k + 1).map_or(next, |(_, o)| *o);
                out.push(*offset..end);
            }
        }
        Ok(out)
    }

    /// Number of label name/value pairs, the all-series entry included.
    pub fn len(&self) -> usize {
        self.names.iter().map(|n| n.values).sum()
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Values kept in memory.
    pub fn sampled(&self) -> usize {
        self.names.iter().map(|n| n.samples.len()).sum()
    }

    /// The values and postings offsets of name `ni` from sample `from` up to sample `to`
    /// (excluded; `None`: to the name's last value), and the postings offset of the entry
    /// that follows them.
    fn entries(
        &self,
        ni: usize,
        from: usize,
        to: Option<usize>,
    ) -> Result<(Vec<(String, u64)>, u64), ReadError> {
        let name = &self.names[ni];
        let next = match to {
            Some(j) => name.samples[j].offset,
            None => self
                .names
                .get(ni + 1)
                .and_then(|n| n.samples.first())
                .map_or(self.postings_end, |s| s.offset),
        };
        let file = match &self.file {
            Some(file) if !name.all_in_memory() => file,
            _ => {
                let upto = to.unwrap_or(name.samples.len());
                let entries = name.samples[from..upto]
                    .iter()
                    .map(|s| (s.value.clone(), s.offset))
                    .collect();
                return Ok((entries, next));
            }
        };
        let start = name.samples[from].at;
        let end = to.map_or(name.end, |j| name.samples[j].at);
        let len = usize::try_from(end.saturating_sub(start))
            .map_err(|_| invalid("entries past the address space"))?;
        let mut buf = vec![0; len];
        File::open(file)?.read_exact_at(&mut buf, start)?;
        let mut out = Vec::new();
        for entry in PostingsOffsetEntries::new(&buf) {
            let entry = entry?;
            if entry.name != name.name {
                return Err(invalid("local index-header changed: entry of another name").into());
            }
            out.push((entry.value.to_owned(), entry.offset));
        }
        if out.first().map(|(_, o)| *o) != Some(name.samples[from].offset) {
            return Err(invalid("local index-header changed: sample moved").into());
        }
        Ok((out, next))
    }
}

/// Ends `name` at `end`, keeping its last value when sampling skipped it.
fn close(name: &mut Name, last: Option<(&str, u64, u64)>, end: u64) {
    name.end = end;
    if let Some((value, offset, at)) = last
        && name.samples.last().is_some_and(|s| s.at != at)
    {
        name.samples.push(Sample {
            value: value.to_owned(),
            offset,
            at,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use gauntlet_tsdb::block::PostingsOffsetTable;
    use gauntlet_tsdb::block::encoding::crc32c;

    use super::*;

    fn uvarint(out: &mut Vec<u8>, mut x: u64) {
        while x >= 0x80 {
            out.push((x as u8) | 0x80);
            x >>= 7;
        }
        out.push(x as u8);
    }

    /// A postings offset table as an index holds it, for `pairs` in order with increasing
    /// offsets.
    fn table(pairs: &[(String, String)]) -> Vec<u8> {
        let mut body = (pairs.len() as u32).to_be_bytes().to_vec();
        for (i, (name, value)) in pairs.iter().enumerate() {
            uvarint(&mut body, 2);
            uvarint(&mut body, name.len() as u64);
            body.extend_from_slice(name.as_bytes());
            uvarint(&mut body, value.len() as u64);
            body.extend_from_slice(value.as_bytes());
            uvarint(&mut body, 100 + 20 * i as u64);
        }
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32c(&body).to_be_bytes());
        out
    }

    fn pairs() -> Vec<(String, String)> {
        let mut pairs = vec![(String::new(), String::new())];
        for v in 0..10 {
            pairs.push(("a".into(), format!("v{v}")));
        }
        pairs.push(("job".into(), "only".into()));
        for v in 0..1000 {
            pairs.push(("instance".into(), format!("host-{v:04}")));
        }
        pairs.sort();
        pairs
    }

    /// The table written into a file after `prefix` junk bytes, sampled.
    fn sampled(
        bytes: &[u8],
        end: u64,
        sampling: usize,
    ) -> (SampledPostingsTable, tempfile::NamedTempFile) {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        let prefix = [7u8; 13];
        file.write_all(&prefix).expect("write");
        file.write_all(bytes).expect("write");
        file.flush().expect("flush");
        let at = Some((file.path().to_owned(), 13));
        let t = SampledPostingsTable::parse(bytes, end, sampling, at).expect("parse");
        (t, file)
    }

    #[test]
    fn sampled_lookups_match_the_full_table() {
        let pairs = pairs();
        let bytes = table(&pairs);
        let end = 100 + 20 * pairs.len() as u64 + 7;
        let full = PostingsOffsetTable::parse(&bytes, end).expect("full table");
        for sampling in [1, 2, 3, 32, 5000] {
            let (t, _file) = sampled(&bytes, end, sampling);
            assert_eq!(t.len(), full.len());
            assert!(t.sampled() <= full.len());
            if sampling == 32 {
                assert!(t.sampled() < full.len() / 10, "{} kept", t.sampled());
            }
            assert_eq!(
                t.label_names().collect::<Vec<_>>(),
                full.label_names().collect::<Vec<_>>()
            );
            assert_eq!(
                t.all_postings_range().expect("read"),
                full.all_postings_range()
            );
            for (name, value) in &pairs {
                assert_eq!(
                    t.range(name, value).expect("read"),
                    full.range(name, value),
                    "{name}={value} sampled 1 in {sampling}"
                );
            }
            for (name, value) in [
                ("instance", "host-"),
                ("instance", "host-0999x"),
                ("instance", "host-1000"),
                ("instance", "a"),
                ("instance", "z"),
                ("a", "v10"),
                ("nope", "v1"),
                ("", "x"),
            ] {
                assert_eq!(t.range(name, value).expect("read"), None, "{name}={value}");
            }
            for name in ["a", "instance", "job", "nope"] {
                let values: Vec<String> = full.label_values(name).map(str::to_owned).collect();
                assert_eq!(t.label_values(name).expect("read"), values, "{name}");
                let keep = |v: &str| v.ends_with('7') || v.ends_with('0');
                let want: Vec<Range<u64>> =
                    full.ranges_matching(name, keep).map(|(_, r)| r).collect();
                assert_eq!(t.ranges_matching(name, keep).expect("read"), want, "{name}");
            }
        }
    }

    #[test]
    fn without_a_file_every_entry_stays_in_memory() {
        let pairs = pairs();
        let bytes = table(&pairs);
        let end = 100 + 20 * pairs.len() as u64;
        let t = SampledPostingsTable::parse(&bytes, end, 32, None).expect("parse");
        assert_eq!(t.sampled(), t.len());
        let full = PostingsOffsetTable::parse(&bytes, end).expect("full table");
        assert_eq!(
            t.range("instance", "host-0500").expect("read"),
            full.range("instance", "host-0500")
        );
    }

    #[test]
    fn a_damaged_table_or_file_is_an_error() {
        let pairs = pairs();
        let mut bytes = table(&pairs);
        let end = 100 + 20 * pairs.len() as u64;
        let n = bytes.len();
        bytes[n / 2] ^= 0xff;
        assert!(
            SampledPostingsTable::parse(&bytes, end, 32, None).is_err(),
            "CRC"
        );
        let bytes = table(&pairs);
        let (t, file) = sampled(&bytes, end, 32);
        // The file changes after the table was built: lookups fail, they do not panic.
        std::fs::write(file.path(), vec![0xffu8; bytes.len() + 13]).expect("overwrite");
        assert!(t.range("instance", "host-0501").is_err());
        assert!(t.label_values("instance").is_err());
    }
}
