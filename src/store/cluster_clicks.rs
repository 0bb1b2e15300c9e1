//! Cluster mode, calculator nodes: the clicks of every edge, replicated
//! from the click stream, for click-id attribution across edges and the
//! payout rule on a partner's last click.
//!
//! Keys in the `cluster_clicks` tree:
//! - `c` + click id (16 bytes BE) → the click's JSON as shipped
//! - `p` + partner id + `0x00` + click id → empty (a partner's clicks)
//! - `s` → the click stream's sequence replicated up to (`u64` BE)

use super::{Store, StoreError};
use crate::id::ClickId;
use crate::model::ClickRecord;

const CLICK: u8 = b'c';
const BY_PARTNER: u8 = b'p';
const CURSOR: &[u8] = b"s";

fn click_key(id: ClickId) -> [u8; 17] {
    let mut k = [CLICK; 17];
    k[1..].copy_from_slice(&id.to_bytes());
    k
}

fn partner_prefix(partner: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + partner.len() + 16);
    k.push(BY_PARTNER);
    k.extend_from_slice(partner.as_bytes());
    k.push(0);
    k
}

impl Store {
    /// Adds clicks from the click stream and the sequence they reach, in
    /// one batch and one flush (a repeat overwrites itself).
    pub fn add_cluster_clicks(
        &self,
        clicks: &[(ClickRecord, Vec<u8>)],
        seq: u64,
    ) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for (c, raw) in clicks {
            b.insert(&click_key(c.id)[..], raw.as_slice());
            let mut k = partner_prefix(&c.partner_id);
            k.extend_from_slice(&c.id.to_bytes());
            b.insert(k, &[][..]);
        }
        b.insert(CURSOR, &seq.to_be_bytes()[..]);
        self.with(|t| {
            t.cluster_clicks.apply_batch(b)?;
            Ok(t.db.flush().map(|_| ())?)
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
        serde_json::from_value(serde_json::json!({
            "id": ClickId(id << 80).to_string(), "at": "2026-01-01T00:00:00Z", "link": "l1",
            "partner_id": partner, "program": "krispcall", "method": "GET",
            "ip_hash": "00", "ip_prefix": "10.0.0.0/24", "headers": {}, "flags": [],
            "cookie": "none"
        }))
        .unwrap()
    }

    #[test]
    fn clicks_are_found_by_id_and_by_partner_and_the_cursor_kept() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let batch: Vec<_> = [rec(5, "p1"), rec(9, "p1"), rec(7, "p2")]
            .into_iter()
            .map(|c| {
                let raw = serde_json::to_vec(&c).unwrap();
                (c, raw)
            })
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
    }
}
