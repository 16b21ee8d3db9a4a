//! The store gateway ([`BucketStore`]) over real blocks in a local filesystem bucket: blocks
//! written by our block writer (with Thanos external labels) and by promtool 2.42. Every answer
//! is compared sample for sample with the data the blocks were made from; blocks still being
//! uploaded or marked for deletion are never served; a corrupt chunk file fails its block
//! only; a restart reuses the local index-headers (counted with an instrumented bucket).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path as FsPath;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use gauntlet::query::matchers::compile_matchers;
use gauntlet::query::store::{Store, StoreError};
use gauntlet::store::bucket::{BucketStore, BucketStoreConfig};
use gauntlet_proto::thanos::label_matcher::Type;
use gauntlet_proto::thanos::series_response::Result as Frame;
use gauntlet_proto::thanos::{LabelMatcher, LabelNamesRequest, LabelValuesRequest, SeriesRequest};
use gauntlet_tsdb::block::{BlockWriterOptions, ThanosMeta, write_block_dir};
use gauntlet_tsdb::chunkenc::XorIterator;
use gauntlet_tsdb::labels::Labels;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

const HOUR: i64 = 3_600_000;
const STEP: i64 = 15_000;

type Data = BTreeMap<Labels, Vec<(i64, f64)>>;

/// An object store that counts range reads and whole reads.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn ObjectStore>,
    gets: AtomicUsize,
}

impl fmt::Display for Counting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Counting {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if !options.head {
            self.gets.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs)
}

/// Series of one cluster over `[start, end)`: `up` per instance and a counter per code.
fn cluster_series(cluster_seed: u64, start: i64, end: i64) -> Vec<(Labels, Vec<(i64, f64)>)> {
    let mut out = Vec::new();
    for instance in 0..12 {
        let inst = format!("10.0.0.{instance}:9090");
        for code in ["200", "404", "500"] {
            let l = labels(&[
                ("__name__", "http_requests_total"),
                ("code", code),
                ("instance", &inst),
                ("job", if instance % 2 == 0 { "api" } else { "web" }),
            ]);
            let mut v = 0.0;
            let samples = (0..)
                .map(|i| start + i * STEP + instance * 7)
                .take_while(|&t| t < end)
                .map(|t| {
                    v += ((t / STEP) as u64 % 7 + cluster_seed) as f64 * 0.25;
                    (t, v)
                })
                .collect();
            out.push((l, samples));
        }
        let l = labels(&[("__name__", "up"), ("instance", &inst), ("job", "node")]);
        let samples = (0..)
            .map(|i| start + i * STEP)
            .take_while(|&t| t < end)
            .map(|t| (t, f64::from(u8::from((t / STEP + instance) % 50 != 0))))
            .collect();
        out.push((l, samples));
    }
    out.sort_by(|a, b| a.0.compare(&b.0));
    out
}

/// Writes a block of `series` with external labels `ext` into `bucket_dir`; adds the series
/// (with the external labels) to `data`. Returns the block's directory.
fn write_block(
    bucket_dir: &FsPath,
    ext: &[(&str, &str)],
    series: &[(Labels, Vec<(i64, f64)>)],
    data: &mut Data,
) -> std::path::PathBuf {
    let thanos = ThanosMeta {
        labels: ext
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        source: "test".to_owned(),
        ..ThanosMeta::default()
    };
    let options = BlockWriterOptions {
        thanos: Some(thanos),
        ..BlockWriterOptions::default()
    };
    let (_, dir) = write_block_dir(
        bucket_dir,
        options,
        series.iter().map(|(l, s)| (l, s.as_slice())),
    )
    .expect("block written");
    for (l, s) in series {
        let mut b = l.builder();
        for (k, v) in ext {
            b.set(k, v);
        }
        data.entry(b.build()).or_default().extend_from_slice(s);
    }
    dir
}

