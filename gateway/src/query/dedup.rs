//! Replica deduplication with Thanos's penalty algorithm.
//!
//! Series that are equal once their replica labels are removed come from HA replicas scraping the
//! same targets. Their samples are merged into one series: the replica with the earliest next
//! sample wins, and the other is held back by a penalty of twice the last sample gap (5 s before
//! the first gap is known) so the merged series keeps the original scrape interval instead of
//! interleaving both replicas. When the query feeds a counter function (`rate`, `irate`,
//! `increase`, `resets`), switching to a replica whose counter is lower than the value just
//! returned adds the difference to that replica from then on, so a switch never looks like a
//! counter reset. More than two replicas are merged as a left-leaning chain of pairs, the order
//! Thanos uses, so results match it sample for sample.
//!
//! The merge is lazy: a replica that cannot win the next sample (its earliest admissible sample
//! would come after the leader's) is not advanced, and replicas kept as XOR chunks decode a chunk
//! only when a seek lands in it. A steady leader is therefore the only replica decoded in full;
//! the others are decoded around the leader's gaps. Input samples of each replica must be sorted
//! by timestamp.

use std::cell::RefCell;

use gauntlet_tsdb::chunkenc::{XorIterator, decode_xor_into};

use crate::promql::{Chunk, DeferredSamples, Point, StorageError};

/// A float sample: timestamp in milliseconds and value.
pub type Sample = (i64, f64);

/// Whether a query function reads its input as a counter, so that replica switches must not
/// produce artificial resets.
pub fn is_counter_function(function: &str) -> bool {
    matches!(function, "rate" | "irate" | "increase" | "resets")
}

/// Merges the replicas of one series, given as decoded samples, into a single sorted series.
pub fn dedup_replicas(replicas: &[&[Sample]], counter: bool) -> Vec<Sample> {
    let errors = RefCell::new(None);
    let leaves = replicas
        .iter()
        .map(|samples| Leaf::decoded(samples, counter, &errors));
    let mut merged = Vec::new();
    merge(leaves, (i64::MIN, i64::MAX), true, &mut merged);
    merged.into_iter().map(|p| (p.t, p.v)).collect()
}

/// The HA replicas of one series as XOR chunks, merged each time the engine reads the series:
/// the merged samples go straight into the engine's buffer and are never held for the whole
/// answer.
#[derive(Debug)]
pub struct ReplicaChunks {
    replicas: Vec<Vec<Chunk>>,
    counter: bool,
    /// The selection's range: the merge always starts here, so every read sees the same
    /// merged series whatever part of it it asks for.
    range: (i64, i64),
}

impl ReplicaChunks {
    /// Replicas of one series (each in time order) to be merged within `[mint, maxt]`; with
    /// `counter`, switches between replicas never look like counter resets.
    pub fn new(replicas: Vec<Vec<Chunk>>, counter: bool, mint: i64, maxt: i64) -> Self {
        Self {
            replicas,
            counter,
            range: (mint, maxt),
        }
    }
}

impl DeferredSamples for ReplicaChunks {
    fn decode_into(&self, mint: i64, maxt: i64, out: &mut Vec<Point>) -> Result<(), StorageError> {
        merge_chunks(
            &self.replicas,
            self.counter,
            self.range,
            (mint, maxt),
            true,
            out,
        )
        .map_err(StorageError)
    }
}

