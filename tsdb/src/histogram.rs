//! Native histograms in their float form, as PromQL sees them: schema (exponential schemas
//! -4..=8, or custom buckets), zero bucket, positive and negative buckets laid out in spans,
//! count, sum and a counter reset hint, plus the operations query evaluation needs (adding,
//! subtracting, scaling, compacting, resolution reduction, counter reset detection and bucket
//! iteration with bounds).
//!
//! Operations never panic: incompatible inputs are a [`HistogramError`]. Bucket arithmetic goes
//! through one sparse form, a sorted list of `(index, count)` pairs, so every operation is a
//! merge of two such lists.

use thiserror::Error;

/// The schema of native histograms with custom bucket bounds.
pub const CUSTOM_BUCKETS_SCHEMA: i32 = -53;
/// The coarsest exponential schema.
pub const EXPONENTIAL_SCHEMA_MIN: i32 = -4;
/// The finest exponential schema.
pub const EXPONENTIAL_SCHEMA_MAX: i32 = 8;

/// Why two histograms cannot be combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum HistogramError {
    /// One uses custom buckets, the other exponential ones.
    #[error(
        "cannot apply this operation to histograms with a mix of exponential and custom bucket schemas"
    )]
    IncompatibleSchema,
    /// Both use custom buckets but with different bounds.
    #[error("cannot apply this operation to histograms with different custom bucket boundaries")]
    IncompatibleBounds,
}

/// What the writer knew about counter resets when the histogram was appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CounterResetHint {
    /// Nothing is known; readers detect resets themselves.
    #[default]
    Unknown,
    /// This histogram follows a counter reset.
    CounterReset,
    /// This histogram is known not to follow a counter reset.
    NotCounterReset,
    /// A gauge histogram: it may go up and down.
    Gauge,
}

/// A run of consecutive buckets: `offset` is relative to the end of the previous span (to
/// index 0 for the first span).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// Gap before this span.
    pub offset: i32,
    /// Number of buckets in it.
    pub length: u32,
}

/// One bucket with its bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Lower bound.
    pub lower: f64,
    /// Upper bound.
    pub upper: f64,
    /// Whether `lower` itself belongs to the bucket.
    pub lower_inclusive: bool,
    /// Whether `upper` itself belongs to the bucket.
    pub upper_inclusive: bool,
    /// Observations in the bucket.
    pub count: f64,
    /// Bucket index in its schema.
    pub index: i32,
}

/// A native histogram with float counts.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FloatHistogram {
    /// Counter reset hint.
    pub counter_reset_hint: CounterResetHint,
    /// Resolution: -4..=8 exponential, or [`CUSTOM_BUCKETS_SCHEMA`].
    pub schema: i32,
    /// Width of the zero bucket (observations with `|v| <= zero_threshold`).
    pub zero_threshold: f64,
    /// Observations in the zero bucket.
    pub zero_count: f64,
    /// Total observations.
    pub count: f64,
    /// Sum of observations.
    pub sum: f64,
    /// Layout of `positive_buckets`.
    pub positive_spans: Vec<Span>,
    /// Layout of `negative_buckets`.
    pub negative_spans: Vec<Span>,
    /// Absolute counts of the positive buckets.
    pub positive_buckets: Vec<f64>,
    /// Absolute counts of the negative buckets.
    pub negative_buckets: Vec<f64>,
    /// Upper bounds of the custom buckets (schema [`CUSTOM_BUCKETS_SCHEMA`] only); the last
    /// bucket, one past these, reaches +Inf.
    pub custom_values: Vec<f64>,
}

/// Sparse bucket list: `(index, count)` in increasing index order.
type Sparse = Vec<(i32, f64)>;

/// Expands spans and counts into `(index, count)` pairs.
fn expand(spans: &[Span], buckets: &[f64]) -> Sparse {
    let mut out = Vec::with_capacity(buckets.len());
    let mut idx: i32 = 0;
    let mut it = buckets.iter();
    for (n, s) in spans.iter().enumerate() {
        idx = if n == 0 {
            s.offset
        } else {
            idx.saturating_add(s.offset)
        };
        for _ in 0..s.length {
            let Some(&c) = it.next() else {
                return out;
            };
            out.push((idx, c));
            idx = idx.saturating_add(1);
        }
    }
    out
}