/// Blocks made by promtool from OpenMetrics (no external labels), copied into the bucket.
fn promtool_blocks(work: &FsPath, bucket_dir: &FsPath, data: &mut Data) {
    let mut text = String::from("# HELP temperature Room temperature.\n# TYPE temperature gauge\n");
    let start_s = 3 * 3600;
    for room in ["a", "b", "c"] {
        for i in 0..200 {
            let t = start_s + 60 * i;
            let v = 20.0 + f64::from((i % 9) as u8) * 0.5 + if room == "b" { 100.0 } else { 0.0 };
            text.push_str(&format!("temperature{{room=\"{room}\"}} {v} {t}\n"));
            data.entry(labels(&[("__name__", "temperature"), ("room", room)]))
                .or_default()
                .push((t * 1000, v));
        }
    }
    text.push_str("# EOF\n");
    let input = work.join("input.om");
    std::fs::write(&input, text).expect("write input");
    let out = work.join("promtool-out");
    let status = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&input)
        .arg(&out)
        .output()
        .expect("promtool runs (install Debian's prometheus)");
    assert!(
        status.status.success(),
        "promtool: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    for entry in std::fs::read_dir(&out).expect("promtool output") {
        let entry = entry.expect("entry");
        if entry.path().join("meta.json").is_file() {
            copy_dir(&entry.path(), &bucket_dir.join(entry.file_name()));
        }
    }
}

fn copy_dir(from: &FsPath, to: &FsPath) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    bucket_dir: std::path::PathBuf,
    data_dir: std::path::PathBuf,
    data: Data,
    /// Blocks of cluster b (for corruption).
    cluster_b: std::path::PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let bucket_dir = dir.path().join("bucket");
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&bucket_dir).expect("mkdir");
    let mut data = Data::new();
    write_block(
        &bucket_dir,
        &[("cluster", "a")],
        &cluster_series(1, 0, 2 * HOUR),
        &mut data,
    );
    write_block(
        &bucket_dir,
        &[("cluster", "a")],
        &cluster_series(1, 2 * HOUR, 4 * HOUR),
        &mut data,
    );
    let cluster_b = write_block(
        &bucket_dir,
        &[("cluster", "b")],
        &cluster_series(3, HOUR, 3 * HOUR),
        &mut data,
    );
    promtool_blocks(dir.path(), &bucket_dir, &mut data);
    Fixture {
        bucket_dir,
        data_dir,
        data,
        cluster_b,
        _dir: dir,
    }
}

fn local(dir: &FsPath) -> Arc<dyn ObjectStore> {
    Arc::new(LocalFileSystem::new_with_prefix(dir).expect("bucket"))
}

async fn open(bucket: Arc<dyn ObjectStore>, data_dir: &FsPath) -> BucketStore {
    let store = BucketStore::new(bucket, BucketStoreConfig::new(data_dir));
    store.sync().await.expect("sync");
    store
}

fn m(kind: Type, name: &str, value: &str) -> LabelMatcher {
    LabelMatcher {
        r#type: kind as i32,
        name: name.to_owned(),
        value: value.to_owned(),
    }
}

/// What the data holds for `matchers` in `[min, max]`.
fn expected(data: &Data, matchers: &[LabelMatcher], min: i64, max: i64) -> Data {
    let compiled = compile_matchers(matchers).expect("matchers");
    data.iter()
        .filter(|(l, _)| compiled.matches(l))
        .map(|(l, s)| {
            let mut s: Vec<(i64, f64)> = s
                .iter()
                .copied()
                .filter(|(t, _)| *t >= min && *t <= max)
                .collect();
            s.sort_by_key(|x| x.0);
            (l.clone(), s)
        })
        .filter(|(_, s)| !s.is_empty())
        .collect()
}