/// Merges chunked replicas over `range`, appending the merged samples within `window` to
/// `out`. Chunks of the replica that leads are decoded; the others only where needed.
fn merge_chunks<R: AsRef<[Chunk]>>(
    replicas: &[R],
    counter: bool,
    range: (i64, i64),
    window: (i64, i64),
    fast: bool,
    out: &mut Vec<Point>,
) -> Result<(), String> {
    let errors = RefCell::new(None);
    let leaves = replicas
        .iter()
        .map(|chunks| Leaf::chunked(chunks.as_ref(), counter, range, &errors));
    let capacity = replicas
        .iter()
        .map(|chunks| {
            chunks
                .as_ref()
                .iter()
                .map(|c| usize::from(header_count(c)))
                .sum::<usize>()
        })
        .max()
        .unwrap_or(0);
    out.reserve(capacity);
    merge(leaves, window, fast, out);
    match errors.into_inner() {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

fn header_count(chunk: &Chunk) -> u16 {
    chunk
        .data
        .get(..2)
        .map_or(0, |h| u16::from_be_bytes([h[0], h[1]]))
}

/// Merges the leaves as a left-leaning chain of pairs, appending the merged samples within
/// `[mint, maxt]` to `out` (the merged series only goes forward in time, so it stops after
/// `maxt`). With `fast`, runs of samples the leading replica is certain to win are copied in a
/// tight loop (see [`Cursor::run_leader`]); without it every sample goes through the pairs,
/// which the tests use as the reference.
fn merge<'a>(
    leaves: impl IntoIterator<Item = Leaf<'a>>,
    (mint, maxt): (i64, i64),
    fast: bool,
    out: &mut Vec<Point>,
) {
    let mut leaves = leaves.into_iter().map(Cursor::Leaf);
    let Some(first) = leaves.next() else {
        return;
    };
    let mut cursor = first;
    for leaf in leaves {
        cursor = Cursor::Pair(Box::new(Pair::new(cursor, leaf)));
    }
    while cursor.next() {
        let (t, v) = cursor.at();
        if t > maxt {
            break;
        }
        if t >= mint {
            out.push(Point::float(t, v));
        }
        if fast {
            cursor.run_leader(t, (mint, maxt), out);
        }
    }
}

/// Penalty applied to the replica not picked before the sampling interval is known (ms).
const INITIAL_PENALTY_MS: i64 = 5000;

/// Leader runs only cover timestamps within ±2^60 ms (36 million years), where the penalty
/// arithmetic needs no overflow checks; samples beyond go through the pairs.
const RUN_LIMIT: i64 = 1 << 60;

/// An iterator over one replica or over a merged pair, with chunk-iterator semantics: `next`
/// and `seek` position it, `at` reads the current sample.
enum Cursor<'a> {
    Leaf(Leaf<'a>),
    Pair(Box<Pair<'a>>),
}

impl Cursor<'_> {
    fn next(&mut self) -> bool {
        match self {
            Cursor::Leaf(leaf) => leaf.next(),
            Cursor::Pair(pair) => pair.next(),
        }
    }

    /// Moves to the first sample at or after `t`; no effect if the current one already is.
    fn seek(&mut self, t: i64) -> bool {
        match self {
            Cursor::Leaf(leaf) => leaf.seek(t),
            Cursor::Pair(pair) => pair.seek(t),
        }
    }

    fn at(&self) -> Sample {
        match self {
            Cursor::Leaf(leaf) => leaf.at(),
            Cursor::Pair(pair) => pair.at(),
        }
    }

    /// Counter correction on switching to this cursor after `last` was returned.
    fn adjust_at_value(&mut self, last: f64) {
        match self {
            Cursor::Leaf(leaf) => leaf.adjust_at_value(last),
            Cursor::Pair(pair) => pair.adjust_at_value(last),
        }
    }
}

impl<'a> Cursor<'a> {
    /// Appends the samples within `window` the merge is certain to return next, straight from
    /// the leading replica, after the sample just returned (at `start`).
    ///
    /// Every pair on the way down to the leading leaf leads with the same sample, and the
    /// sample-by-sample merge would seek each pair's other side to at least
    /// `last + 1 + penalty` before comparing: a leader sample at or before that bound (strictly
    /// before, when the leader is a pair's `b`, since ties go to `a`) wins whatever the other
    /// side holds. After the first step every pair's penalty is twice the last gap. The run
    /// stops at the first sample that might lose; the pairs are then left exactly as the
    /// sample-by-sample merge would have left them, their other sides' seeks still deferred.
    fn run_leader(&mut self, start: i64, (mint, maxt): (i64, i64), out: &mut Vec<Point>) {
        let mut first_bound = i64::MAX;
        let mut constrained = false;
        let mut strict = false;
        let mut node: &Cursor<'_> = self;
        let mut pairs = 0;
        while let Cursor::Pair(pair) = node {
            let (leader_deferred, other_ok, other_penalty) = if pair.use_a {
                (pair.deferred_a, pair.b_ok, pair.penalty_b)
            } else {
                (pair.deferred_b, pair.a_ok, pair.penalty_a)
            };
            if pair.last_t != Some(start) || !pair.current_ok() || leader_deferred.is_some() {
                return;
            }
            if other_ok {
                let target = start.saturating_add(1).saturating_add(other_penalty);
                let bound = if pair.use_a { target } else { target - 1 };
                first_bound = first_bound.min(bound);
                constrained = true;
                strict |= !pair.use_a;
            }
            node = if pair.use_a { &pair.a } else { &pair.b };
            pairs += 1;
        }
        if pairs == 0 {
            return;
        }
        let leaf = self.leading_leaf();
        // One sample at a time while the leader is a replica read only up to its current
        // sample: a leader that loses at once is not decoded further.
        leaf.pull();
        let correction = leaf.correction;
        if !(-RUN_LIMIT..=RUN_LIMIT).contains(&start) {
            return;
        }
        let (mut previous, mut current) = (start, start);
        let limit = RUN_LIMIT.min(maxt);
        let strict = i64::from(strict);
        let mut bound = first_bound;
        // The largest seek target of the other sides from the second step on (the same for
        // every pair); `i64::MIN` until then.
        let mut common = i64::MIN;
        let mut next_target = i64::MIN;
        let mut steps = 0usize;
        loop {
            let ahead = leaf.ahead();
            // Samples past the window or the run limit end the run.
            let candidates = &ahead[..ahead.partition_point(|&(t, _)| t <= limit)];
            let mut taken = 0;
            // Timestamps stay within ±RUN_LIMIT, so the arithmetic below cannot overflow.
            if constrained {
                for &(t, _) in candidates {
                    if t <= current || t > bound {
                        break;
                    }
                    common = common.max(next_target);
                    (previous, current) = (current, t);
                    next_target = t + 1 + (t - previous) * 2;
                    bound = next_target - strict;
                    taken += 1;
                }
            } else {
                // No other side to lose to: only the order matters.
                for &(t, _) in candidates {
                    if t <= current {
                        break;
                    }
                    (previous, current) = (current, t);
                    taken += 1;
                }
            }
            let run = &candidates[..taken];
            // Samples before the window are stepped over, not returned.
            let from = run.partition_point(|&(t, _)| t < mint);
            out.extend(
                run[from..]
                    .iter()
                    .map(|&(t, v)| Point::float(t, v + correction)),
            );
            steps += taken;
            let stopped = taken < ahead.len();
            leaf.skip(taken);
            if stopped || !leaf.refill() {
                break;
            }
        }
        let common_target = (common != i64::MIN).then_some(common);
        if steps == 0 {
            return;
        }
        let penalty = current.saturating_sub(previous).saturating_mul(2);
        let mut node: &mut Cursor<'_> = self;
        while let Cursor::Pair(pair) = node {
            let first_target = |penalty: i64| start.saturating_add(1).saturating_add(penalty);
            let defer = |deferred: &mut Option<i64>, first: i64| {
                let target = common_target.map_or(first, |c| c.max(first));
                *deferred = Some(deferred.map_or(target, |d| d.max(target)));
            };
            pair.last_t = Some(current);
            if pair.use_a {
                if pair.b_ok {
                    defer(&mut pair.deferred_b, first_target(pair.penalty_b));
                }
                pair.penalty_a = 0;
                pair.penalty_b = penalty;
                node = &mut pair.a;
            } else {
                if pair.a_ok {
                    defer(&mut pair.deferred_a, first_target(pair.penalty_a));
                }
                pair.penalty_b = 0;
                pair.penalty_a = penalty;
                node = &mut pair.b;
            }
        }
    }

    /// The leaf the chain of pairs currently takes its samples from.
    fn leading_leaf(&mut self) -> &mut Leaf<'a> {
        match self {
            Cursor::Leaf(leaf) => leaf,
            Cursor::Pair(pair) => {
                if pair.use_a {
                    pair.a.leading_leaf()
                } else {
                    pair.b.leading_leaf()
                }
            }
        }
    }
}

