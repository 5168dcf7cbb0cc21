//! Storage quotas (`limits.storage_quota_bytes` of a vhost spec): how many bytes each
//! vhost stores, kept in memory so that a write checks its vhost's quota with one atomic
//! operation instead of summing the vhost's tables.
//!
//! Data flow: the running node (`Node::reload_vhosts`) tells [`StorageMeters`] which vhosts
//! it serves and with what quota; a vhost whose quota is new or changed is then measured
//! in the database (`Store::measure_storage`). The store's write paths reserve the bytes a
//! row adds before writing it ([`StorageMeters::reserve`]: refused past the quota, given
//! back if the write fails) and give back what a deletion frees. Rows that are not charged
//! one by one (roster versions, block lists, last activity, a deleted account's cascade)
//! are caught by measuring again: after an account deletion or an import, every minute
//! (`upkeep`), and whenever `GET /v1/usage` sums the storage anyway. A write racing a
//! measurement can be counted twice or not at all until the next one; the quota is a
//! plan limit, not an exact allocator.
//!
//! Bytes are counted as `GET /v1/usage` counts them ([`row_bytes`]): the characters of
//! each text column plus 8 per number. The CLI's store has no meters, so it charges
//! nothing; the running node measures what the CLI wrote at its next measurement.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicI64, Ordering},
    },
};

/// What one row stores: the characters of its text columns (`LENGTH()` in SQL), 8 bytes
/// per number column.
pub fn row_bytes(texts: &[Option<&str>], numbers: usize) -> i64 {
    let chars: usize = texts.iter().flatten().map(|t| t.chars().count()).sum();
    (chars + 8 * numbers) as i64
}

/// A write that would take a vhost past its storage quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverQuota {
    pub quota: i64,
}

/// The bytes one vhost stores and its quota.
#[derive(Debug, Default)]
pub struct Meter {
    used: AtomicI64,
    /// Negative: no quota.
    quota: AtomicI64,
}

impl Meter {
    fn new(quota: Option<i64>) -> Self {
        Self {
            used: AtomicI64::new(0),
            quota: AtomicI64::new(quota.unwrap_or(-1)),
        }
    }

    pub fn used(&self) -> i64 {
        self.used.load(Ordering::Acquire)
    }

    pub fn quota(&self) -> Option<i64> {
        Some(self.quota.load(Ordering::Acquire)).filter(|q| *q >= 0)
    }

    /// Adds `bytes` (a negative number frees them). Growth past the quota is refused and
    /// changes nothing; shrinking, or growing a vhost without a quota, always succeeds.
    pub fn try_add(&self, bytes: i64) -> Result<(), OverQuota> {
        if bytes <= 0 {
            self.used.fetch_add(bytes, Ordering::AcqRel);
            return Ok(());
        }
        let quota = self.quota();
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| match quota {
                Some(q) if used.saturating_add(bytes) > q => None,
                _ => Some(used.saturating_add(bytes)),
            })
            .map(|_| ())
            .map_err(|_| OverQuota {
                quota: quota.unwrap_or(i64::MAX),
            })
    }

    /// Adds `bytes` whatever the quota says (rows that are not refused, e.g. accounts).
    pub fn add(&self, bytes: i64) {
        self.used.fetch_add(bytes, Ordering::AcqRel);
    }

    /// What a measurement of the database found.
    pub fn set_used(&self, bytes: i64) {
        self.used.store(bytes, Ordering::Release);
    }
}

/// Bytes added to a vhost's meter for a write that has not committed yet: dropped without
/// [`Reservation::commit`], they are given back.
#[must_use = "a reservation is given back when dropped; commit it once the write is done"]
pub struct Reservation {
    meter: Option<Arc<Meter>>,
    bytes: i64,
}

impl Reservation {
    /// Nothing reserved (a vhost without a meter).
    pub fn none() -> Self {
        Self {
            meter: None,
            bytes: 0,
        }
    }

    /// The write happened: the bytes stay counted.
    pub fn commit(mut self) {
        self.meter = None;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(m) = &self.meter {
            m.add(-self.bytes);
        }
    }
}

/// Every served vhost's meter. Empty in a store no running node configured (the CLI).
#[derive(Debug, Default)]
pub struct StorageMeters {
    vhosts: RwLock<HashMap<String, Arc<Meter>>>,
}

impl StorageMeters {
    pub fn get(&self, vhost: &str) -> Option<Arc<Meter>> {
        self.vhosts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(vhost)
            .cloned()
    }

    /// Serves exactly these (vhost, quota) pairs from now on: meters of other vhosts are
    /// dropped, those kept keep their count. Returns the vhosts with a quota whose meter is
    /// new or whose quota changed: they must be measured before their count means anything.
    pub fn configure(
        &self,
        wanted: impl IntoIterator<Item = (String, Option<i64>)>,
    ) -> Vec<String> {
        let mut vhosts = self.vhosts.write().unwrap_or_else(|p| p.into_inner());
        let mut next = HashMap::with_capacity(vhosts.len());
        let mut to_measure = Vec::new();
        for (domain, quota) in wanted {
            let meter = match vhosts.remove(&domain) {
                Some(m) => {
                    if m.quota() != quota {
                        m.quota.store(quota.unwrap_or(-1), Ordering::Release);
                        if quota.is_some() {
                            to_measure.push(domain.clone());
                        }
                    }
                    m
                }
                None => {
                    if quota.is_some() {
                        to_measure.push(domain.clone());
                    }
                    Arc::new(Meter::new(quota))
                }
            };
            next.insert(domain, meter);
        }
        *vhosts = next;
        to_measure
    }

