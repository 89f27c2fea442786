//! The captured etcd payloads (`adapters/testkit/fixtures/etcd`) as etcd-client
//! responses, run through the adapter's own translation.

use anymesh_testkit::fixtures::{self, etcd_gateway as gw};
use etcd_client::proto::{PbEvent, PbKeyValue, PbRangeResponse, PbResponseHeader, PbWatchResponse};
use etcd_client::{GetResponse, WatchResponse};

use crate::registry::{listed, watch_input, WatchMsg};
use crate::state::Input;

fn header(revision: i64) -> Option<PbResponseHeader> {
    Some(PbResponseHeader {
        revision,
        ..PbResponseHeader::default()
    })
}

fn pb_kv(kv: &gw::Kv) -> PbKeyValue {
    PbKeyValue {
        key: kv.key.clone(),
        value: kv.value.clone(),
        mod_revision: kv.mod_revision,
        lease: kv.lease,
        ..PbKeyValue::default()
    }
}

/// A range response fixture (`etcd/<name>`) as the adapter's list input.
pub(crate) fn range(name: &str) -> Input {
    let (revision, kvs) = gw::range(&fixtures::json(&format!("etcd/{name}")));
    let resp = GetResponse(PbRangeResponse {
        header: header(revision),
        count: kvs.len() as i64,
        kvs: kvs.iter().map(pb_kv).collect(),
        ..PbRangeResponse::default()
    });
    listed(&resp)
}

/// A watch stream fixture (`etcd/<name>`), frame by frame, as the adapter reads it.
pub(crate) fn watch(name: &str) -> Vec<WatchMsg> {
    fixtures::ndjson(&format!("etcd/{name}"))
        .iter()
        .map(|frame| {
            let pb = match gw::watch_frame(frame) {
                gw::WatchFrame::Created { revision } => PbWatchResponse {
                    header: header(revision),
                    created: true,
                    ..PbWatchResponse::default()
                },
                gw::WatchFrame::Canceled {
                    compact_revision,
                    reason,
                } => PbWatchResponse {
                    header: header(0),
                    canceled: true,
                    compact_revision,
                    cancel_reason: reason,
                    ..PbWatchResponse::default()
                },
                gw::WatchFrame::Events { revision, events } => PbWatchResponse {
                    header: header(revision),
                    events: events
                        .iter()
                        .map(|e| match e {
                            gw::Event::Put(kv) => PbEvent {
                                r#type: 0,
                                kv: Some(pb_kv(kv)),
                                prev_kv: None,
                            },
                            gw::Event::Delete(kv) => PbEvent {
                                r#type: 1,
                                kv: Some(pb_kv(kv)),
                                prev_kv: None,
                            },
                        })
                        .collect(),
                    ..PbWatchResponse::default()
                },
            };
            watch_input(&WatchResponse(pb))
        })
        .collect()
}

#[cfg(test)]
mod tests;