/// One replica's samples — decoded chunk by chunk on demand — with the counter correction
/// accumulated so far.
struct Leaf<'a> {
    /// Chunks not decoded yet.
    pending: &'a [Chunk],
    /// Decoded samples of the current chunk (or all samples of a decoded replica).
    buffer: Vec<Sample>,
    /// Index into `buffer`; `None` before the first `next` or `seek`.
    position: Option<usize>,
    /// The current chunk (with its last timestamp), read only up to the last sample in
    /// `buffer` so far: a replica that does not lead may never need the rest.
    partial: Option<(XorIterator<'a>, i64)>,
    range: (i64, i64),
    counter: bool,
    correction: f64,
    errors: &'a RefCell<Option<String>>,
}

impl<'a> Leaf<'a> {
    fn decoded(samples: &[Sample], counter: bool, errors: &'a RefCell<Option<String>>) -> Self {
        Self {
            pending: &[],
            buffer: samples.to_vec(),
            position: None,
            partial: None,
            range: (i64::MIN, i64::MAX),
            counter,
            correction: 0.0,
            errors,
        }
    }

    fn chunked(
        chunks: &'a [Chunk],
        counter: bool,
        range: (i64, i64),
        errors: &'a RefCell<Option<String>>,
    ) -> Self {
        let mut leaf = Self {
            pending: chunks,
            buffer: pooled_buffer(),
            position: None,
            partial: None,
            range,
            counter,
            correction: 0.0,
            errors,
        };
        // Overlapping chunks (a store that returned the same span twice) are decoded and merged
        // up front; the lazy path needs chunks in strict time order.
        if !chunks.windows(2).all(|w| w[0].max_time < w[1].min_time) {
            let mut all = Vec::new();
            for chunk in chunks {
                leaf.decode(chunk, &mut all);
            }
            all.sort_by_key(|(t, _)| *t);
            all.dedup_by_key(|(t, _)| *t);
            leaf.pending = &[];
            leaf.buffer = all;
        }
        leaf
    }

    fn decode(&self, chunk: &Chunk, out: &mut Vec<Sample>) {
        if let Err(error) = decode_xor_into(&chunk.data, self.range.0, self.range.1, out) {
            self.record(&error);
        }
    }

    /// Moves to the first sample at or after `at_least` (and within the range) of the next
    /// pending chunk that has one, decoding that chunk only up to it; false when none.
    fn load_next_chunk(&mut self, at_least: i64) -> bool {
        let bound = self.range.0.max(at_least);
        while let Some((chunk, rest)) = self.pending.split_first() {
            self.pending = rest;
            if chunk.max_time < bound || chunk.min_time > self.range.1 {
                continue;
            }
            let first = XorIterator::new(&chunk.data).and_then(|mut it| Ok((it.seek(bound)?, it)));
            match first {
                Ok((Some(sample), it)) if sample.0 <= self.range.1 => {
                    self.buffer.clear();
                    self.buffer.push(sample);
                    self.partial = Some((it, chunk.max_time));
                    self.position = Some(0);
                    return true;
                }
                Ok(_) => {}
                Err(error) => self.record(&error),
            }
        }
        false
    }