/// Runs a Series request and decodes it; returns the series (samples in range) and warnings.
async fn series(
    store: &BucketStore,
    matchers: &[LabelMatcher],
    min: i64,
    max: i64,
) -> Result<(Data, Vec<String>), StoreError> {
    let request = SeriesRequest {
        min_time: min,
        max_time: max,
        matchers: matchers.to_vec(),
        ..SeriesRequest::default()
    };
    let mut stream = store.series(request).await?;
    let mut out = Data::new();
    let mut warnings = Vec::new();
    let mut last: Option<Labels> = None;
    while let Some(frame) = stream.next().await {
        match frame?.result {
            Some(Frame::Series(s)) => {
                let l = gauntlet::query::endpoints::labels_from_proto(&s.labels);
                assert!(
                    last.as_ref().is_none_or(|p| p < &l),
                    "series sorted and unique"
                );
                last = Some(l.clone());
                let mut samples = Vec::new();
                for c in &s.chunks {
                    let raw = c.raw.as_ref().expect("raw chunk");
                    for sample in XorIterator::new(&raw.data).expect("xor") {
                        let (t, v) = sample.expect("sample");
                        assert!(t >= c.min_time && t <= c.max_time);
                        if t >= min && t <= max {
                            samples.push((t, v));
                        }
                    }
                }
                assert!(
                    samples.windows(2).all(|w| w[0].0 < w[1].0),
                    "{l}: time order"
                );
                if !samples.is_empty() {
                    out.insert(l, samples);
                }
            }
            Some(Frame::Warning(w)) => warnings.push(w),
            _ => {}
        }
    }
    Ok((out, warnings))
}

#[tokio::test]
async fn series_labels_and_values_match_the_data() {
    let f = fixture();
    let store = open(local(&f.bucket_dir), &f.data_dir).await;
    assert_eq!(
        store.blocks().len(),
        6,
        "three written blocks and three from promtool"
    );
    let cases: Vec<(Vec<LabelMatcher>, i64, i64)> = vec![
        (vec![m(Type::Eq, "__name__", "up")], 0, 4 * HOUR),
        (
            vec![
                m(Type::Eq, "__name__", "http_requests_total"),
                m(Type::Eq, "code", "500"),
            ],
            HOUR / 2,
            3 * HOUR,
        ),
        (
            vec![
                m(Type::Re, "__name__", "http_.*"),
                m(Type::Neq, "job", "api"),
                m(Type::Eq, "cluster", "b"),
            ],
            0,
            5 * HOUR,
        ),
        (
            vec![
                m(Type::Eq, "cluster", "a"),
                m(Type::Nre, "instance", "10.0.0.1.*"),
            ],
            90 * 60_000,
            150 * 60_000,
        ),
        (vec![m(Type::Eq, "__name__", "temperature")], 0, 10 * HOUR),
        (
            vec![
                m(Type::Eq, "__name__", "temperature"),
                m(Type::Re, "room", "a|c"),
            ],
            3 * HOUR + 600_000,
            3 * HOUR + 5_400_000,
        ),
        (vec![m(Type::Eq, "cluster", "nope")], 0, 10 * HOUR),
        (
            vec![m(Type::Eq, "__name__", "up"), m(Type::Eq, "job", "missing")],
            0,
            10 * HOUR,
        ),
        (vec![m(Type::Re, "__name__", ".+")], 7 * HOUR, 8 * HOUR),
        (vec![m(Type::Re, "__name__", ".+")], 0, 10 * HOUR),
    ];
    for (matchers, min, max) in &cases {
        let want = expected(&f.data, matchers, *min, *max);
        let (got, warnings) = series(&store, matchers, *min, *max).await.expect("series");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            got.len(),
            want.len(),
            "{matchers:?} [{min}, {max}]: series count"
        );
        assert!(got == want, "{matchers:?} [{min}, {max}]: samples differ");
    }

    let names = store
        .label_names(LabelNamesRequest {
            start: 0,
            end: 10 * HOUR,
            ..Default::default()
        })
        .await
        .expect("names");
    assert_eq!(
        names.names,
        ["__name__", "cluster", "code", "instance", "job", "room"]
    );
    let names = store
        .label_names(LabelNamesRequest {
            start: 0,
            end: 10 * HOUR,
            matchers: vec![m(Type::Eq, "__name__", "temperature")],
            ..Default::default()
        })
        .await
        .expect("names");
    assert_eq!(names.names, ["__name__", "room"]);
    let values = store
        .label_values(LabelValuesRequest {
            label: "cluster".into(),
            start: 0,
            end: 10 * HOUR,
            ..Default::default()
        })
        .await
        .expect("values");
    assert_eq!(values.values, ["a", "b"]);
    let values = store
        .label_values(LabelValuesRequest {
            label: "code".into(),
            start: 0,
            end: 10 * HOUR,
            matchers: vec![
                m(Type::Eq, "instance", "10.0.0.3:9090"),
                m(Type::Neq, "code", "404"),
            ],
            ..Default::default()
        })
        .await
        .expect("values");
    assert_eq!(values.values, ["200", "500"]);
    let values = store
        .label_values(LabelValuesRequest {
            label: "__name__".into(),
            start: 0,
            end: HOUR,
            ..Default::default()
        })
        .await
        .expect("values");
    assert_eq!(
        values.values,
        ["http_requests_total", "up"],
        "promtool blocks start at 3h"
    );

    let info = store.info().await.expect("info");
    let store_info = info.store.expect("store info");
    assert_eq!(store_info.min_time, 0);
    assert_eq!(info.component_type, "store");
    assert_eq!(
        info.label_sets.len(),
        3,
        "{{}}, {{cluster=a}}, {{cluster=b}}"
    );

    // skip_chunks: labels only.
    let mut stream = store
        .series(SeriesRequest {
            min_time: 0,
            max_time: 10 * HOUR,
            matchers: vec![m(Type::Eq, "job", "node")],
            skip_chunks: true,
            ..SeriesRequest::default()
        })
        .await
        .expect("series");
    let mut n = 0;
    while let Some(frame) = stream.next().await {
        if let Some(Frame::Series(s)) = frame.expect("frame").result {
            assert!(s.chunks.is_empty());
            n += 1;
        }
    }
    assert_eq!(n, 24, "12 instances in 2 clusters");
}

