//! `format=arrow` on `query` and `query_range`: the result as an Apache Arrow IPC stream, for
//! notebooks and dataframes (pyarrow, polars, DuckDB) without JSON parsing.
//!
//! Schema — one row per point, "long" form:
//!
//! | column | type | meaning |
//! |---|---|---|
//! | one per label name, sorted (`__name__`, `job`, ...) | `Dictionary<Int32, Utf8>`, nullable | the series' label value, null when the series lacks the label |
//! | `timestamp` | `Timestamp(Millisecond, "UTC")` | the point's time |
//! | `value` | `Float64` (`Utf8` for string results) | the point's value |
//!
//! Schema metadata carries `resultType` (`vector`, `matrix`, `scalar`, `string`) and, when
//! present, `warnings` and `infos` (newline-separated). Series appear in result order; a series'
//! points are contiguous and in time order. Errors are still answered as JSON.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, StringBuilder, StringDictionaryBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, TimeUnit};
use arrow::error::ArrowError;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use gauntlet_tsdb::Labels;

use crate::promql::{QueryResult, Value};

/// The `Content-Type` of an Arrow IPC stream.
pub const CONTENT_TYPE: &str = "application/vnd.apache.arrow.stream";

/// Encodes a query result as an Arrow IPC stream. Native histogram samples have no column yet
/// and are refused rather than written as wrong floats.
pub fn encode(result: &QueryResult) -> Result<Vec<u8>, ArrowError> {
    let has_histograms = match &result.value {
        Value::Vector(samples) => samples.iter().any(|s| s.h.is_some()),
        Value::Matrix(series) => series
            .iter()
            .any(|s| s.points.iter().any(|p| p.h.is_some())),
        Value::Scalar(_) | Value::String { .. } => false,
    };
    if has_histograms {
        return Err(ArrowError::NotYetImplemented(
            "format=arrow does not carry native histograms yet; ask for JSON".to_owned(),
        ));
    }
    let series: Vec<&Labels> = match &result.value {
        Value::Vector(samples) => samples.iter().map(|s| &s.labels).collect(),
        Value::Matrix(series) => series.iter().map(|s| &s.labels).collect(),
        Value::Scalar(_) | Value::String { .. } => Vec::new(),
    };
    let names: BTreeSet<&str> = series
        .iter()
        .flat_map(|labels| labels.iter().map(|l| l.name.as_str()))
        .collect();
    let mut columns = Columns::new(names.into_iter().collect());
    match &result.value {
        Value::Vector(samples) => {
            for sample in samples {
                columns.append_labels(&sample.labels, 1)?;
                columns.timestamps.append_value(sample.t);
                columns.floats.append_value(sample.v);
            }
        }
        Value::Matrix(series) => {
            for one in series {
                columns.append_labels(&one.labels, one.points.len())?;
                for point in &one.points {
                    columns.timestamps.append_value(point.t);
                    columns.floats.append_value(point.v);
                }
            }
        }
        Value::Scalar(point) => {
            columns.timestamps.append_value(point.t);
            columns.floats.append_value(point.v);
        }
        Value::String { t, value } => {
            columns.timestamps.append_value(*t);
            columns.strings.append_value(value);
        }
    }
    let is_string = matches!(result.value, Value::String { .. });

    let mut metadata = HashMap::from([(
        "resultType".to_owned(),
        result_type(&result.value).to_owned(),
    )]);
    if !result.warnings.is_empty() {
        metadata.insert("warnings".to_owned(), result.warnings.join("\n"));
    }
    if !result.infos.is_empty() {
        metadata.insert("infos".to_owned(), result.infos.join("\n"));
    }
    let (fields, arrays) = columns.finish(is_string);
    let schema = Arc::new(Schema::new_with_metadata(fields, metadata));
    let batch = RecordBatch::try_new(schema.clone(), arrays)?;

    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new(&mut out, &schema)?;
    writer.write(&batch)?;
    writer.finish()?;
    drop(writer);
    Ok(out)
}

fn result_type(value: &Value) -> &'static str {
    match value {
        Value::Scalar(_) => "scalar",
        Value::String { .. } => "string",
        Value::Vector(_) => "vector",
        Value::Matrix(_) => "matrix",
    }
}

/// The column builders of one result.
struct Columns<'a> {
    names: Vec<&'a str>,
    labels: Vec<StringDictionaryBuilder<Int32Type>>,
    timestamps: TimestampMillisecondBuilder,
    floats: Float64Builder,
    strings: StringBuilder,
}

impl<'a> Columns<'a> {
    fn new(names: Vec<&'a str>) -> Self {
        Self {
            labels: names
                .iter()
                .map(|_| StringDictionaryBuilder::new())
                .collect(),
            names,
            timestamps: TimestampMillisecondBuilder::new().with_timezone("UTC"),
            floats: Float64Builder::new(),
            strings: StringBuilder::new(),
        }
    }

    /// Appends `labels` to every label column `rows` times (null where a label is missing).
    fn append_labels(&mut self, labels: &Labels, rows: usize) -> Result<(), ArrowError> {
        for (name, builder) in self.names.iter().zip(&mut self.labels) {
            match labels.get(name) {
                Some(value) => {
                    for _ in 0..rows {
                        builder.append(value)?;
                    }
                }
                None => builder.append_nulls(rows),
            }
        }
        Ok(())
    }

    fn finish(mut self, is_string: bool) -> (Vec<Field>, Vec<ArrayRef>) {
        let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let mut fields: Vec<Field> = self
            .names
            .iter()
            .map(|name| Field::new(*name, dictionary.clone(), true))
            .collect();
        let mut arrays: Vec<ArrayRef> = self
            .labels
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        let utc = Some("UTC".into());
        fields.push(Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, utc),
            false,
        ));
        arrays.push(Arc::new(self.timestamps.finish()));
        if is_string {
            fields.push(Field::new("value", DataType::Utf8, false));
            arrays.push(Arc::new(self.strings.finish()));
        } else {
            fields.push(Field::new("value", DataType::Float64, false));
            arrays.push(Arc::new(self.floats.finish()));
        }
        (fields, arrays)
    }
}