    fn record(&self, error: &dyn std::fmt::Display) {
        self.errors
            .borrow_mut()
            .get_or_insert_with(|| format!("decoding chunk: {error}"));
    }

    /// Decodes the rest of a chunk read only partly (up to the last sample in `buffer`).
    fn complete(&mut self) {
        if let Some((it, _)) = self.partial.take() {
            let (mint, maxt) = self.range;
            if let Err(error) = it.decode_rest_into(mint, maxt, &mut self.buffer) {
                self.record(&error);
            }
        }
    }

    /// Decodes one more sample of a chunk read only up to the current one, if nothing is
    /// decoded ahead of it.
    fn pull(&mut self) {
        if !self.ahead().is_empty() {
            return;
        }
        let Some((it, _)) = &mut self.partial else {
            return;
        };
        let (mint, maxt) = self.range;
        loop {
            match it.next_sample() {
                Ok(Some(sample)) if sample.0 < mint => {}
                Ok(Some(sample)) if sample.0 <= maxt => {
                    self.buffer.push(sample);
                    return;
                }
                Ok(_) => {
                    self.partial = None;
                    return;
                }
                Err(error) => {
                    self.partial = None;
                    self.record(&error);
                    return;
                }
            }
        }
    }

    /// The decoded samples after the current one (none before the first `next`; a chunk read
    /// only partly has at most one).
    fn ahead(&self) -> &[Sample] {
        match self.position {
            Some(position) => self.buffer.get(position + 1..).unwrap_or(&[]),
            None => &[],
        }
    }

    /// Moves `n` samples forward within the buffer.
    fn skip(&mut self, n: usize) {
        self.position = self.position.map(|p| p + n);
    }

    /// When the current sample is the buffer's last, decodes the next chunk that holds samples
    /// behind it; false when there is none (or the buffer still has samples ahead).
    fn refill(&mut self) -> bool {
        let Some(position) = self.position else {
            return false;
        };
        if position + 1 != self.buffer.len() {
            return false;
        }
        self.buffer.drain(..position);
        self.position = Some(0);
        if self.partial.is_some() {
            self.complete();
            if self.buffer.len() > 1 {
                return true;
            }
        }
        while let Some((chunk, rest)) = self.pending.split_first() {
            self.pending = rest;
            if chunk.max_time < self.range.0 || chunk.min_time > self.range.1 {
                continue;
            }
            let mut buffer = std::mem::take(&mut self.buffer);
            self.decode(chunk, &mut buffer);
            self.buffer = buffer;
            if self.buffer.len() > 1 {
                return true;
            }
        }
        false
    }

    fn next(&mut self) -> bool {
        self.complete();
        let position = self.position.map_or(0, |p| p.saturating_add(1));
        if position < self.buffer.len() {
            self.position = Some(position);
            return true;
        }
        self.position = Some(self.buffer.len());
        self.load_next_chunk(i64::MIN)
    }

    fn seek(&mut self, t: i64) -> bool {
        let start = self.position.unwrap_or(0).min(self.buffer.len());
        if self.buffer.get(start).is_some_and(|(ts, _)| *ts >= t) {
            self.position = Some(start);
            return true;
        }
        if self.buffer.last().is_some_and(|(ts, _)| *ts >= t) {
            let rest = &self.buffer[start..];
            self.position = Some(start + rest.partition_point(|(ts, _)| *ts < t));
            return true;
        }
        if let Some((mut it, max_time)) = self.partial.take() {
            // Only as far into the chunk as `t`; past its end, not at all.
            if t <= max_time {
                match it.seek(t) {
                    Ok(Some(sample)) if sample.0 <= self.range.1 => {
                        self.buffer.clear();
                        self.buffer.push(sample);
                        self.position = Some(0);
                        self.partial = Some((it, max_time));
                        return true;
                    }
                    Ok(_) => {}
                    Err(error) => self.record(&error),
                }
            }
            self.position = Some(self.buffer.len());
            return self.load_next_chunk(t);
        }
        self.position = Some(self.buffer.len());
        // Chunks that end before `t` are skipped without decoding them.
        self.load_next_chunk(t)
    }

    fn at(&self) -> Sample {
        let (t, v) = self
            .position
            .and_then(|p| self.buffer.get(p))
            .copied()
            .unwrap_or((i64::MIN, f64::NAN));
        (t, v + self.correction)
    }

    fn adjust_at_value(&mut self, last: f64) {
        if !self.counter {
            return;
        }
        let (_, value) = self.at();
        if last > value {
            self.correction += last - value;
        }
    }
}

impl Drop for Leaf<'_> {
    fn drop(&mut self) {
        let mut buffer = std::mem::take(&mut self.buffer);
        if buffer.capacity() == 0 || buffer.capacity() > POOLED_CAPACITY {
            return;
        }
        buffer.clear();
        BUFFERS.with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < POOLED_BUFFERS {
                pool.push(buffer);
            }
        });
    }
}