#[tokio::test]
async fn limits_are_clear_errors() {
    let f = fixture();
    let mut config = BucketStoreConfig::new(&f.data_dir);
    config.series_limit = 10;
    let store = BucketStore::new(local(&f.bucket_dir), config);
    store.sync().await.expect("sync");
    let error = series(&store, &[m(Type::Eq, "__name__", "up")], 0, 4 * HOUR)
        .await
        .expect_err("over the series limit");
    assert!(
        error.to_string().contains("exceeded series limit of 10: narrow the matchers or raise --store.limits.request-series"),
        "{error}"
    );
    let mut config = BucketStoreConfig::new(&f.data_dir);
    config.samples_limit = 1000;
    let store = BucketStore::new(local(&f.bucket_dir), config);
    store.sync().await.expect("sync");
    let error = series(&store, &[m(Type::Eq, "__name__", "up")], 0, 4 * HOUR)
        .await
        .expect_err("over the samples limit");
    assert!(
        error.to_string().contains("exceeded samples limit of 1000"),
        "{error}"
    );
    // Chunks held by requests in flight are bounded by the chunk pool.
    let mut config = BucketStoreConfig::new(&f.data_dir);
    config.chunk_pool_bytes = 100;
    let pooled = BucketStore::new(local(&f.bucket_dir), config);
    pooled.sync().await.expect("sync");
    let error = series(&pooled, &[m(Type::Eq, "__name__", "up")], 0, 4 * HOUR)
        .await
        .expect_err("over the chunk pool");
    assert!(
        error.to_string().contains("chunk pool exhausted")
            && error.to_string().contains("--chunk-pool-size"),
        "{error}"
    );
    // Within the limits.
    let (got, _) = series(
        &store,
        &[
            m(Type::Eq, "__name__", "up"),
            m(Type::Eq, "instance", "10.0.0.1:9090"),
            m(Type::Eq, "cluster", "a"),
        ],
        0,
        HOUR,
    )
    .await
    .expect("small request");
    assert_eq!(got.len(), 1);
}

