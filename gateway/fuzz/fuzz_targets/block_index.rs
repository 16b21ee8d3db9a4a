//! Decode arbitrary bytes as a block `index`, whole and section by section: errors are fine,
//! panics and allocations beyond the input's size are findings.
#![no_main]

use gauntlet_tsdb::block::index::{
    self, MatchType, Matcher, PostingsOffsetTable, Symbols, Toc, decode_label_index,
    decode_postings, decode_series, parse_label_offset_table,
};
use gauntlet_tsdb::block::IndexReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    // The sans-IO pieces straight on the input.
    let _ = index::parse_header(input);
    let _ = Toc::parse(input);
    let symbols = Symbols::parse(input).unwrap_or_default();
    let _ = PostingsOffsetTable::parse(input, u64::MAX);
    if let Ok(p) = decode_postings(input) {
        let _ = p.to_vec();
    }
    let _ = decode_series(input, &symbols);
    let _ = parse_label_offset_table(input);
    let _ = decode_label_index(input);

    // The whole-file reader, exercised the way a query would.
    let Ok(reader) = IndexReader::new(input) else {
        return;
    };
    for name in reader.label_names() {
        for value in reader.label_values(name) {
            let _ = reader.postings(name, value);
        }
    }
    let _ = reader.label_indices();
    if let Ok(all) = reader.all_postings() {
        for id in all.into_iter().take(10_000) {
            if let Ok(s) = reader.series(id) {
                assert!(s.chunks.len() <= input.len());
            }
        }
    }
    for m in [
        Matcher::new(MatchType::Equal, "job", "a"),
        Matcher::new(MatchType::NotRegex, "__name__", "x.*"),
        Matcher::new(MatchType::NotEqual, "", ""),
    ]
    .into_iter()
    .flatten()
    {
        let _ = reader.select(std::slice::from_ref(&m));
    }
});
