//! Cluster mode, calculator nodes: the clicks of every edge, replicated
//! from the click stream, for click-id attribution across edges and the
//! payout rule on a partner's last click.
//!
//! Keys in the `cluster_clicks` tree:
//! - `c` + click id (16 bytes BE) → the click's JSON as shipped
//! - `p` + partner id + `0x00` + click id → empty (a partner's clicks)
//! - `v` + partner id + `0x00` + second (`i64` BE) → the partner's
//!   clicks in that second on every edge (`u32` BE): the cluster-wide
//!   velocity
//! - `n` + node id → how many distinct clicks the stream holds from that
//!   edge (`u64` BE)
//! - `k` + link code → how many distinct clicks of that link the stream
//!   holds, from every edge (`u64` BE)
//! - `s` → the click stream's sequence replicated up to (`u64` BE)

use super::clicks::{ClickPage, ClickQuery};
use super::{Store, StoreError};
use crate::id::ClickId;
use crate::model::ClickRecord;
use std::collections::BTreeMap;

const CLICK: u8 = b'c';
const BY_PARTNER: u8 = b'p';
const VELOCITY: u8 = b'v';
const BY_NODE: u8 = b'n';
const BY_LINK: u8 = b'k';
const CURSOR: &[u8] = b"s";

fn click_key(id: ClickId) -> [u8; 17] {
    let mut k = [CLICK; 17];
    k[1..].copy_from_slice(&id.to_bytes());
    k
}

fn link_key(code: &str) -> Vec<u8> {
    let mut k = vec![BY_LINK];
    k.extend_from_slice(code.as_bytes());
    k
}

fn partner_prefix(partner: &str) -> Vec<u8> {
    prefixed(BY_PARTNER, partner)
}

fn prefixed(tag: u8, partner: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + partner.len() + 16);
    k.push(tag);
    k.extend_from_slice(partner.as_bytes());
    k.push(0);
    k
}

impl Store {
    /// Adds clicks from the click stream (each with the edge that served
    /// it) and the sequence they reach, in one batch and one flush. A click
    /// already here (a repeat the stream's window did not absorb) is not
    /// counted again.
    pub fn add_cluster_clicks(
        &self,
        clicks: &[(String, ClickRecord)],
        seq: u64,
    ) -> Result<(), StoreError> {
        self.with(|t| {
            let mut b = sled::Batch::default();
            let mut per_second: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
            // Per edge and per link (`u64` counts).
            let mut per_node: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
            let mut seen = std::collections::HashSet::new();
            let mut new = Vec::with_capacity(clicks.len());
            for (node, c) in clicks {
                let key = click_key(c.id);
                if !seen.insert(c.id) || t.cluster_clicks.contains_key(key)? {
                    continue;
                }
                new.push(c);
                b.insert(&key[..], serde_json::to_vec(c).expect("clicks serialise"));
                let mut k = partner_prefix(&c.partner_id);
                k.extend_from_slice(&c.id.to_bytes());
                b.insert(k, &[][..]);
                let mut v = prefixed(VELOCITY, &c.partner_id);
                v.extend_from_slice(&(c.id.timestamp_ms().div_euclid(1000)).to_be_bytes());
                *per_second.entry(v).or_default() += 1;
                let mut n = vec![BY_NODE];
                n.extend_from_slice(node.as_bytes());
                *per_node.entry(n).or_default() += 1;
                *per_node.entry(link_key(&c.link)).or_default() += 1;
            }
            b.insert(CURSOR, &seq.to_be_bytes()[..]);
            // Counts add to what is stored; the batch and its cursor land
            // together, so a replay from the cursor never counts twice.
            for (k, n) in per_second {
                let before = t.cluster_clicks.get(&k)?.map_or(0, |v| {
                    u32::from_be_bytes(v[..4].try_into().expect("4 bytes"))
                });
                b.insert(k, &(before.saturating_add(n as u32)).to_be_bytes()[..]);
            }
            for (k, n) in per_node {
                let before = t.cluster_clicks.get(&k)?.map_or(0, |v| {
                    u64::from_be_bytes(v[..8].try_into().expect("8 bytes"))
                });
                b.insert(k, &(before + n).to_be_bytes()[..]);
            }
            // The console's rollups, in the same batch (see `rollups`).
            let earliest = self.roll_up_cluster_clicks(&t.cluster_clicks, new, &mut b)?;
            t.cluster_clicks.apply_batch(b)?;
            self.rolled_up_from(earliest);
            Ok(t.db.flush().map(|_| ())?)
        })
    }

