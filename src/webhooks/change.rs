//! Changes to the outbox's endpoints, applied the same way on a single
//! node and on every calculator of a cluster.
//!
//! On one node the API applies a change at once, at the event log's
//! current position. In a cluster the change goes through the event stream
//! (`crate::cluster::events`) and every calculator applies it at its
//! stream sequence, in order with the events around it, so each one knows
//! the same endpoints, with the same secrets, from the same event on —
//! and whichever holds the lease can send.

use super::model::Endpoint;
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One change to an endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// Adds an endpoint or replaces one (a partner's postback template).
    /// An endpoint already known keeps the position it was first added
    /// at; a new one hears of events after `seq`.
    Put { endpoint: Endpoint },
    /// Nothing more is sent to it.
    Remove { id: String },
    /// Enabled again after failures; what waited for it is due at `at`.
    Resume { id: String, at: DateTime<Utc> },
}

impl Change {
    /// The endpoint it concerns.
    pub fn endpoint_id(&self) -> &str {
        match self {
            Change::Put { endpoint } => &endpoint.id,
            Change::Remove { id } | Change::Resume { id, .. } => id,
        }
    }

    /// Applies the change as of event-log position `seq`. Applying it
    /// again (a replay after a crash) changes nothing more. Blocking.
    pub fn apply(&self, store: &Store, seq: u64) -> Result<(), StoreError> {
        match self {
            Change::Put { endpoint } => {
                let mut e = endpoint.clone();
                e.from_seq = match store.endpoint(&e.id)? {
                    Some(known) => known.from_seq,
                    None => seq,
                };
                store.put_endpoint(&e)
            }
            Change::Remove { id } => match store.endpoint(id)? {
                Some(e) => store.remove_endpoint(&e),
                None => Ok(()),
            },
            Change::Resume { id, at } => match store.endpoint(id)? {
                Some(mut e) => {
                    e.disabled = None;
                    e.failures = 0;
                    store.resume_endpoint(&e, *at).map(|_| ())
                }
                None => Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::model::Disabled;

    fn endpoint(id: &str) -> Endpoint {
        Endpoint {
            id: id.into(),
            url: "https://hooks.example/in".into(),
            events: vec!["commission.created".into()],
            secret: "whsec_1".into(),
            created_at: "2026-03-01T00:00:00Z".parse().unwrap(),
            from_seq: 0,
            partner_id: None,
            disabled: None,
            failures: 0,
        }
    }

    #[test]
    fn a_put_keeps_the_first_position_and_every_change_applies_twice_alike() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let put = Change::Put {
            endpoint: endpoint("we_1"),
        };
        put.apply(&store, 7).unwrap();
        put.apply(&store, 9).unwrap();
        assert_eq!(store.endpoint("we_1").unwrap().unwrap().from_seq, 7);
        // A replaced template keeps its position too.
        let mut changed = endpoint("we_1");
        changed.url = "https://hooks.example/other".into();
        Change::Put { endpoint: changed }.apply(&store, 12).unwrap();
        let e = store.endpoint("we_1").unwrap().unwrap();
        assert_eq!(
            (e.from_seq, e.url.as_str()),
            (7, "https://hooks.example/other")
        );

        let mut off = e.clone();
        off.failures = 20;
        off.disabled = Some(Disabled {
            at: e.created_at,
            reason: "20 failed attempts in a row".into(),
        });
        store.put_endpoint(&off).unwrap();
        let resume = Change::Resume {
            id: "we_1".into(),
            at: e.created_at,
        };
        resume.apply(&store, 13).unwrap();
        resume.apply(&store, 13).unwrap();
        let e = store.endpoint("we_1").unwrap().unwrap();
        assert_eq!((e.disabled, e.failures, e.from_seq), (None, 0, 7));

        let remove = Change::Remove { id: "we_1".into() };
        remove.apply(&store, 14).unwrap();
        remove.apply(&store, 14).unwrap();
        assert_eq!(store.endpoint("we_1").unwrap(), None);
        // A change to an endpoint not (or no longer) known does nothing.
        resume.apply(&store, 15).unwrap();
        assert_eq!(store.endpoint("we_1").unwrap(), None);
    }

    #[test]
    fn changes_read_back_as_written() {
        for c in [
            Change::Put {
                endpoint: endpoint("we_2"),
            },
            Change::Remove { id: "we_2".into() },
            Change::Resume {
                id: "we_2".into(),
                at: "2026-03-02T00:00:00Z".parse().unwrap(),
            },
        ] {
            let json = serde_json::to_vec(&c).unwrap();
            assert_eq!(serde_json::from_slice::<Change>(&json).unwrap(), c);
            assert_eq!(c.endpoint_id(), "we_2");
        }
    }
}