thread_local! {
    /// Decode buffers of finished merges, reused by the next ones on this thread: a query
    /// merges thousands of series, each with a buffer per replica.
    static BUFFERS: RefCell<Vec<Vec<Sample>>> = const { RefCell::new(Vec::new()) };
}

/// Buffers kept per thread, and the largest kept (in samples; a chunk holds at most 65,535).
const POOLED_BUFFERS: usize = 16;
const POOLED_CAPACITY: usize = 1 << 17;

fn pooled_buffer() -> Vec<Sample> {
    BUFFERS
        .with(|pool| pool.borrow_mut().pop())
        .unwrap_or_default()
}

/// Two cursors merged with the penalty algorithm. A side that cannot win the next comparison
/// keeps its seek target in `deferred_*` and is only moved when it matters; since seeks only go
/// forward, one seek to the largest deferred target lands where every seek in turn would have.
struct Pair<'a> {
    a: Cursor<'a>,
    b: Cursor<'a>,
    a_ok: bool,
    b_ok: bool,
    deferred_a: Option<i64>,
    deferred_b: Option<i64>,
    /// Timestamp of the last sample returned, `None` before the first.
    last_t: Option<i64>,
    penalty_a: i64,
    penalty_b: i64,
    use_a: bool,
}

impl<'a> Pair<'a> {
    fn new(mut a: Cursor<'a>, mut b: Cursor<'a>) -> Self {
        let a_ok = a.next();
        let b_ok = b.next();
        Self {
            a,
            b,
            a_ok,
            b_ok,
            deferred_a: None,
            deferred_b: None,
            last_t: None,
            penalty_a: 0,
            penalty_b: 0,
            use_a: true,
        }
    }

    fn current_ok(&self) -> bool {
        if self.use_a { self.a_ok } else { self.b_ok }
    }

    fn flush_a(&mut self) {
        if let Some(t) = self.deferred_a.take()
            && self.a_ok
        {
            self.a_ok = self.a.seek(t);
        }
    }

    fn flush_b(&mut self) {
        if let Some(t) = self.deferred_b.take()
            && self.b_ok
        {
            self.b_ok = self.b.seek(t);
        }
    }

    fn next(&mut self) -> bool {
        let last_value = self.current_ok().then(|| self.at().1);
        let used_a = self.use_a;
        let ok = self.advance();
        if let Some(last_value) = last_value
            && self.use_a != used_a
        {
            self.adjust_at_value(last_value);
        }
        ok
    }

    fn advance(&mut self) -> bool {
        let after = self.last_t.unwrap_or(i64::MIN).saturating_add(1);
        if self.a_ok {
            let target = after.saturating_add(self.penalty_a);
            self.deferred_a = Some(self.deferred_a.map_or(target, |t| t.max(target)));
        }
        if self.b_ok {
            let target = after.saturating_add(self.penalty_b);
            self.deferred_b = Some(self.deferred_b.map_or(target, |t| t.max(target)));
        }
        // Position the leader; the other side only if it could win: its next sample is at or
        // after its deferred target, and ties go to `a`.
        if self.use_a {
            self.flush_a();
            let a_at = self.a.at().0;
            if !(self.a_ok && self.deferred_b.is_some_and(|target| target >= a_at)) {
                self.flush_b();
            }
        } else {
            self.flush_b();
            let b_at = self.b.at().0;
            if !(self.b_ok && self.deferred_a.is_some_and(|target| target > b_at)) {
                self.flush_a();
            }
        }
        // From here on as the eager merge; a side still deferred is known to lose.
        if !self.a_ok {
            self.use_a = false;
            if self.b_ok {
                self.last_t = Some(self.b.at().0);
                self.penalty_b = 0;
            }
            return self.b_ok;
        }
        if !self.b_ok {
            self.use_a = true;
            self.last_t = Some(self.a.at().0);
            self.penalty_a = 0;
            return true;
        }
        self.use_a = match (self.deferred_a.is_some(), self.deferred_b.is_some()) {
            (true, _) => false,
            (_, true) => true,
            (false, false) => self.a.at().0 <= self.b.at().0,
        };
        let (picked, other_penalty) = if self.use_a {
            self.penalty_a = 0;
            (self.a.at().0, &mut self.penalty_b)
        } else {
            self.penalty_b = 0;
            (self.b.at().0, &mut self.penalty_a)
        };
        *other_penalty = match self.last_t {
            Some(last) => picked.saturating_sub(last).saturating_mul(2),
            None => INITIAL_PENALTY_MS,
        };
        self.last_t = Some(picked);
        true
    }

    fn seek(&mut self, t: i64) -> bool {
        // Step with `next` rather than seeking the replicas, so that gaps are not skipped.
        loop {
            let current = self.at().0;
            if current >= t {
                return if self.use_a {
                    self.a.seek(current)
                } else {
                    self.b.seek(current)
                };
            }
            if !self.next() {
                return false;
            }
        }
    }

    fn at(&self) -> Sample {
        if self.use_a { self.a.at() } else { self.b.at() }
    }