/// Lays `(index, count)` pairs (sorted, unique) out as spans and counts.
fn collapse(sparse: &[(i32, f64)]) -> (Vec<Span>, Vec<f64>) {
    let mut spans: Vec<Span> = Vec::new();
    let mut counts = Vec::with_capacity(sparse.len());
    let mut next: Option<i32> = None;
    for &(i, c) in sparse {
        match (next, spans.last_mut()) {
            (Some(n), Some(last)) if n == i => last.length += 1,
            (Some(n), _) => spans.push(Span {
                offset: i.saturating_sub(n),
                length: 1,
            }),
            (None, _) => spans.push(Span {
                offset: i,
                length: 1,
            }),
        }
        counts.push(c);
        next = Some(i.saturating_add(1));
    }
    (spans, counts)
}

/// Merges two sorted sparse lists, combining counts at equal indexes with `f`.
fn merge(a: &[(i32, f64)], b: &[(i32, f64)], f: impl Fn(f64, f64) -> f64) -> Sparse {
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x.0 == y.0 => {
                out.push((x.0, f(x.1, y.1)));
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x.0 < y.0 => {
                out.push((x.0, f(x.1, 0.0)));
                i += 1;
            }
            (_, Some(y)) => {
                out.push((y.0, f(0.0, y.1)));
                j += 1;
            }
            (Some(x), None) => {
                out.push((x.0, f(x.1, 0.0)));
                i += 1;
            }
            (None, None) => break,
        }
    }
    out
}

/// Maps bucket indexes of `from` schema onto the coarser `to` schema, summing counts.
fn reduce(sparse: &[(i32, f64)], from: i32, to: i32) -> Sparse {
    if to >= from {
        return sparse.to_vec();
    }
    let shift = u32::try_from(from - to).unwrap_or(0).min(31);
    let mut out: Sparse = Vec::with_capacity(sparse.len());
    for &(i, c) in sparse {
        let t = (i.saturating_sub(1) >> shift).saturating_add(1);
        match out.last_mut() {
            Some(last) if last.0 == t => last.1 += c,
            _ => out.push((t, c)),
        }
    }
    out
}

/// True for the exponential schemas.
pub fn is_exponential_schema(schema: i32) -> bool {
    (EXPONENTIAL_SCHEMA_MIN..=EXPONENTIAL_SCHEMA_MAX).contains(&schema)
}

/// Upper bound of bucket `idx` in an exponential schema: `2^(idx * 2^-schema)`; the last
/// finite bucket ends at `f64::MAX` so that ±Inf observations have a bucket of their own.
pub fn exponential_bound(idx: i32, schema: i32) -> f64 {
    let schema = schema.clamp(EXPONENTIAL_SCHEMA_MIN, EXPONENTIAL_SCHEMA_MAX);
    if schema <= 0 {
        let exp = i64::from(idx) << (-schema);
        if exp == 1024 {
            return f64::MAX;
        }
        return ldexp(1.0, exp);
    }
    let frac_idx = idx & ((1 << schema) - 1);
    let frac = (f64::from(frac_idx) / f64::from(1 << schema)).exp2() / 2.0;
    let exp = i64::from(idx >> schema) + 1;
    if frac == 0.5 && exp == 1025 {
        return f64::MAX;
    }
    ldexp(frac, exp)
}

/// `frac * 2^exp` without intermediate overflow or underflow.
fn ldexp(frac: f64, exp: i64) -> f64 {
    let mut x = frac;
    let mut e = exp.clamp(-2200, 2200);
    while e > 1000 {
        x *= 2f64.powi(1000);
        e -= 1000;
    }
    while e < -1000 {
        x *= 2f64.powi(-1000);
        e += 1000;
    }
    // `e` is within ±1000 here.
    x * 2f64.powi(i32::try_from(e).unwrap_or(0))
}

impl FloatHistogram {
    /// True when this histogram has custom bucket bounds.
    pub fn uses_custom_buckets(&self) -> bool {
        self.schema == CUSTOM_BUCKETS_SCHEMA
    }

    /// Upper bound of bucket `idx` in this histogram's schema.
    pub fn bound(&self, idx: i32) -> f64 {
        if self.uses_custom_buckets() {
            let len = self.custom_values.len();
            return match usize::try_from(idx) {
                Ok(i) if i < len => self.custom_values[i],
                Ok(_) => f64::INFINITY,
                Err(_) => f64::NEG_INFINITY,
            };
        }
        exponential_bound(idx, self.schema)
    }

