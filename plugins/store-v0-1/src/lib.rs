//! A store plugin as plugins built against `gauntlet:plugin@0.1.0` are: it exports `lifecycle`
//! and `store` of that version and nothing of later ones (no `packed-series`), so the host
//! answers through `series-stream.next-batch`. It serves `series` series named `compat`
//! (`config.series`, default 3), one sample a minute from 0 to 1 hour, one series a batch.
//! It uses no SDK: the SDK follows the current version.

use std::cell::{Cell, RefCell};

use exports::gauntlet::plugin::{lifecycle, store};
use gauntlet::plugin::types::{Chunk, ChunkEncoding, Label, PluginError, Series, TimeRange};
use gauntlet_tsdb::chunkenc::XorChunk;

wit_bindgen::generate!({
    path: "wit",
    world: "store-backend",
});

thread_local! {
    static SERIES: Cell<usize> = const { Cell::new(3) };
}

struct Plugin;

impl lifecycle::Guest for Plugin {
    fn init(config: Vec<(String, String)>) -> Result<(), PluginError> {
        for (key, value) in config {
            if key == "series" {
                let n = value.parse().map_err(|e| {
                    PluginError::InvalidArgument(format!("config.series = {value:?}: {e}"))
                })?;
                SERIES.with(|s| s.set(n));
            }
        }
        Ok(())
    }
}

fn series(i: usize, range: &TimeRange) -> Result<Series, PluginError> {
    let mut chunk = XorChunk::new();
    let (mut first, mut last) = (None, 0);
    for minute in 0..=60i64 {
        let t = minute * 60_000;
        if t < range.min_time || t > range.max_time {
            continue;
        }
        chunk
            .append(t, (i as i64 * 100 + minute) as f64)
            .map_err(|e| PluginError::Internal(format!("encoding: {e}")))?;
        first.get_or_insert(t);
        last = t;
    }
    let chunks = match first {
        Some(first) => vec![Chunk {
            min_time: first,
            max_time: last,
            encoding: ChunkEncoding::Xor,
            data: chunk.into_bytes(),
        }],
        None => Vec::new(),
    };
    Ok(Series {
        labels: vec![
            Label {
                name: "__name__".to_owned(),
                value: "compat".to_owned(),
            },
            Label {
                name: "i".to_owned(),
                value: i.to_string(),
            },
        ],
        chunks,
    })
}

/// One series a batch, so that an answer takes several `next-batch` calls.
struct Stream {
    next: Cell<usize>,
    range: TimeRange,
    skip_chunks: bool,
    warnings: RefCell<Vec<String>>,
}

impl store::GuestSeriesStream for Stream {
    fn next_batch(&self) -> Result<Option<store::SeriesBatch>, PluginError> {
        let i = self.next.get();
        if i >= SERIES.with(Cell::get) {
            return Ok(None);
        }
        self.next.set(i + 1);
        let mut one = series(i, &self.range)?;
        if self.skip_chunks {
            one.chunks.clear();
        }
        Ok(Some(store::SeriesBatch {
            series: vec![one],
            warnings: self.warnings.take(),
        }))
    }
}

impl store::Guest for Plugin {
    type SeriesStream = Stream;

    fn info() -> Result<store::StoreInfo, PluginError> {
        Ok(store::StoreInfo {
            label_sets: Vec::new(),
            range: TimeRange {
                min_time: 0,
                max_time: 3_600_000,
            },
        })
    }

    fn select(request: store::SeriesRequest) -> Result<store::SeriesStream, PluginError> {
        Ok(store::SeriesStream::new(Stream {
            next: Cell::new(0),
            range: request.range,
            skip_chunks: request.skip_chunks,
            warnings: RefCell::new(vec!["served by a 0.1.0 plugin".to_owned()]),
        }))
    }

    fn label_names(_request: store::LabelRequest) -> Result<store::LabelResponse, PluginError> {
        Ok(store::LabelResponse {
            values: vec!["__name__".to_owned(), "i".to_owned()],
            warnings: Vec::new(),
        })
    }

    fn label_values(
        name: String,
        _request: store::LabelRequest,
    ) -> Result<store::LabelResponse, PluginError> {
        let values = match name.as_str() {
            "__name__" => vec!["compat".to_owned()],
            "i" => (0..SERIES.with(Cell::get)).map(|i| i.to_string()).collect(),
            _ => Vec::new(),
        };
        Ok(store::LabelResponse {
            values,
            warnings: Vec::new(),
        })
    }
}

export!(Plugin);