    fn adjust_at_value(&mut self, last: f64) {
        // The correction depends on each side's current value: both must be where the eager
        // merge would have them.
        self.flush_a();
        self.flush_b();
        if self.a_ok {
            self.a.adjust_at_value(last);
        }
        if self.b_ok {
            self.b.adjust_at_value(last);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chunked replicas merged over `range`, as `(t, v)` pairs.
    fn merged(
        replicas: &[&[Chunk]],
        counter: bool,
        range: (i64, i64),
        fast: bool,
    ) -> Result<Vec<Sample>, String> {
        let mut out = Vec::new();
        merge_chunks(replicas, counter, range, range, fast, &mut out)?;
        Ok(out.into_iter().map(|p| (p.t, p.v)).collect())
    }

    /// Samples every `interval` ms from `start` to `end` inclusive, value = f(t).
    fn series(start: i64, end: i64, interval: i64, f: impl Fn(i64) -> f64) -> Vec<Sample> {
        (0..)
            .map(|i| start + i * interval)
            .take_while(|t| *t <= end)
            .map(|t| (t, f(t)))
            .collect()
    }

    #[test]
    fn identical_replicas_give_one_copy() {
        let a = series(0, 60_000, 15_000, |t| t as f64);
        let merged = dedup_replicas(&[&a, &a, &a], false);
        assert_eq!(merged, a);
    }

    #[test]
    fn a_gap_in_one_replica_is_filled_by_the_other() {
        // Replica A misses 60s..=180s; replica B scrapes 2s after A.
        let a: Vec<Sample> = series(0, 300_000, 15_000, |t| t as f64)
            .into_iter()
            .filter(|(t, _)| !(60_000..=180_000).contains(t))
            .collect();
        let b = series(2_000, 302_000, 15_000, |t| t as f64);
        let merged = dedup_replicas(&[&a, &b], false);
        let timestamps: Vec<i64> = merged.iter().map(|(t, _)| *t).collect();
        // A until its gap; B's 62s sample is inside the 30s penalty B carries while A leads, so
        // B takes over at 77s and stays the source afterwards (A is now the penalised one).
        assert_eq!(
            &timestamps[..6],
            &[0, 15_000, 30_000, 45_000, 77_000, 92_000]
        );
        assert!(
            timestamps[4..].windows(2).all(|w| w[1] - w[0] == 15_000),
            "{timestamps:?}"
        );
        assert_eq!(timestamps.last(), Some(&302_000));
        assert!(
            merged.iter().all(|(t, v)| *v == *t as f64),
            "values come with their sample"
        );
    }

    #[test]
    fn offset_replicas_keep_the_scrape_interval() {
        let a = series(0, 600_000, 15_000, |_| 1.0);
        let b = series(7_000, 607_000, 15_000, |_| 1.0);
        let merged = dedup_replicas(&[&a, &b], false);
        // B's first sample precedes A's second, so B leads from then on; A is held back by the
        // penalty and never interleaves.
        let mut expected = vec![(0, 1.0)];
        expected.extend_from_slice(&b);
        assert_eq!(merged, expected);
    }

    #[test]
    fn switching_to_a_lower_counter_is_not_a_reset() {
        // Replica A dies after 60s; replica B's counter is 50 lower (it started later).
        let a = series(0, 60_000, 15_000, |t| 100.0 + t as f64 / 1000.0);
        let b = series(5_000, 180_000, 15_000, |t| 50.0 + t as f64 / 1000.0);
        let merged = dedup_replicas(&[&a, &b], true);
        let resets = merged.windows(2).filter(|w| w[1].1 < w[0].1).count();
        assert_eq!(resets, 0, "{merged:?}");
        // B is lifted to continue from A's last value (160 at 60s): 95s reads 145 + 15.
        assert!(merged.contains(&(95_000, 160.0)), "{merged:?}");
        // Without the counter correction the switch shows up as a reset.
        let plain = dedup_replicas(&[&a, &b], false);
        assert_eq!(plain.windows(2).filter(|w| w[1].1 < w[0].1).count(), 1);
    }

    #[test]
    fn a_real_reset_within_a_replica_is_kept() {
        let a: Vec<Sample> = series(0, 120_000, 15_000, |t| if t < 60_000 { 50.0 } else { 1.0 });
        let merged = dedup_replicas(&[&a, &a], true);
        assert_eq!(merged.windows(2).filter(|w| w[1].1 < w[0].1).count(), 1);
    }

    #[test]
    fn empty_and_single_inputs() {
        assert!(dedup_replicas(&[], false).is_empty());
        let empty: Vec<Sample> = Vec::new();
        let a = series(0, 30_000, 15_000, |_| 2.0);
        assert_eq!(dedup_replicas(&[&a], false), a);
        assert_eq!(dedup_replicas(&[&empty, &a], false), a);
        assert_eq!(dedup_replicas(&[&a, &empty], false), a);
    }

    #[test]
    fn counter_functions() {
        for f in ["rate", "irate", "increase", "resets"] {
            assert!(is_counter_function(f));
        }
        assert!(!is_counter_function("delta"));
        assert!(!is_counter_function("sum_over_time"));
    }

    /// XOR chunks of up to 120 samples, as a store sends them.
    fn chunks(samples: &[Sample]) -> Vec<Chunk> {
        samples
            .chunks(120)
            .map(|window| {
                let mut chunk = gauntlet_tsdb::chunkenc::XorChunk::new();
                for &(t, v) in window {
                    chunk.append(t, v).expect("chunk has room");
                }
                Chunk {
                    min_time: window[0].0,
                    max_time: window[window.len() - 1].0,
                    data: chunk.into_bytes().into(),
                }
            })
            .collect()
    }

    #[test]
    fn chunked_replicas_merge_like_decoded_ones() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut random = move |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        };
        for case in 0..200 {
            let replicas: Vec<Vec<Sample>> = (0..2 + random(3))
                .map(|_| {
                    let mut t = random(20_000) as i64;
                    let mut v = random(1000) as f64;
                    let mut samples = Vec::new();
                    while t < 7_200_000 {
                        if random(100) < 2 {
                            t += random(900_000) as i64;
                        }
                        v += random(10) as f64;
                        samples.push((t, v));
                        t += 15_000;
                    }
                    samples
                })
                .collect();
            let decoded: Vec<&[Sample]> = replicas.iter().map(Vec::as_slice).collect();
            let chunked: Vec<Vec<Chunk>> = replicas.iter().map(|r| chunks(r)).collect();
            let chunk_refs: Vec<&[Chunk]> = chunked.iter().map(Vec::as_slice).collect();
            for counter in [false, true] {
                let expected = dedup_replicas(&decoded, counter);
                let merged = merged(&chunk_refs, counter, (i64::MIN, i64::MAX), true);
                assert_eq!(
                    merged.as_ref(),
                    Ok(&expected),
                    "case {case}, counter {counter}"
                );
            }
            // A time range keeps exactly the merged samples inside it.
            let (mint, maxt) = (1_800_000, 5_400_000);
            let ranged = merged(&chunk_refs, false, (mint, maxt), true).expect("valid chunks");
            assert!(
                ranged.iter().all(|(t, _)| (mint..=maxt).contains(t)),
                "case {case}"
            );
        }
    }

