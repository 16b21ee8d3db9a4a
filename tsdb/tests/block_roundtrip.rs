//! Blocks written by `BlockWriter` read back with the sans-IO readers: every series, chunk and
//! sample, matcher selection, and typed errors (never panics) on corrupt or truncated files.

#![allow(clippy::unwrap_used)]

use gauntlet_tsdb::Labels;
use gauntlet_tsdb::block::encoding::crc32c;
use gauntlet_tsdb::block::index::{self, MatchType, Matcher, TOC_LEN};
use gauntlet_tsdb::block::{
    BlockError, BlockMeta, BlockWriter, BlockWriterOptions, ChunkRef, ChunksReader, IndexReader,
    MemorySink, PostingsOffsetTable, Symbols, ThanosMeta, Toc, Ulid, decode_chunk, decode_postings,
    decode_series, parse_tombstones,
};

type Series = Vec<(Labels, Vec<(i64, f64)>)>;

fn generate(n: usize, samples: usize) -> Series {
    let mut out: Series = (0..n)
        .map(|i| {
            let labels = Labels::from_pairs(&[
                (
                    "__name__",
                    if i % 3 == 0 {
                        "up"
                    } else {
                        "http_requests_total"
                    }
                    .to_owned(),
                ),
                ("instance", format!("host-{}", i % 17)),
                ("job", format!("job{}", i % 5)),
                ("series", format!("{i:05}")),
            ]);
            let samples = (0..samples)
                .map(|j| {
                    let t = 1_700_000_000_123 + (j as i64) * 15_000 + (i as i64 % 7);
                    (t, (i * 1000 + j) as f64 * 0.5)
                })
                .collect();
            (labels, samples)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn write(series: &Series, segment_size: u64) -> (BlockMeta, MemorySink) {
    let options = BlockWriterOptions {
        segment_size,
        ulid: Some(Ulid::from_parts(1_700_000_000_000, [7; 10])),
        ..BlockWriterOptions::default()
    };
    let mut w = BlockWriter::new(MemorySink::default(), options).unwrap();
    for (l, s) in series {
        w.add_samples(l, s).unwrap();
    }
    w.finish().unwrap()
}

fn segments(sink: &MemorySink) -> Vec<&[u8]> {
    sink.files
        .iter()
        .filter(|(k, _)| k.starts_with("chunks/"))
        .map(|(_, v)| v.as_slice())
        .collect()
}

#[test]
fn writes_and_reads_back_every_sample() {
    let series = generate(300, 250);
    // Small segments force several segment files.
    let (meta, sink) = write(&series, 64 << 10);
    assert_eq!(meta.stats.num_series, 300);
    assert_eq!(meta.stats.num_samples, 300 * 250);
    assert_eq!(meta.stats.num_chunks, 300 * 3);
    assert_eq!(
        Ulid::parse(&meta.ulid).unwrap().timestamp_ms(),
        1_700_000_000_000
    );
    let parsed = BlockMeta::parse(&sink.files["meta.json"]).unwrap();
    assert_eq!(parsed, meta);
    assert!(
        parse_tombstones(&sink.files["tombstones"])
            .unwrap()
            .is_empty()
    );
    let segs = segments(&sink);
    assert!(segs.len() > 1, "{} segments", segs.len());
    assert!(segs.iter().all(|s| s.len() <= 64 << 10));

    let index = IndexReader::new(&sink.files["index"]).unwrap();
    let chunks = ChunksReader::new(segs).unwrap();
    let all = index.all_postings().unwrap();
    assert_eq!(all.len(), series.len());
    for (id, (labels, samples)) in all.iter().zip(&series) {
        let entry = index.series(*id).unwrap();
        assert_eq!(&entry.labels, labels);
        let mut got = Vec::new();
        for c in &entry.chunks {
            let raw = chunks.chunk(c.chunk_ref).unwrap();
            let s = raw.float_samples().unwrap();
            assert_eq!(s.first().unwrap().0, c.min_time);
            assert_eq!(s.last().unwrap().0, c.max_time);
            got.extend(s);
        }
        assert_eq!(&got, samples);
    }
    assert_eq!(
        index.label_names(),
        ["__name__", "instance", "job", "series"]
    );
    assert_eq!(
        index.label_values("job"),
        ["job0", "job1", "job2", "job3", "job4"]
    );
    let li = index.label_indices().unwrap();
    assert_eq!(li.len(), 4);
    assert_eq!(li[2].0, "job");
    assert_eq!(li[2].1.len(), 5);

    let select = |ms: Vec<Matcher>| -> Vec<Labels> {
        index
            .select(&ms)
            .unwrap()
            .into_iter()
            .map(|id| index.series(id).unwrap().labels)
            .collect()
    };
    let expect = |f: &dyn Fn(&Labels) -> bool| -> Vec<Labels> {
        series
            .iter()
            .map(|s| s.0.clone())
            .filter(|l| f(l))
            .collect()
    };
    let m = |k, n: &str, v: &str| Matcher::new(k, n, v).unwrap();
    assert_eq!(
        select(vec![
            m(MatchType::Equal, "__name__", "up"),
            m(MatchType::Equal, "job", "job2")
        ]),
        expect(&|l| l.get("__name__") == Some("up") && l.get("job") == Some("job2"))
    );
    assert_eq!(
        select(vec![
            m(MatchType::Regex, "instance", "host-1.*"),
            m(MatchType::NotEqual, "job", "job0")
        ]),
        expect(
            &|l| l.get("instance").unwrap().starts_with("host-1") && l.get("job") != Some("job0")
        )
    );
    assert_eq!(
        select(vec![m(MatchType::NotRegex, "job", "job[0-3]")]),
        expect(&|l| l.get("job") == Some("job4"))
    );
    assert_eq!(
        select(vec![m(MatchType::Equal, "job", "nope")]),
        Vec::<Labels>::new()
    );
    assert_eq!(
        select(vec![m(MatchType::Equal, "missing", "")]).len(),
        series.len()
    );
    assert_eq!(
        select(vec![m(MatchType::NotEqual, "missing", "")]),
        Vec::<Labels>::new()
    );
    assert_eq!(
        select(vec![m(MatchType::Regex, "job", ".*")]).len(),
        series.len()
    );
}

#[test]
fn writer_refuses_bad_input() {
    let mut w = BlockWriter::new(MemorySink::default(), BlockWriterOptions::default()).unwrap();
    let a = Labels::from_pairs(&[("a", "1")]);
    let b = Labels::from_pairs(&[("a", "2")]);
    w.add_samples(&b, &[(1, 1.0)]).unwrap();
    assert!(w.add_samples(&a, &[(1, 1.0)]).is_err(), "out of order");
    assert!(w.add_samples(&b, &[(1, 1.0)]).is_err(), "duplicate");
    let c = Labels::from_pairs(&[("a", "3")]);
    assert!(
        w.add_samples(&c, &[(2, 1.0), (2, 2.0)]).is_err(),
        "equal timestamps"
    );
    assert!(w.add_samples(&Labels::empty(), &[(2, 1.0)]).is_err());
    let empty = BlockWriter::new(MemorySink::default(), BlockWriterOptions::default()).unwrap();
    assert!(empty.finish().is_err());
}

/// Reads everything a block holds: every postings list, series, label index and chunk.
fn read_all(index: &[u8], segs: &[&[u8]]) -> Result<usize, BlockError> {
    let index = IndexReader::new(index)?;
    let chunks = ChunksReader::new(segs.to_vec())?;
    let mut samples = 0;
    for name in index.label_names() {
        for value in index.label_values(name) {
            index.postings(name, value)?;
        }
    }
    index.label_indices()?;
    for id in index.all_postings()? {
        for c in index.series(id)?.chunks {
            samples += chunks
                .chunk(c.chunk_ref)?
                .float_samples()
                .map_err(|e| BlockError::invalid("chunks", "data", e.to_string()))?
                .len();
        }
    }
    Ok(samples)
}

/// Byte ranges of the index covered by a checksum (or the magic, version and TOC).
fn covered_ranges(index: &[u8]) -> Vec<std::ops::Range<usize>> {
    let r = IndexReader::new(index).unwrap();
    let toc = *r.toc();
    let sized = |off: u64| {
        let off = off as usize;
        off..off + index::section_len(&index[off..], "").unwrap() as usize
    };
    let mut out = vec![0..5, index.len() - TOC_LEN..index.len()];
    out.push(sized(toc.symbols));
    out.push(sized(toc.label_indices_table));
    out.push(sized(toc.postings_table));
    for id in r.all_postings().unwrap() {
        let off = id as usize * 16;
        let (_, len) = index::decode_series_with_len(&index[off..], r.symbols()).unwrap();
        out.push(off..off + len);
    }
    for (_, off) in
        index::parse_label_offset_table(&index[toc.label_indices_table as usize..]).unwrap()
    {
        out.push(sized(off));
    }
    let table = r.postings_table();
    out.push(sized(table.all_postings_range().unwrap().start));
    for name in r.label_names() {
        for (_, range) in table.ranges_matching(name, |_| true) {
            out.push(sized(range.start));
        }
    }
    out
}

fn small_block() -> MemorySink {
    write(&generate(20, 130), 4 << 10).1
}

#[test]
fn every_byte_flip_in_the_index_is_an_error_or_padding() {
    let sink = small_block();
    let segs = segments(&sink);
    let index = sink.files["index"].clone();
    assert_eq!(read_all(&index, &segs).unwrap(), 20 * 130);
    let covered = covered_ranges(&index);
    let mut errors = 0;
    for i in 0..index.len() {
        let mut c = index.clone();
        c[i] ^= 0x80;
        let res = read_all(&c, &segs);
        if covered.iter().any(|r| r.contains(&i)) {
            let e = res.expect_err(&format!("flip at {i} not detected"));
            assert!(e.to_string().starts_with("index: "), "{e}");
            errors += 1;
        } else {
            // Padding between sections is not checksummed, as in Prometheus.
            assert_eq!(c[i] & 0x7f, 0, "byte {i} should be padding");
            res.unwrap();
        }
    }
    assert!(errors > index.len() * 9 / 10, "{errors} of {}", index.len());

    let toc = *IndexReader::new(&index).unwrap().toc();
    let flip = |off: u64| {
        let mut c = index.clone();
        c[off as usize + 6] ^= 1;
        read_all(&c, &segs).unwrap_err().to_string()
    };
    assert!(flip(toc.symbols).starts_with("index: symbol table: CRC mismatch"));
    assert!(flip(toc.postings_table).starts_with("index: postings offset table: CRC mismatch"));
    let mut c = index.clone();
    let n = c.len();
    c[n - 10] ^= 1;
    assert!(
        read_all(&c, &segs)
            .unwrap_err()
            .to_string()
            .starts_with("index: TOC: CRC mismatch")
    );
}

#[test]
fn every_byte_flip_in_a_segment_is_an_error() {
    let sink = small_block();
    let segs = segments(&sink);
    let index = &sink.files["index"];
    for (s, seg) in segs.iter().enumerate() {
        for i in 0..seg.len() {
            if (5..8).contains(&i) {
                continue; // header padding
            }
            let mut c = seg.to_vec();
            c[i] ^= 0x80;
            let mut all = segs.clone();
            all[s] = &c;
            let e = read_all(index, &all).expect_err(&format!("segment {s} byte {i}"));
            assert!(
                e.to_string().starts_with(&format!("chunks/{:06}: ", s + 1)),
                "{e}"
            );
        }
    }
}

#[test]
fn every_truncation_is_an_error() {
    let sink = small_block();
    let segs = segments(&sink);
    let index = &sink.files["index"];
    for k in 0..index.len() {
        read_all(&index[..k], &segs).unwrap_err();
    }
    for (s, seg) in segs.iter().enumerate() {
        for k in 0..seg.len() {
            let mut all = segs.clone();
            all[s] = &seg[..k];
            read_all(index, &all).unwrap_err();
        }
    }
    // Each section on its own, cut at every length short of its end.
    let r = IndexReader::new(index).unwrap();
    let toc = *r.toc();
    let cut = |off: u64, f: &dyn Fn(&[u8]) -> Result<(), BlockError>| {
        let off = off as usize;
        let len = index::section_len(&index[off..], "").unwrap() as usize;
        f(&index[off..off + len]).unwrap();
        for k in 0..len {
            let e = f(&index[off..off + k]).unwrap_err();
            assert!(e.is_truncated(), "{e}");
        }
    };
    cut(toc.symbols, &|b| Symbols::parse(b).map(|_| ()));
    cut(toc.postings_table, &|b| {
        PostingsOffsetTable::parse(b, toc.postings_end()).map(|_| ())
    });
    let all = r.postings_table().all_postings_range().unwrap();
    cut(all.start, &|b| decode_postings(b).map(|_| ()));
    cut(toc.label_indices_table, &|b| {
        index::parse_label_offset_table(b).map(|_| ())
    });
    for id in r.all_postings().unwrap() {
        let off = id as usize * 16;
        let (_, len) = index::decode_series_with_len(&index[off..], r.symbols()).unwrap();
        assert_eq!(index::series_entry_len(&index[off..]).unwrap(), len as u64);
        for k in 0..len {
            let e = decode_series(&index[off..off + k], r.symbols()).unwrap_err();
            assert!(e.is_truncated(), "{e}");
        }
        // Chunks: sans-IO decoding from a range that starts at the chunk.
        for c in r.series(id).unwrap().chunks {
            let cr = ChunkRef::from_u64(c.chunk_ref);
            let seg = segs[cr.segment as usize];
            let start = cr.offset as usize;
            let (_, span) =
                decode_chunk(&seg[start..], start as u64, cr.segment, cr.offset).unwrap();
            for k in 0..span {
                let e = decode_chunk(&seg[start..start + k], start as u64, cr.segment, cr.offset)
                    .unwrap_err();
                assert!(e.is_truncated(), "{e}");
            }
        }
    }
    for k in 0..TOC_LEN {
        assert!(Toc::parse(&index[index.len() - k..]).is_err());
    }
}

/// Rewrites the CRC of the section with a 4-byte length at `off` to match its bytes.
fn fix_crc(b: &mut [u8], off: usize) {
    let len = u32::from_be_bytes(b[off..off + 4].try_into().unwrap()) as usize;
    let crc = crc32c(&b[off + 4..off + 4 + len]);
    b[off + 4 + len..off + 8 + len].copy_from_slice(&crc.to_be_bytes());
}

/// Corruption a checksum cannot catch (the CRC recomputed after each change) still never
/// panics: every byte of every checksummed section set to a few values, then read whole.
#[test]
fn mutations_behind_a_valid_crc_never_panic() {
    let sink = small_block();
    let segs = segments(&sink);
    let index = sink.files["index"].clone();
    let r = IndexReader::new(&index).unwrap();
    let toc = *r.toc();
    let mut sections: Vec<usize> = vec![
        toc.symbols as usize,
        toc.postings_table as usize,
        toc.label_indices_table as usize,
    ];
    let table = r.postings_table();
    sections.push(table.all_postings_range().unwrap().start as usize);
    for name in r.label_names() {
        for (_, range) in table.ranges_matching(name, |_| true) {
            sections.push(range.start as usize);
        }
    }
    let mut outcomes = [0usize; 2];
    for &off in &sections {
        let len = index::section_len(&index[off..], "").unwrap() as usize - 8;
        for i in off + 4..off + 4 + len {
            for v in [0x00, 0xff, 0x81] {
                let mut c = index.clone();
                c[i] = v;
                fix_crc(&mut c, off);
                outcomes[usize::from(read_all(&c, &segs).is_ok())] += 1;
            }
        }
    }
    // Series entries have a uvarint length.
    for id in r.all_postings().unwrap() {
        let off = id as usize * 16;
        let total = index::series_entry_len(&index[off..]).unwrap() as usize;
        let body = off + 1..off + total - 4;
        for i in body.clone() {
            for v in [0x00, 0xff, 0x81] {
                let mut c = index.clone();
                c[i] = v;
                let crc = crc32c(&c[body.clone()]);
                c[body.end..body.end + 4].copy_from_slice(&crc.to_be_bytes());
                outcomes[usize::from(read_all(&c, &segs).is_ok())] += 1;
            }
        }
    }
    // Chunk data with a recomputed CRC: the XOR decoder sees garbage.
    let seg = segs[0];
    let (_, span) = decode_chunk(seg, 0, 0, 8).unwrap();
    for i in 10..8 + span - 4 {
        for v in [0x00, 0xff, 0x81] {
            let mut c = seg.to_vec();
            c[i] = v;
            let crc = crc32c(&c[9..8 + span - 4]);
            c[8 + span - 4..8 + span].copy_from_slice(&crc.to_be_bytes());
            let mut all = segs.clone();
            all[0] = &c;
            outcomes[usize::from(read_all(&index, &all).is_ok())] += 1;
        }
    }
    assert!(outcomes[0] > 1000, "{outcomes:?}");
}

#[test]
fn thanos_section_lists_files_and_sizes() {
    let series = generate(50, 300);
    let options = BlockWriterOptions {
        segment_size: 8 << 10,
        thanos: Some(ThanosMeta {
            labels: [("cluster".to_owned(), "eu1".to_owned())].into(),
            source: "compactor".to_owned(),
            ..ThanosMeta::default()
        }),
        time_range: Some((1_699_999_200_000, 1_700_006_400_000)),
        ..BlockWriterOptions::default()
    };
    let mut w = BlockWriter::new(MemorySink::default(), options).unwrap();
    for (l, s) in &series {
        w.add_samples(l, s).unwrap();
    }
    let (meta, sink) = w.finish().unwrap();
    assert_eq!(
        (meta.min_time, meta.max_time),
        (1_699_999_200_000, 1_700_006_400_000)
    );
    let thanos = meta.thanos.as_ref().unwrap();
    let segs: Vec<&String> = sink
        .files
        .keys()
        .filter(|k| k.starts_with("chunks/"))
        .collect();
    assert!(segs.len() > 1);
    assert_eq!(thanos.segment_files.len(), segs.len());
    assert_eq!(thanos.segment_files[0], "000001");
    let files: Vec<(&str, u64)> = thanos
        .files
        .iter()
        .map(|f| (f.rel_path.as_str(), f.size_bytes))
        .collect();
    let mut want: Vec<(&str, u64)> = segs
        .iter()
        .map(|k| (k.as_str(), sink.files[*k].len() as u64))
        .collect();
    want.push(("index", sink.files["index"].len() as u64));
    want.push(("meta.json", 0));
    assert_eq!(files, want);
    let stats = thanos.index_stats.unwrap();
    assert!(stats.series_max_size > 0 && stats.chunk_max_size > 0);
    assert_eq!(BlockMeta::parse(&sink.files["meta.json"]).unwrap(), meta);
}