    /// Positive buckets as `(index, count)`.
    pub fn positive_indexed(&self) -> Vec<(i32, f64)> {
        expand(&self.positive_spans, &self.positive_buckets)
    }

    /// Negative buckets as `(index, count)`.
    pub fn negative_indexed(&self) -> Vec<(i32, f64)> {
        expand(&self.negative_spans, &self.negative_buckets)
    }

    /// Replaces the positive buckets.
    pub fn set_positive(&mut self, sparse: &[(i32, f64)]) {
        (self.positive_spans, self.positive_buckets) = collapse(sparse);
    }

    /// Replaces the negative buckets.
    pub fn set_negative(&mut self, sparse: &[(i32, f64)]) {
        (self.negative_spans, self.negative_buckets) = collapse(sparse);
    }

    fn bucket(&self, idx: i32, count: f64, positive: bool) -> Bucket {
        let (lower, upper) = if positive {
            (self.bound(idx - 1), self.bound(idx))
        } else {
            (-self.bound(idx), -self.bound(idx - 1))
        };
        let (lower_inclusive, upper_inclusive) = if self.uses_custom_buckets() {
            (idx == 0, true)
        } else {
            (lower < 0.0, upper > 0.0)
        };
        Bucket {
            lower,
            upper,
            lower_inclusive,
            upper_inclusive,
            count,
            index: idx,
        }
    }

    /// Positive buckets with bounds, ascending.
    pub fn positive_bucket_list(&self) -> Vec<Bucket> {
        self.positive_indexed()
            .into_iter()
            .map(|(i, c)| self.bucket(i, c, true))
            .collect()
    }

    /// Negative buckets with bounds, from the one closest to zero outwards.
    pub fn negative_bucket_list(&self) -> Vec<Bucket> {
        self.negative_indexed()
            .into_iter()
            .map(|(i, c)| self.bucket(i, c, false))
            .collect()
    }

    /// The zero bucket (none for custom buckets).
    pub fn zero_bucket(&self) -> Option<Bucket> {
        (!self.uses_custom_buckets()).then_some(Bucket {
            lower: -self.zero_threshold,
            upper: self.zero_threshold,
            lower_inclusive: true,
            upper_inclusive: true,
            count: self.zero_count,
            index: 0,
        })
    }

    /// Every bucket in increasing order of bounds: negative buckets, the zero bucket (when it
    /// has a count), positive buckets; bucket bounds reaching into the zero bucket are clamped
    /// to its threshold.
    pub fn all_buckets(&self) -> Vec<Bucket> {
        let z = self.zero_threshold;
        let clamp = |mut b: Bucket| {
            if b.upper < 0.0 && b.upper > -z {
                b.upper = -z;
            }
            if b.lower > 0.0 && b.lower < z {
                b.lower = z;
            }
            b
        };
        let mut out: Vec<Bucket> = self
            .negative_bucket_list()
            .into_iter()
            .rev()
            .map(clamp)
            .collect();
        if let Some(zb) = self.zero_bucket()
            && zb.count > 0.0
        {
            out.push(zb);
        }
        out.extend(self.positive_bucket_list().into_iter().map(clamp));
        out
    }

    /// Multiplies every count and the sum by `factor`.
    pub fn mul(&mut self, factor: f64) {
        self.scale(|c| c * factor);
    }

    /// Divides every count and the sum by `divisor`; division by zero drops all buckets.
    pub fn div(&mut self, divisor: f64) {
        self.scale(|c| c / divisor);
        if divisor == 0.0 {
            self.set_positive(&[]);
            self.set_negative(&[]);
        }
    }

    fn scale(&mut self, f: impl Fn(f64) -> f64) {
        self.zero_count = f(self.zero_count);
        self.count = f(self.count);
        self.sum = f(self.sum);
        for c in self
            .positive_buckets
            .iter_mut()
            .chain(&mut self.negative_buckets)
        {
            *c = f(*c);
        }
    }

    /// Removes empty buckets (and with them empty spans).
    pub fn compact(&mut self) {
        let keep =
            |v: Vec<(i32, f64)>| -> Sparse { v.into_iter().filter(|x| x.1 != 0.0).collect() };
        let p = keep(self.positive_indexed());
        let n = keep(self.negative_indexed());
        self.set_positive(&p);
        self.set_negative(&n);
    }