    /// A link's clicks on every edge, as replicated so far.
    pub fn cluster_click_count(&self, code: &str) -> Result<u64, StoreError> {
        self.with(|t| {
            Ok(t.cluster_clicks.get(link_key(code))?.map_or(0, |v| {
                u64::from_be_bytes(v[..8].try_into().expect("8 bytes"))
            }))
        })
    }

    /// Distinct clicks replicated from each edge.
    pub fn cluster_clicks_by_node(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        self.with(|t| {
            let mut out = BTreeMap::new();
            for kv in t.cluster_clicks.scan_prefix([BY_NODE]) {
                let (k, v) = kv?;
                let node = String::from_utf8_lossy(&k[1..]).into_owned();
                out.insert(
                    node,
                    u64::from_be_bytes(v[..8].try_into().expect("8 bytes")),
                );
            }
            Ok(out)
        })
    }

    /// The seconds in which a partner's clicks on every edge together
    /// exceeded `limit`, with their counts, oldest first.
    pub fn cluster_velocity(
        &self,
        partner: &str,
        limit: u32,
    ) -> Result<Vec<(i64, u32)>, StoreError> {
        let prefix = prefixed(VELOCITY, partner);
        self.with(|t| {
            let mut out = Vec::new();
            for kv in t.cluster_clicks.scan_prefix(&prefix) {
                let (k, v) = kv?;
                let n = u32::from_be_bytes(v[..4].try_into().expect("4 bytes"));
                if n > limit {
                    let s = i64::from_be_bytes(k[prefix.len()..].try_into().expect("8 bytes"));
                    out.push((s, n));
                }
            }
            Ok(out)
        })
    }

    /// A page of every edge's clicks, as [`Store::clicks`] pages the local
    /// log (by partner through its index, by link filtered).
    pub fn cluster_clicks_page(&self, q: &ClickQuery) -> Result<ClickPage, StoreError> {
        let mut page = ClickPage {
            clicks: Vec::new(),
            next: None,
        };
        let Some((lo, hi)) = q.id_range() else {
            return Ok(page);
        };
        self.with(|t| {
            let ids: Box<dyn Iterator<Item = Result<ClickId, StoreError>>> = match &q.partner {
                Some(p) => {
                    let prefix = partner_prefix(p);
                    let key = |id: ClickId| {
                        let mut k = prefix.clone();
                        k.extend_from_slice(&id.to_bytes());
                        k
                    };
                    let n = prefix.len();
                    Box::new(
                        t.cluster_clicks
                            .range(key(lo)..=key(hi))
                            .keys()
                            .map(move |k| {
                                let k = k?;
                                Ok(ClickId::from_bytes(k[n..].try_into().expect("16 bytes")))
                            }),
                    )
                }
                None => Box::new(
                    t.cluster_clicks
                        .range(click_key(lo)..=click_key(hi))
                        .keys()
                        .map(|k| Ok(ClickId::from_bytes(k?[1..].try_into().expect("16 bytes")))),
                ),
            };
            for id in ids {
                let id = id?;
                let Some(raw) = t.cluster_clicks.get(click_key(id))? else {
                    continue;
                };
                let c: ClickRecord = serde_json::from_slice(&raw)
                    .map_err(|e| super::corrupt(&click_key(id), e.to_string()))?;
                if q.link.as_ref().is_some_and(|l| *l != c.link) {
                    continue;
                }
                page.clicks.push(c);
                if page.clicks.len() == q.limit {
                    page.next = Some(id);
                    break;
                }
            }
            Ok(page)
        })
    }

