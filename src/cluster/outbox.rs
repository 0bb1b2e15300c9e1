//! The outbox across calculators: endpoint changes travel in the event
//! stream, and deliveries made are marked in the `refedge_delivered`
//! bucket.
//!
//! Every calculator queues the deliveries of the events it applies (their
//! ids are derived from the event and the endpoint, so they are the same
//! on every node); only the lease holder sends. An endpoint change
//! ([`Change`]) is published to `REFEDGE_EVENTS` with the header
//! [`KIND_HEADER`] and applied by every calculator at its sequence (see
//! [`crate::webhooks::change`]), so a standby knows every endpoint and its
//! secret. The sender marks each delivered event id; a calculator that
//! takes over skips what is marked, and while standing by it settles the
//! marked deliveries of its own queue (see
//! [`crate::webhooks::deliver`]). A send and its mark are not atomic: a
//! kill between them sends that one again from the next holder — at least
//! once, as receivers are told (they de-duplicate on the event id).

use super::{Cluster, ClusterError, EVENTS_SUBJECT};
use crate::webhooks::change::Change;
use crate::webhooks::deliver::Marks;
use async_nats::HeaderMap;
use futures_util::future::BoxFuture;

/// Header naming what a stream message other than an event holds.
pub const KIND_HEADER: &str = "Refedge-Kind";
/// Its value for an endpoint change.
pub const ENDPOINT_CHANGE: &str = "endpoint-change";

impl Cluster {
    /// Publishes an endpoint change to the event stream; its sequence once
    /// the stream holds it.
    pub async fn publish_change(&self, change: &Change) -> Result<u64, ClusterError> {
        let parts = self.parts()?;
        let mut headers = HeaderMap::new();
        headers.insert(KIND_HEADER, ENDPOINT_CHANGE);
        let payload = serde_json::to_vec(change).expect("changes serialise");
        let ack = parts
            .js
            .publish_with_headers(EVENTS_SUBJECT, headers, payload.into())
            .await
            .map_err(ClusterError::nats)?
            .await
            .map_err(ClusterError::nats)?;
        Ok(ack.sequence)
    }
}

/// An endpoint change read back from a stream message, if it is one.
pub(super) fn change_of(m: &async_nats::Message) -> Option<Result<Change, String>> {
    let kind = m.headers.as_ref()?.get(KIND_HEADER)?;
    if kind.as_str() != ENDPOINT_CHANGE {
        return Some(Err(format!("unknown kind {:?}", kind.as_str())));
    }
    Some(serde_json::from_slice(&m.payload).map_err(|e| e.to_string()))
}

impl Marks for Cluster {
    fn delivered<'a>(&'a self, event_id: &'a str) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            let kv = &self.parts().map_err(|e| e.to_string())?.delivered;
            Ok(kv.get(event_id).await.map_err(|e| e.to_string())?.is_some())
        })
    }

    fn mark<'a>(&'a self, event_id: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let kv = &self.parts().map_err(|e| e.to_string())?.delivered;
            kv.put(event_id, bytes::Bytes::from_static(b"1"))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}