    /// Lowers the resolution to `target` (a no-op unless `target` is a coarser exponential
    /// schema).
    pub fn reduce_resolution(&mut self, target: i32) {
        if self.uses_custom_buckets() || target >= self.schema {
            return;
        }
        let p = reduce(&self.positive_indexed(), self.schema, target);
        let n = reduce(&self.negative_indexed(), self.schema, target);
        self.set_positive(&p);
        self.set_negative(&n);
        self.schema = target;
    }

    /// Zero count and threshold this histogram would have if its zero bucket were widened to
    /// at least `larger`; the threshold grows further when `larger` ends inside a populated
    /// bucket.
    fn zero_count_for_larger_threshold(&self, larger: f64) -> (f64, f64) {
        let mut threshold = larger;
        if threshold <= self.zero_threshold {
            return (self.zero_count, self.zero_threshold);
        }
        'outer: loop {
            let mut count = self.zero_count;
            for b in self.positive_bucket_list() {
                if b.lower >= threshold {
                    break;
                }
                count += b.count;
                if b.upper > threshold {
                    if b.count != 0.0 {
                        threshold = b.upper;
                    }
                    break;
                }
            }
            for b in self.negative_bucket_list() {
                if b.upper <= -threshold {
                    break;
                }
                count += b.count;
                if b.lower < -threshold {
                    if b.count != 0.0 {
                        threshold = -b.lower;
                        continue 'outer;
                    }
                    break;
                }
            }
            return (count, threshold);
        }
    }

    /// Widens the zero bucket to `threshold` (as returned by
    /// `zero_count_for_larger_threshold`), dropping the buckets it swallows.
    fn widen_zero_bucket(&mut self, count: f64, threshold: f64) {
        self.zero_count = count;
        self.zero_threshold = threshold;
        let pos: Sparse = self
            .positive_bucket_list()
            .into_iter()
            .filter(|b| b.lower >= threshold)
            .map(|b| (b.index, b.count))
            .collect();
        let neg: Sparse = self
            .negative_bucket_list()
            .into_iter()
            .filter(|b| b.upper <= -threshold)
            .map(|b| (b.index, b.count))
            .collect();
        self.set_positive(&pos);
        self.set_negative(&neg);
    }

    /// Makes the zero buckets of `self` and `other` equally wide; returns `other`'s zero count
    /// for that width.
    fn reconcile_zero_buckets(&mut self, other: &FloatHistogram) -> f64 {
        let mut other_count = other.zero_count;
        let mut other_threshold = other.zero_threshold;
        // Each round only ever widens, so this ends.
        for _ in 0..64 {
            if other_threshold == self.zero_threshold {
                break;
            }
            if self.zero_threshold > other_threshold {
                (other_count, other_threshold) =
                    other.zero_count_for_larger_threshold(self.zero_threshold);
            }
            if other_threshold > self.zero_threshold {
                let (c, t) = self.zero_count_for_larger_threshold(other_threshold);
                self.widen_zero_bucket(c, t);
            }
        }
        other_count
    }

    fn check_compatible(&self, other: &FloatHistogram) -> Result<(), HistogramError> {
        if self.uses_custom_buckets() != other.uses_custom_buckets() {
            return Err(HistogramError::IncompatibleSchema);
        }
        if self.uses_custom_buckets() && !floats_match(&self.custom_values, &other.custom_values) {
            return Err(HistogramError::IncompatibleBounds);
        }
        Ok(())
    }

    /// Adds `other` into `self` (reducing to the coarser schema and the wider zero bucket).
    pub fn add(&mut self, other: &FloatHistogram) -> Result<(), HistogramError> {
        self.check_compatible(other)?;
        self.counter_reset_hint = match (self.counter_reset_hint, other.counter_reset_hint) {
            (a, b) if a == b => a,
            (CounterResetHint::Gauge, _) | (_, CounterResetHint::Gauge) => CounterResetHint::Gauge,
            _ => CounterResetHint::Unknown,
        };
        self.combine(other, 1.0);
        Ok(())
    }

    /// Subtracts `other` from `self` (reducing to the coarser schema and the wider zero
    /// bucket).
    pub fn sub(&mut self, other: &FloatHistogram) -> Result<(), HistogramError> {
        self.check_compatible(other)?;
        self.combine(other, -1.0);
        Ok(())
    }

    /// `self += sign * other`, for compatible histograms.
    fn combine(&mut self, other: &FloatHistogram, sign: f64) {
        if !self.uses_custom_buckets() {
            let oz = self.reconcile_zero_buckets(other);
            self.zero_count += sign * oz;
        }
        self.count += sign * other.count;
        self.sum += sign * other.sum;
        let target = self.schema.min(other.schema);
        self.reduce_resolution(target);
        let threshold = self.zero_threshold;
        let exponential = !self.uses_custom_buckets();
        // Buckets of `other` inside the (possibly widened) zero bucket were counted there.
        let outside = |v: Sparse| -> Sparse {
            v.into_iter()
                .filter(|&(i, _)| !exponential || exponential_bound(i, target) > threshold)
                .collect()
        };
        let op = reduce(&other.positive_indexed(), other.schema, target);
        let on = reduce(&other.negative_indexed(), other.schema, target);
        let p = merge(&self.positive_indexed(), &outside(op), |a, b| a + sign * b);
        self.set_positive(&p);
        if exponential {
            let n = merge(&self.negative_indexed(), &outside(on), |a, b| a + sign * b);
            self.set_negative(&n);
        }
    }

    /// True when `self`, following `previous`, shows a counter reset: its hint says so, or
    /// (with no decisive hint) the count, the zero bucket or any bucket went down, the schema
    /// got finer, or the zero bucket got narrower.
    pub fn detect_reset(&self, previous: &FloatHistogram) -> bool {
        match self.counter_reset_hint {
            CounterResetHint::CounterReset => return true,
            CounterResetHint::NotCounterReset => return false,
            _ => {}
        }
        if self.count < previous.count {
            return true;
        }
        if self.uses_custom_buckets() {
            if !previous.uses_custom_buckets()
                || !floats_match(&self.custom_values, &previous.custom_values)
            {
                return true;
            }
        } else if previous.uses_custom_buckets() {
            return true;
        }
        if self.schema > previous.schema || self.zero_threshold < previous.zero_threshold {
            return true;
        }
        let (prev_zero, threshold) = previous.zero_count_for_larger_threshold(self.zero_threshold);
        if threshold != self.zero_threshold || self.zero_count < prev_zero {
            return true;
        }
        let exponential = !self.uses_custom_buckets();
        let decreased = |cur: Sparse, prev: Sparse| {
            let prev: Sparse = reduce(&prev, previous.schema, self.schema)
                .into_iter()
                .filter(|&(i, _)| !exponential || exponential_bound(i, self.schema) > threshold)
                .collect();
            merge(&cur, &prev, |c, p| if c < p { -1.0 } else { 0.0 })
                .iter()
                .any(|x| x.1 < 0.0)
        };
        decreased(self.positive_indexed(), previous.positive_indexed())
            || decreased(self.negative_indexed(), previous.negative_indexed())
    }

    /// Equality after dropping empty buckets, as PromQL compares histograms.
    pub fn equals(&self, other: &FloatHistogram) -> bool {
        let mut a = self.clone();
        let mut b = other.clone();
        a.compact();
        b.compact();
        a.schema == b.schema
            && same_float(a.zero_threshold, b.zero_threshold)
            && same_float(a.zero_count, b.zero_count)
            && same_float(a.count, b.count)
            && same_float(a.sum, b.sum)
            && a.positive_spans == b.positive_spans
            && a.negative_spans == b.negative_spans
            && floats_match(&a.positive_buckets, &b.positive_buckets)
            && floats_match(&a.negative_buckets, &b.negative_buckets)
            && (!a.uses_custom_buckets() || floats_match(&a.custom_values, &b.custom_values))
    }
}

