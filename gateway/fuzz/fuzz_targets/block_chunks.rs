//! Decode arbitrary bytes as a chunk segment file and as a tombstones file: errors are fine,
//! panics and allocations beyond the input's size are findings.
#![no_main]

use gauntlet_tsdb::block::chunks::{ChunksReader, decode_chunk, parse_segment_header};
use gauntlet_tsdb::block::parse_tombstones;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let _ = parse_tombstones(input);
    let _ = parse_segment_header(input, 0);
    // Walk the segment chunk by chunk, as a compactor reading it sequentially would.
    let mut offset = 8usize;
    while offset < input.len() {
        let Ok(off32) = u32::try_from(offset) else {
            break;
        };
        match decode_chunk(input, 0, 0, off32) {
            Ok((chunk, span)) => {
                assert!(span <= input.len() - offset);
                match chunk.encoding {
                    1 => {
                        if let Ok(s) = chunk.float_samples() {
                            assert!(s.len() <= chunk.data.len() * 8);
                        }
                    }
                    _ => {
                        let _ = chunk.histogram_samples();
                    }
                }
                offset += span;
            }
            Err(_) => break,
        }
    }
    // A chunk range that starts mid-segment, as the store gateway fetches it.
    if input.len() > 16 {
        let _ = decode_chunk(&input[8..], 8, 3, 8);
    }
    if let Ok(r) = ChunksReader::new(vec![input]) {
        let _ = r.chunk(8);
        let _ = r.chunk(1 << 32);
    }
});
