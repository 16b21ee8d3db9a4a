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
//! Input samples of each replica must be sorted by timestamp; nothing here allocates per sample
//! except the output.

/// A float sample: timestamp in milliseconds and value.
pub type Sample = (i64, f64);

/// Whether a query function reads its input as a counter, so that replica switches must not
/// produce artificial resets.
pub fn is_counter_function(function: &str) -> bool {
    matches!(function, "rate" | "irate" | "increase" | "resets")
}

/// Merges the replicas of one series into a single sorted series.
pub fn dedup_replicas(replicas: &[&[Sample]], counter: bool) -> Vec<Sample> {
    let mut leaves = replicas
        .iter()
        .map(|samples| Cursor::Leaf(Leaf::new(samples, counter)));
    let Some(first) = leaves.next() else {
        return Vec::new();
    };
    let mut cursor = first;
    for leaf in leaves {
        cursor = Cursor::Pair(Box::new(Pair::new(cursor, leaf)));
    }
    let capacity = replicas
        .iter()
        .map(|samples| samples.len())
        .max()
        .unwrap_or(0);
    let mut merged = Vec::with_capacity(capacity);
    while cursor.next() {
        merged.push(cursor.at());
    }
    merged
}

/// Penalty applied to the replica not picked before the sampling interval is known (ms).
const INITIAL_PENALTY_MS: i64 = 5000;

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

/// One replica's samples, with the counter correction accumulated so far.
struct Leaf<'a> {
    samples: &'a [Sample],
    /// Index of the current sample; `None` before the first `next` or `seek`.
    position: Option<usize>,
    counter: bool,
    correction: f64,
}

impl<'a> Leaf<'a> {
    fn new(samples: &'a [Sample], counter: bool) -> Self {
        Self {
            samples,
            position: None,
            counter,
            correction: 0.0,
        }
    }

    fn next(&mut self) -> bool {
        let position = self.position.map_or(0, |p| p.saturating_add(1));
        self.position = Some(position.min(self.samples.len()));
        position < self.samples.len()
    }

    fn seek(&mut self, t: i64) -> bool {
        let start = self.position.unwrap_or(0).min(self.samples.len());
        let rest = &self.samples[start..];
        let position = start + rest.partition_point(|(ts, _)| *ts < t);
        self.position = Some(position);
        position < self.samples.len()
    }

    fn at(&self) -> Sample {
        let (t, v) = self
            .position
            .and_then(|p| self.samples.get(p))
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

/// Two cursors merged with the penalty algorithm.
struct Pair<'a> {
    a: Cursor<'a>,
    b: Cursor<'a>,
    a_ok: bool,
    b_ok: bool,
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
            last_t: None,
            penalty_a: 0,
            penalty_b: 0,
            use_a: true,
        }
    }

    fn current_ok(&self) -> bool {
        if self.use_a { self.a_ok } else { self.b_ok }
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
            self.a_ok = self.a.seek(after.saturating_add(self.penalty_a));
        }
        if self.b_ok {
            self.b_ok = self.b.seek(after.saturating_add(self.penalty_b));
        }
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
        let (ta, tb) = (self.a.at().0, self.b.at().0);
        self.use_a = ta <= tb;
        let (picked, other_penalty) = if self.use_a {
            self.penalty_a = 0;
            (ta, &mut self.penalty_b)
        } else {
            self.penalty_b = 0;
            (tb, &mut self.penalty_a)
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
}