    #[test]
    fn leader_runs_merge_exactly_like_sample_by_sample() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut random = move |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound.max(1)
        };
        let mut runs_taken = 0usize;
        for case in 0..3000 {
            let replicas: Vec<Vec<Sample>> = (0..2 + random(3))
                .map(|_| {
                    let interval = [15_000, 15_000, 10_000, 30_000, 1_000][random(5) as usize];
                    let jitter = [0, 0, 3, 40, 2_000][random(5) as usize];
                    let mut t = random(40_000) as i64 - 20_000;
                    if random(4) == 0 {
                        t = 1_000 * random(4) as i64;
                    }
                    let mut v = random(1000) as f64;
                    let mut samples = Vec::new();
                    while t < 3_600_000 {
                        match random(200) {
                            0..=2 => t += random(600_000) as i64,
                            3 => v = 0.0,
                            _ => {}
                        }
                        v += random(10) as f64;
                        samples.push((t, v));
                        t += if jitter == 3 {
                            // Gaps at and around twice the previous one: penalty boundaries.
                            [1_000, 2_000, 2_001, 2_002, 4_001][random(5) as usize]
                        } else {
                            interval + random(jitter * 2 + 1) as i64 - jitter as i64
                        };
                        t = t.max(samples[samples.len() - 1].0 + 1);
                    }
                    samples
                })
                .collect();
            let chunked: Vec<Vec<Chunk>> = replicas
                .iter()
                .map(|r| {
                    let size = 1 + random(130) as usize;
                    r.chunks(size).flat_map(chunks).collect()
                })
                .collect();
            let refs: Vec<&[Chunk]> = chunked.iter().map(Vec::as_slice).collect();
            let range = match random(3) {
                0 => (i64::MIN, i64::MAX),
                _ => {
                    let mint = random(2_000_000) as i64;
                    (mint, mint + random(2_000_000) as i64)
                }
            };
            // The reference: every replica decoded up front, cut to the range.
            let in_range: Vec<Vec<Sample>> = replicas
                .iter()
                .map(|r| {
                    r.iter()
                        .copied()
                        .filter(|(t, _)| (range.0..=range.1).contains(t))
                        .collect()
                })
                .collect();
            let in_range: Vec<&[Sample]> = in_range.iter().map(Vec::as_slice).collect();
            for counter in [false, true] {
                let slow = merged(&refs, counter, range, false).expect("valid chunks");
                let fast = merged(&refs, counter, range, true).expect("valid chunks");
                assert_eq!(
                    fast, slow,
                    "case {case}, counter {counter}, range {range:?}"
                );
                assert_eq!(
                    fast,
                    dedup_replicas(&in_range, counter),
                    "case {case}, counter {counter}, range {range:?}"
                );
                runs_taken += fast.len();
            }
        }
        assert!(runs_taken > 0);
    }

    #[test]
    fn a_tie_at_the_penalty_bound_goes_to_the_first_replica() {
        // `b` leads after `a`'s gap; `b`'s next sample lands exactly where `a` was sought to
        // (last + 1 + twice the last gap), where `a` has one too: the tie goes to `a`.
        let a = [(0, 1.0), (60_001, 2.0), (75_001, 3.0)];
        let b = [
            (10_000, 10.0),
            (20_000, 11.0),
            (30_000, 12.0),
            (40_000, 13.0),
            (60_001, 14.0),
            (75_001, 15.0),
        ];
        let expected = vec![
            (0, 1.0),
            (10_000, 10.0),
            (20_000, 11.0),
            (30_000, 12.0),
            (40_000, 13.0),
            (60_001, 2.0),
            (75_001, 3.0),
        ];
        let (a, b) = (chunks(&a), chunks(&b));
        for fast in [false, true] {
            let merged = merged(&[&a, &b], false, (i64::MIN, i64::MAX), fast);
            assert_eq!(merged, Ok(expected.clone()), "fast {fast}");
        }
        // The same tie on the first sample after `b` took the lead.
        let a = chunks(&[(0, 1.0), (30_001, 2.0)]);
        let b = chunks(&[(10_000, 10.0), (30_001, 11.0)]);
        for fast in [false, true] {
            let merged = merged(&[&a, &b], false, (i64::MIN, i64::MAX), fast);
            assert_eq!(
                merged,
                Ok(vec![(0, 1.0), (10_000, 10.0), (30_001, 2.0)]),
                "fast {fast}"
            );
        }
    }

    #[test]
    fn runs_near_the_ends_of_time_merge_like_sample_by_sample() {
        // Timestamps around the run limit and the ends of i64: the fast path stops at the limit
        // and the pairs finish, with the same result.
        for base in [RUN_LIMIT - 60_000, -RUN_LIMIT - 30_000, i64::MAX - 200_000] {
            let a: Vec<Sample> = (0..10).map(|i| (base + i * 15_000, i as f64)).collect();
            let b: Vec<Sample> = (0..10)
                .map(|i| (base + 1_000 + i * 15_000, 100.0 + i as f64))
                .filter(|(t, _)| *t < base + 40_000 || *t > base + 100_000)
                .collect();
            let (a, b) = (chunks(&a), chunks(&b));
            for counter in [false, true] {
                let slow = merged(&[&b, &a], counter, (i64::MIN, i64::MAX), false);
                let fast = merged(&[&b, &a], counter, (i64::MIN, i64::MAX), true);
                assert_eq!(fast, slow, "base {base}, counter {counter}");
                assert_eq!(slow.map(|m| m.len()), Ok(10), "base {base}");
            }
        }
    }

    #[test]
    fn a_corrupt_chunk_is_an_error() {
        let good = chunks(&[(0, 1.0), (15_000, 2.0)]);
        let bad = vec![Chunk {
            min_time: 0,
            max_time: 15_000,
            data: vec![0, 9, 1].into(),
        }];
        let error = merged(&[&good, &bad], false, (i64::MIN, i64::MAX), true).expect_err("corrupt");
        assert!(error.starts_with("decoding chunk"), "{error}");
        // A chunk whose first sample reads fine but whose body is cut short, in the replica
        // that leads.
        let mut truncated = chunks(&[(0, 1.0), (15_000, 2.0), (30_000, 3.0)]).remove(0);
        truncated.data = truncated.data.slice(..truncated.data.len() - 2);
        let later = chunks(&[(1_000, 1.0), (16_000, 2.0), (31_000, 3.0)]);
        let replicas = ReplicaChunks::new(vec![vec![truncated], later], false, 0, 60_000);
        let error = replicas
            .decode_into(0, 60_000, &mut Vec::new())
            .expect_err("truncated");
        assert!(error.0.starts_with("decoding chunk"), "{error}");
    }

    #[test]
    fn every_window_reads_the_same_merged_series() {
        // A replica with gaps and a second one offset by 1s: whichever part of the selection
        // the engine asks for, it gets exactly that part of the merge over the whole selection.
        let a: Vec<Sample> = series(0, 3_600_000, 15_000, |t| t as f64)
            .into_iter()
            .filter(|(t, _)| {
                !(600_000..=900_000).contains(t) && !(2_000_000..=2_100_000).contains(t)
            })
            .collect();
        let b = series(1_000, 3_601_000, 15_000, |t| t as f64 + 0.5);
        let (mint, maxt) = (100_000, 3_500_000);
        let whole = merged(&[&chunks(&a), &chunks(&b)], true, (mint, maxt), true).expect("valid");
        let replicas = ReplicaChunks::new(vec![chunks(&a), chunks(&b)], true, mint, maxt);
        for window in [
            (mint, maxt),
            (0, 700_000),
            (650_000, 2_050_000),
            (3_400_000, i64::MAX),
        ] {
            let mut points = Vec::new();
            replicas
                .decode_into(window.0, window.1, &mut points)
                .expect("valid");
            let got: Vec<Sample> = points.iter().map(|p| (p.t, p.v)).collect();
            let expected: Vec<Sample> = whole
                .iter()
                .copied()
                .filter(|(t, _)| (window.0..=window.1).contains(t))
                .collect();
            assert_eq!(got, expected, "window {window:?}");
            assert!(!got.is_empty(), "window {window:?}");
        }
    }
}