#[tokio::test]
async fn unfinished_and_deleted_blocks_are_not_served() {
    let f = fixture();
    let store = open(local(&f.bucket_dir), &f.data_dir).await;
    assert_eq!(store.blocks().len(), 6);
    // An upload in progress: everything but meta.json.
    let mut extra = Data::new();
    let partial = write_block(
        &f.bucket_dir,
        &[("cluster", "c")],
        &cluster_series(5, 0, HOUR),
        &mut extra,
    );
    std::fs::remove_file(partial.join("meta.json")).expect("remove meta");
    let summary = store.sync().await.expect("sync");
    assert_eq!(summary.added, 0);
    let (got, _) = series(&store, &[m(Type::Eq, "cluster", "c")], 0, 10 * HOUR)
        .await
        .expect("series");
    assert!(got.is_empty(), "a block without meta.json is never served");
    // A deletion mark drops a served block; so does its disappearance.
    std::fs::write(f.cluster_b.join("deletion-mark.json"), b"{}").expect("mark");
    let summary = store.sync().await.expect("sync");
    assert_eq!(summary.dropped, 1);
    let (got, _) = series(&store, &[m(Type::Eq, "cluster", "b")], 0, 10 * HOUR)
        .await
        .expect("series");
    assert!(got.is_empty());
    let a_blocks: Vec<_> = store
        .blocks()
        .iter()
        .filter(|b| b.external_labels.get("cluster") == Some("a"))
        .map(|b| b.id)
        .collect();
    std::fs::remove_dir_all(f.bucket_dir.join(a_blocks[0].to_string())).expect("delete block");
    let summary = store.sync().await.expect("sync");
    assert_eq!(summary.dropped, 1);
    assert_eq!(store.blocks().len(), 4);
    // A downsampled block is not served.
    let options = BlockWriterOptions {
        thanos: Some(ThanosMeta {
            labels: [("cluster".to_owned(), "d".to_owned())].into(),
            downsample: gauntlet_tsdb::block::meta::Downsample {
                resolution: 300_000,
            },
            ..ThanosMeta::default()
        }),
        ..BlockWriterOptions::default()
    };
    let series = cluster_series(7, 0, HOUR);
    write_block_dir(
        &f.bucket_dir,
        options,
        series.iter().map(|(l, s)| (l, s.as_slice())),
    )
    .expect("block written");
    let summary = store.sync().await.expect("sync");
    assert_eq!(summary.added, 0, "{summary:?}");
    // Time sharding.
    let mut config = BucketStoreConfig::new(&f.data_dir);
    config.min_time = Some(3 * HOUR);
    let store = BucketStore::new(local(&f.bucket_dir), config);
    store.sync().await.expect("sync");
    assert!(store.blocks().iter().all(|b| b.meta.max_time > 3 * HOUR));
}

