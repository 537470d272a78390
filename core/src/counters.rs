//! Named counters written by data-path threads and read by reporters.
//!
//! A [`CounterSet`] is a fixed array of relaxed atomics with one static name each, so the
//! data path bumps an index (no allocation, no lock) and a reporter thread takes a
//! [`CounterSet::snapshot`] whenever it likes. Components define their counters as a `&'static
//! [&'static str]` plus index constants; every reason a packet is dropped gets its own counter.

use std::sync::atomic::{AtomicU64, Ordering};

/// A fixed set of named monotonically increasing counters.
#[derive(Debug)]
pub struct CounterSet {
    names: &'static [&'static str],
    values: Box<[AtomicU64]>,
}

impl CounterSet {
    /// One zeroed counter per name.
    pub fn new(names: &'static [&'static str]) -> Self {
        CounterSet {
            names,
            values: names.iter().map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Adds one to counter `index`.
    #[inline]
    pub fn inc(&self, index: usize) {
        self.add(index, 1);
    }

    /// Adds `n` to counter `index`.
    #[inline]
    pub fn add(&self, index: usize, n: u64) {
        self.values[index].fetch_add(n, Ordering::Relaxed);
    }

    /// The current value of counter `index`.
    pub fn get(&self, index: usize) -> u64 {
        self.values[index].load(Ordering::Relaxed)
    }

    /// The value of the counter called `name`, if there is one.
    pub fn get_by_name(&self, name: &str) -> Option<u64> {
        self.names.iter().position(|n| *n == name).map(|i| self.get(i))
    }

    /// Every counter's name and current value, in declaration order.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        self.names.iter().enumerate().map(|(i, n)| (*n, self.get(i))).collect()
    }

    /// The counters as a JSON object `{name: value}`.
    pub fn to_json(&self) -> serde_json::Value {
        let map = self
            .snapshot()
            .into_iter()
            .map(|(n, v)| (n.to_string(), serde_json::Value::from(v)))
            .collect::<serde_json::Map<_, _>>();
        serde_json::Value::Object(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: &[&str] = &["rx", "drop_short"];

    #[test]
    fn counts_and_snapshots_by_name() {
        let c = CounterSet::new(NAMES);
        c.inc(0);
        c.add(1, 5);
        c.inc(0);
        assert_eq!(c.snapshot(), vec![("rx", 2), ("drop_short", 5)]);
        assert_eq!(c.get_by_name("drop_short"), Some(5));
        assert_eq!(c.get_by_name("nope"), None);
        assert_eq!(c.to_json()["rx"], 2);
    }
}