    /// Reserves `bytes` on `vhost`'s meter, refused past its quota; nothing to do for a
    /// vhost without a meter.
    pub fn reserve(&self, vhost: &str, bytes: i64) -> Result<Reservation, OverQuota> {
        let Some(meter) = self.get(vhost) else {
            return Ok(Reservation::none());
        };
        meter.try_add(bytes)?;
        Ok(Reservation {
            meter: Some(meter),
            bytes,
        })
    }

    /// Counts `bytes` on `vhost`'s meter whatever its quota (negative: frees them).
    pub fn add(&self, vhost: &str, bytes: i64) {
        if let Some(m) = self.get(vhost) {
            m.add(bytes);
        }
    }

    /// Sets the meters to a measurement of every vhost (a vhost missing from it stores
    /// nothing).
    pub fn set_all(&self, measured: &HashMap<String, i64>) {
        for (domain, meter) in self.vhosts.read().unwrap_or_else(|p| p.into_inner()).iter() {
            meter.set_used(measured.get(domain).copied().unwrap_or(0));
        }
    }

    /// The vhosts that have a quota.
    pub fn with_quota(&self) -> Vec<String> {
        self.vhosts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, m)| m.quota().is_some())
            .map(|(d, _)| d.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_count_characters_of_text_and_eight_bytes_per_number() {
        assert_eq!(row_bytes(&[Some("abc"), None, Some("é")], 2), 3 + 1 + 16);
        assert_eq!(row_bytes(&[], 0), 0);
    }

    #[test]
    fn growth_stops_at_the_quota_but_shrinking_always_works() {
        let m = Meter::new(Some(100));
        assert_eq!(m.try_add(60), Ok(()));
        assert_eq!(m.try_add(40), Ok(()), "exactly at the quota is allowed");
        assert_eq!(m.try_add(1), Err(OverQuota { quota: 100 }));
        assert_eq!(m.used(), 100, "a refused write counts nothing");
        assert_eq!(m.try_add(-30), Ok(()));
        assert_eq!(m.try_add(30), Ok(()));
        // A quota lowered below what is stored: still shrinkable, never growable.
        m.quota.store(10, Ordering::Release);
        assert!(m.try_add(1).is_err());
        assert_eq!(m.try_add(-50), Ok(()));
        assert_eq!(m.used(), 50);
    }

    #[test]
    fn a_vhost_without_a_quota_grows_freely() {
        let m = Meter::new(None);
        assert_eq!(m.try_add(i64::MAX / 2), Ok(()));
        assert_eq!(m.quota(), None);
    }

    #[test]
    fn a_dropped_reservation_is_given_back_and_a_committed_one_stays() {
        let meters = StorageMeters::default();
        meters.configure([("example.com".to_string(), Some(100))]);
        let r = meters.reserve("example.com", 70).unwrap();
        assert!(
            meters.reserve("example.com", 70).is_err(),
            "reserved bytes count against the quota at once"
        );
        drop(r);
        assert_eq!(meters.get("example.com").unwrap().used(), 0);
        meters.reserve("example.com", 70).unwrap().commit();
        assert_eq!(meters.get("example.com").unwrap().used(), 70);
        // Vhosts without a meter (the CLI's store, an unknown vhost) are not limited.
        meters.reserve("other.example", 1_000).unwrap().commit();
        assert!(meters.get("other.example").is_none());
    }

    #[test]
    fn configuring_keeps_counts_and_asks_to_measure_new_or_changed_quotas() {
        let meters = StorageMeters::default();
        let to_measure = meters.configure([
            ("a.example".to_string(), Some(100)),
            ("b.example".to_string(), None),
        ]);
        assert_eq!(to_measure, vec!["a.example".to_string()]);
        meters.add("a.example", 40);
        meters.add("b.example", 7);
        // The same quotas again: nothing to measure, counts kept.
        assert!(
            meters
                .configure([
                    ("a.example".to_string(), Some(100)),
                    ("b.example".to_string(), None),
                ])
                .is_empty()
        );
        assert_eq!(meters.get("a.example").unwrap().used(), 40);
        // b gets a quota, a loses its own, c is new without one.
        let mut to_measure = meters.configure([
            ("a.example".to_string(), None),
            ("b.example".to_string(), Some(5)),
            ("c.example".to_string(), None),
        ]);
        to_measure.sort();
        assert_eq!(to_measure, vec!["b.example".to_string()]);
        assert_eq!(meters.with_quota(), vec!["b.example".to_string()]);
        meters.set_all(&HashMap::from([("b.example".to_string(), 3)]));
        assert_eq!(meters.get("b.example").unwrap().used(), 3);
        assert_eq!(meters.get("a.example").unwrap().used(), 0);
        // A vhost no longer served loses its meter.
        meters.configure([("b.example".to_string(), Some(5))]);
        assert!(meters.get("a.example").is_none());
    }
}