#[tokio::test]
async fn a_corrupt_chunk_file_fails_its_block_only() {
    let f = fixture();
    let segment = f.cluster_b.join("chunks/000001");
    let mut bytes = std::fs::read(&segment).expect("segment");
    let n = bytes.len();
    for b in &mut bytes[20..n - 20] {
        *b ^= 0x5a;
    }
    std::fs::write(&segment, bytes).expect("corrupt");
    let store = open(local(&f.bucket_dir), &f.data_dir).await;
    let matchers = [m(Type::Eq, "__name__", "up")];
    let (got, warnings) = series(&store, &matchers, 0, 4 * HOUR)
        .await
        .expect("partial response");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains(
            &f.cluster_b
                .file_name()
                .unwrap()
                .to_string_lossy()
                .to_string()
        ),
        "{warnings:?}"
    );
    let want: Data = expected(&f.data, &matchers, 0, 4 * HOUR)
        .into_iter()
        .filter(|(l, _)| l.get("cluster") == Some("a"))
        .collect();
    assert!(got == want, "cluster a is served whole");
    // Without partial response the block's failure ends the answer with an error (the
    // chunks are read as the answer streams, so it may follow series of other blocks).
    let answer = store
        .series(SeriesRequest {
            min_time: 0,
            max_time: 4 * HOUR,
            matchers: matchers.to_vec(),
            partial_response_disabled: true,
            ..SeriesRequest::default()
        })
        .await;
    let error = match answer {
        Err(error) => error,
        Ok(mut stream) => {
            let mut error = None;
            while let Some(frame) = stream.next().await {
                if let Err(e) = frame {
                    error = Some(e);
                    assert!(stream.next().await.is_none(), "an error ends the stream");
                    break;
                }
            }
            error.expect("an error without partial response")
        }
    };
    assert!(error.to_string().contains("chunks/000001"), "{error}");
    // A corrupt index: its block is not loaded, the others are.
    let index = f.cluster_b.join("index");
    let len = std::fs::metadata(&index).expect("index").len();
    let mut bytes = std::fs::read(&index).expect("index");
    let n = bytes.len();
    bytes[n - 10] ^= 0xff;
    std::fs::write(&index, &bytes).expect("corrupt");
    assert_eq!(len as usize, n);
    let store = open(local(&f.bucket_dir), &f.dir_for("data2")).await;
    assert_eq!(store.blocks().len(), 5);
}

impl Fixture {
    fn dir_for(&self, name: &str) -> std::path::PathBuf {
        self._dir.path().join(name)
    }
}

#[tokio::test]
async fn a_restart_reuses_the_local_index_headers() {
    let f = fixture();
    let counting = Arc::new(Counting {
        inner: local(&f.bucket_dir),
        gets: AtomicUsize::new(0),
    });
    let mut config = BucketStoreConfig::new(&f.data_dir);
    config.chunk_cache_bytes = 64 << 20;
    let store = BucketStore::new(counting.clone(), config);
    store.sync().await.expect("sync");
    let first = counting.gets.swap(0, Ordering::SeqCst);
    assert_eq!(store.blocks().len(), 6);
    // meta.json + TOC + header + symbols + postings offset table per block.
    assert_eq!(first, 6 * 5, "reads at first start");
    let matchers = [
        m(Type::Eq, "__name__", "up"),
        m(Type::Eq, "instance", "10.0.0.4:9090"),
    ];
    let (got, _) = series(&store, &matchers, 0, 4 * HOUR)
        .await
        .expect("series");
    assert_eq!(got.len(), 2);
    let query_reads = counting.gets.swap(0, Ordering::SeqCst);
    // Per block of clusters a and b: one postings read (two lists coalesced), one series read, one chunks read.
    assert!(
        query_reads <= 3 * 3,
        "{query_reads} reads for a selective query"
    );
    let (again, _) = series(&store, &matchers, 0, 4 * HOUR)
        .await
        .expect("series");
    assert_eq!(again, got);
    assert_eq!(
        counting.gets.swap(0, Ordering::SeqCst),
        0,
        "answered from the caches"
    );
    drop(store);

    let counting = Arc::new(Counting {
        inner: local(&f.bucket_dir),
        gets: AtomicUsize::new(0),
    });
    let store = BucketStore::new(counting.clone(), BucketStoreConfig::new(&f.data_dir));
    let summary = store.sync().await.expect("sync");
    assert_eq!(summary.headers_built, 0);
    assert_eq!(
        counting.gets.load(Ordering::SeqCst),
        6,
        "only meta.json is read again"
    );
    let (after, _) = series(&store, &matchers, 0, 4 * HOUR)
        .await
        .expect("series");
    assert_eq!(after, got);
}