fn same_float(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

fn floats_match(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_float(*x, *y))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn h(schema: i32, pos: &[(i32, f64)]) -> FloatHistogram {
        let mut h = FloatHistogram {
            schema,
            count: pos.iter().map(|x| x.1).sum(),
            ..FloatHistogram::default()
        };
        h.set_positive(pos);
        h
    }

    #[test]
    fn spans_roundtrip() {
        let mut x = h(0, &[(-2, 1.0), (-1, 2.0), (3, 4.0)]);
        assert_eq!(
            x.positive_spans,
            vec![
                Span {
                    offset: -2,
                    length: 2
                },
                Span {
                    offset: 3,
                    length: 1
                }
            ]
        );
        assert_eq!(x.positive_indexed(), vec![(-2, 1.0), (-1, 2.0), (3, 4.0)]);
        x.positive_buckets[1] = 0.0;
        x.compact();
        assert_eq!(x.positive_spans.len(), 2);
        assert_eq!(x.positive_buckets, vec![1.0, 4.0]);
    }

    #[test]
    fn bounds() {
        assert_eq!(exponential_bound(1, 0), 2.0);
        assert_eq!(exponential_bound(0, 0), 1.0);
        assert_eq!(exponential_bound(-1, 0), 0.5);
        assert!((exponential_bound(1, 1) - 2f64.sqrt()).abs() < 1e-15);
        assert_eq!(exponential_bound(2, 1), 2.0);
        assert_eq!(exponential_bound(1, -1), 4.0);
        assert_eq!(exponential_bound(1024, 0), f64::MAX);
        let c = FloatHistogram {
            schema: CUSTOM_BUCKETS_SCHEMA,
            custom_values: vec![1.0, 5.0],
            ..FloatHistogram::default()
        };
        assert_eq!(c.bound(-1), f64::NEG_INFINITY);
        assert_eq!(c.bound(1), 5.0);
        assert_eq!(c.bound(2), f64::INFINITY);
    }

    #[test]
    fn add_reduces_schema() {
        let mut a = h(1, &[(1, 1.0), (2, 2.0)]);
        let b = h(0, &[(1, 10.0)]);
        a.add(&b).unwrap();
        assert_eq!(a.schema, 0);
        assert_eq!(a.positive_indexed(), vec![(1, 13.0)]);
        assert_eq!(a.count, 13.0);
        let mut c = a.clone();
        c.sub(&b).unwrap();
        assert_eq!(c.positive_indexed(), vec![(1, 3.0)]);
    }

    #[test]
    fn add_widens_zero_bucket() {
        let mut a = h(0, &[(0, 1.0), (2, 2.0)]);
        a.zero_threshold = 0.001;
        let mut b = h(0, &[(1, 4.0)]);
        b.zero_threshold = 1.0;
        b.zero_count = 1.0;
        a.add(&b).unwrap();
        assert_eq!(a.zero_threshold, 1.0);
        assert_eq!(a.zero_count, 2.0);
        assert_eq!(a.positive_indexed(), vec![(1, 4.0), (2, 2.0)]);
    }

    #[test]
    fn custom_buckets_must_match() {
        let mut a = FloatHistogram {
            schema: CUSTOM_BUCKETS_SCHEMA,
            custom_values: vec![1.0],
            ..FloatHistogram::default()
        };
        let mut b = a.clone();
        b.custom_values = vec![2.0];
        assert_eq!(a.add(&b), Err(HistogramError::IncompatibleBounds));
        assert_eq!(a.add(&h(0, &[])), Err(HistogramError::IncompatibleSchema));
    }

    #[test]
    fn resets() {
        let a = h(0, &[(1, 1.0), (2, 2.0)]);
        let mut b = h(0, &[(1, 2.0), (2, 2.0)]);
        assert!(!b.detect_reset(&a));
        b.positive_buckets[1] = 1.0;
        b.count = 10.0;
        assert!(b.detect_reset(&a));
        let finer = h(1, &[(2, 1.0), (4, 2.0)]);
        assert!(finer.detect_reset(&a));
        let coarser = h(-1, &[(1, 3.0)]);
        assert!(!coarser.detect_reset(&a));
    }

    #[test]
    fn extreme_indexes_do_not_overflow() {
        let mut a = h(2, &[(i32::MIN, 1.0), (i32::MAX, 2.0)]);
        a.reduce_resolution(-4);
        a.compact();
        let b = a.clone();
        a.add(&b).unwrap();
        let _ = a.detect_reset(&b);
        let _ = a.all_buckets();
    }

    #[test]
    fn div_by_zero_drops_buckets() {
        let mut a = h(0, &[(1, 1.0)]);
        a.div(0.0);
        assert!(a.positive_buckets.is_empty());
        assert_eq!(a.count, f64::INFINITY);
    }
}
