//! The click log on disk: group-committed batches and paged queries.

use super::{from_json, to_json, Store, StoreError};
use crate::id::ClickId;
use crate::model::ClickRecord;
use std::collections::HashMap;

const RECORD: u8 = b'c';
const BY_LINK: u8 = b'l';
const BY_PARTNER: u8 = b'p';
const COUNT: u8 = b'n';

/// Which clicks to list.
#[derive(Debug, Clone, Default)]
pub struct ClickQuery {
    /// Only this link's clicks.
    pub link: Option<String>,
    /// Only this partner's clicks (ignored when `link` is set: a link
    /// belongs to one partner, so the caller checks that pairing).
    pub partner: Option<String>,
    /// Clicks at or after this time (epoch ms).
    pub from_ms: Option<i64>,
    /// Clicks before this time (epoch ms).
    pub to_ms: Option<i64>,
    /// Continue after this click id.
    pub after: Option<ClickId>,
    /// Page size.
    pub limit: usize,
}

/// One page of clicks, oldest first.
#[derive(Debug, Clone)]
pub struct ClickPage {
    /// The clicks.
    pub clicks: Vec<ClickRecord>,
    /// Pass as `after` to get the next page; `None` on the last page.
    pub next: Option<ClickId>,
}

fn index_key(tag: u8, name: &str, id: ClickId) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len() + 1 + 16);
    k.push(tag);
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k.extend_from_slice(&id.to_bytes());
    k
}

fn record_key(id: ClickId) -> [u8; 17] {
    let mut k = [RECORD; 17];
    k[1..].copy_from_slice(&id.to_bytes());
    k
}

fn count_key(code: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + code.len());
    k.push(COUNT);
    k.extend_from_slice(code.as_bytes());
    k
}

impl Store {
    /// Writes a batch of clicks with their index entries and link counters
    /// as one atomic batch, then flushes once (group commit).
    pub fn write_clicks(&self, batch: &[ClickRecord]) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        let mut added: HashMap<&str, u64> = HashMap::new();
        for c in batch {
            b.insert(&record_key(c.id)[..], to_json(c));
            b.insert(index_key(BY_LINK, &c.link, c.id), &[][..]);
            b.insert(index_key(BY_PARTNER, &c.partner_id, c.id), &[][..]);
            *added.entry(c.link.as_str()).or_default() += 1;
        }
        for (code, n) in added {
            let total = self.click_count(code)? + n;
            b.insert(count_key(code), &total.to_be_bytes()[..]);
        }
        self.clicks.apply_batch(b)?;
        self.flush()
    }

    /// How many clicks a link has on disk.
    pub fn click_count(&self, code: &str) -> Result<u64, StoreError> {
        Ok(self
            .clicks
            .get(count_key(code))?
            .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// The newest stored click id, to seed the id generator after a restart.
    pub fn newest_click_id(&self) -> Result<Option<ClickId>, StoreError> {
        let last = self.clicks.scan_prefix([RECORD]).next_back().transpose()?;
        Ok(last.and_then(|(k, _)| <[u8; 16]>::try_from(&k[1..]).ok().map(ClickId::from_bytes)))
    }

    /// One page of clicks matching `q`, oldest first.
    pub fn clicks(&self, q: &ClickQuery) -> Result<ClickPage, StoreError> {
        let (prefix, by_index) = match (&q.link, &q.partner) {
            (Some(code), _) => (index_prefix(BY_LINK, code), true),
            (None, Some(p)) => (index_prefix(BY_PARTNER, p), true),
            (None, None) => (vec![RECORD], false),
        };
        let mut lo = q.from_ms.map_or(ClickId(0), ClickId::lower_bound);
        if let Some(after) = q.after {
            lo = lo.max(ClickId(after.0.saturating_add(1)));
        }
        let hi = q.to_ms.map_or(ClickId(u128::MAX), |t| {
            ClickId(ClickId::lower_bound(t).0.saturating_sub(1))
        });
        let mut page = ClickPage {
            clicks: Vec::new(),
            next: None,
        };
        if lo > hi {
            return Ok(page);
        }
        let key = |id: ClickId| {
            let mut k = prefix.clone();
            k.extend_from_slice(&id.to_bytes());
            k
        };
        for kv in self.clicks.range(key(lo)..=key(hi)) {
            let (k, v) = kv?;
            if page.clicks.len() == q.limit {
                page.next = page.clicks.last().map(|c| c.id);
                break;
            }
            let record = if by_index {
                let id = <[u8; 16]>::try_from(&k[prefix.len()..])
                    .map(ClickId::from_bytes)
                    .map_err(|_| StoreError::Corrupt {
                        key: String::from_utf8_lossy(&k).into_owned(),
                        reason: "index key has no click id".into(),
                    })?;
                match self.clicks.get(record_key(id))? {
                    Some(v) => from_json(&k, &v)?,
                    None => continue,
                }
            } else {
                from_json(&k, &v)?
            };
            page.clicks.push(record);
        }
        Ok(page)
    }
}

fn index_prefix(tag: u8, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + name.len() + 16);
    k.push(tag);
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k
}