/// Reads a Series answer to the end, counting the bucket's reads before the first frame, after
/// it and at the end.
async fn read_lazily(
    store: &BucketStore,
    counting: &Counting,
    matchers: &[LabelMatcher],
) -> (Data, [usize; 3]) {
    let start = counting.gets.load(Ordering::SeqCst);
    let mut stream = store
        .series(SeriesRequest {
            min_time: 0,
            max_time: 10 * HOUR,
            matchers: matchers.to_vec(),
            ..SeriesRequest::default()
        })
        .await
        .expect("series");
    let selected = counting.gets.load(Ordering::SeqCst) - start;
    let mut after_first = None;
    let mut out = Data::new();
    while let Some(frame) = stream.next().await {
        if after_first.is_none() {
            after_first = Some(counting.gets.load(Ordering::SeqCst) - start);
        }
        if let Some(Frame::Series(s)) = frame.expect("frame").result {
            let l = gauntlet::query::endpoints::labels_from_proto(&s.labels);
            let mut samples = Vec::new();
            for c in &s.chunks {
                let raw = c.raw.as_ref().expect("raw chunk");
                for sample in XorIterator::new(&raw.data).expect("xor") {
                    samples.push(sample.expect("sample"));
                }
            }
            assert!(out.insert(l, samples).is_none(), "series unique");
        }
    }
    let total = counting.gets.load(Ordering::SeqCst) - start;
    (out, [selected, after_first.unwrap_or(total), total])
}

#[tokio::test]
async fn a_series_answer_is_read_one_batch_at_a_time() {
    let f = fixture();
    let matchers = [m(Type::Eq, "__name__", "http_requests_total")];
    let want = expected(&f.data, &matchers, 0, 10 * HOUR);
    let mut reads = Vec::new();
    for batch in [4, 1000] {
        let counting = Arc::new(Counting {
            inner: local(&f.bucket_dir),
            gets: AtomicUsize::new(0),
        });
        let mut config = BucketStoreConfig::new(f.data_dir.join(batch.to_string()));
        config.series_batch_size = batch;
        let store = BucketStore::new(counting.clone(), config);
        store.sync().await.expect("sync");
        let (got, counts) = read_lazily(&store, &counting, &matchers).await;
        assert!(
            got == want,
            "batches of {batch}: the answer differs from the data"
        );
        reads.push(counts);
    }
    let [small, large] = [reads[0], reads[1]];
    // Both resolve the same postings before answering.
    assert_eq!(small[0], large[0]);
    // With batches smaller than a block's 36 series, the first frame is answered before
    // every series entry and chunk is read: the rest is read as the answer is consumed.
    assert!(
        small[1] < small[2],
        "batches of 4 read everything before the first frame: {small:?}"
    );
    assert!(
        small[2] > large[2],
        "batches of 4 should take more, smaller reads than one batch: {small:?} vs {large:?}"
    );
}

#[tokio::test]
async fn an_external_label_also_in_the_index_keeps_series_sorted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bucket_dir = dir.path().join("bucket");
    std::fs::create_dir_all(&bucket_dir).expect("mkdir");
    // In the index the series are in the order of `a`, which the external label `a="z"`
    // replaces: the answer must follow `b`, the reverse.
    let block_series: Vec<(Labels, Vec<(i64, f64)>)> = (0..10u32)
        .map(|i| {
            let a = i.to_string();
            let b = (9 - i).to_string();
            let samples = (0..240u32)
                .map(|k| (i64::from(k) * STEP, f64::from(i * k)))
                .collect();
            (labels(&[("__name__", "m"), ("a", &a), ("b", &b)]), samples)
        })
        .collect();
    let mut data = Data::new();
    write_block(&bucket_dir, &[("a", "z")], &block_series, &mut data);
    let mut config = BucketStoreConfig::new(dir.path().join("data"));
    config.series_batch_size = 3;
    let store = BucketStore::new(local(&bucket_dir), config);
    store.sync().await.expect("sync");
    let matchers = [m(Type::Eq, "__name__", "m")];
    let (got, warnings) = series(&store, &matchers, 0, 4 * HOUR)
        .await
        .expect("series");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(
        got == expected(&data, &matchers, 0, 4 * HOUR),
        "answer differs from the data"
    );
}
