//! Decode arbitrary bytes as a Prometheus XOR chunk: errors are fine, panics and allocations
//! beyond the input's size are findings.
#![no_main]

use gauntlet_tsdb::chunkenc::{XorIterator, decode_xor_into};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    if let Ok(mut iterator) = XorIterator::new(input) {
        let mut count = 0usize;
        while let Ok(Some(_)) = iterator.next_sample() {
            count += 1;
            assert!(count <= usize::from(u16::MAX), "more samples than a chunk can hold");
        }
    }
    let mut out = Vec::new();
    let _ = decode_xor_into(input, i64::MIN, i64::MAX, &mut out);
    assert!(out.len() <= input.len() * 8, "decoded more samples than bits");
});