    /// The click stream's sequence replicated up to (0: none).
    pub fn cluster_clicks_cursor(&self) -> Result<u64, StoreError> {
        self.with(|t| {
            Ok(t.cluster_clicks.get(CURSOR)?.map_or(0, |v| {
                u64::from_be_bytes(v[..8].try_into().expect("8 bytes"))
            }))
        })
    }

    /// A click of any edge, by id.
    pub fn cluster_click(&self, id: ClickId) -> Result<Option<ClickRecord>, StoreError> {
        self.with(|t| {
            t.cluster_clicks
                .get(click_key(id))?
                .map(|v| {
                    serde_json::from_slice(&v)
                        .map_err(|e| super::corrupt(&click_key(id), e.to_string()))
                })
                .transpose()
        })
    }

    /// A partner's newest click on any edge.
    pub fn cluster_last_click_of(&self, partner: &str) -> Result<Option<ClickId>, StoreError> {
        let prefix = partner_prefix(partner);
        let last = self.with(|t| {
            Ok(t.cluster_clicks
                .scan_prefix(&prefix)
                .keys()
                .next_back()
                .transpose()?)
        })?;
        Ok(last.and_then(|k| {
            <[u8; 16]>::try_from(&k[prefix.len()..])
                .ok()
                .map(ClickId::from_bytes)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u128, partner: &str) -> ClickRecord {
        let v = serde_json::json!({
            "id": ClickId(id << 80).to_string(), "at": "2026-01-01T00:00:00Z", "link": "l1",
            "partner_id": partner, "program": "krispcall", "method": "GET",
            "ip_hash": "00", "ip_prefix": "10.0.0.0/24", "headers": {}, "flags": [],
            "cookie": "not_set"
        });
        serde_json::from_slice(&serde_json::to_vec(&v).unwrap()).unwrap()
    }

    #[test]
    fn clicks_are_found_by_id_and_by_partner_and_the_cursor_kept() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let batch: Vec<_> = [rec(5, "p1"), rec(9, "p1"), rec(7, "p2")]
            .into_iter()
            .map(|c| ("edge-a".to_string(), c))
            .collect();
        s.add_cluster_clicks(&batch, 3).unwrap();
        assert_eq!(s.cluster_clicks_cursor().unwrap(), 3);
        assert_eq!(
            s.cluster_click(ClickId(7 << 80))
                .unwrap()
                .unwrap()
                .partner_id,
            "p2"
        );
        assert!(s.cluster_click(ClickId(8 << 80)).unwrap().is_none());
        assert_eq!(
            s.cluster_last_click_of("p1").unwrap(),
            Some(ClickId(9 << 80))
        );
        assert_eq!(s.cluster_last_click_of("p3").unwrap(), None);
        // Clicks 5, 7 and 9 fall in one second: p1 had two in it.
        assert_eq!(s.cluster_velocity("p1", 1).unwrap().len(), 1);
        assert_eq!(s.cluster_velocity("p1", 2).unwrap(), vec![]);
        // A second batch adds to the counts; a repeat of a click does not.
        let more: Vec<_> = [rec(6, "p1"), rec(5, "p1")]
            .into_iter()
            .map(|c| ("edge-b".to_string(), c))
            .collect();
        s.add_cluster_clicks(&more, 4).unwrap();
        assert_eq!(s.cluster_velocity("p1", 2).unwrap()[0].1, 3);
        let by_node = s.cluster_clicks_by_node().unwrap();
        assert_eq!(by_node["edge-a"], 3);
        assert_eq!(by_node["edge-b"], 1);
        let page = s
            .cluster_clicks_page(&ClickQuery {
                partner: Some("p1".into()),
                limit: 2,
                ..Default::default()
            })
            .unwrap();
        let ids: Vec<u128> = page.clicks.iter().map(|c| c.id.0 >> 80).collect();
        assert_eq!(ids, vec![5, 6]);
        let rest = s
            .cluster_clicks_page(&ClickQuery {
                partner: Some("p1".into()),
                after: page.next,
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(rest.clicks.len(), 1);
    }
}
