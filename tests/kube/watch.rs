//! Watch streams, per "Efficient detection of changes" and "Watch bookmarks" of
//! <https://kubernetes.io/docs/reference/using-api/api-concepts/>:
//!
//! - `resourceVersion` unset or `"0"`: synthetic ADDED events for every current object, then the
//!   changes; `resourceVersion=N`: every change after N, or (N older than the history) a single
//!   ERROR event carrying a 410 `Expired` Status, as the watch cache answers (`newErrWatcher`),
//!   after which clients relist; N newer than the server's newest is an ERROR event with 504
//!   `Timeout: Too large resource version` (a list answers that 504 directly);
//! - `sendInitialEvents=true`: the current objects as ADDED, then a BOOKMARK annotated
//!   `k8s.io/initial-events-end: "true"` (streaming lists);
//! - `allowWatchBookmarks=true`: a BOOKMARK (only `kind`, `apiVersion` and
//!   `metadata.resourceVersion`) every [`BOOKMARK_EVERY`] and before the stream ends;
//! - label and field selectors apply to each event: an object that stops matching is sent as
//!   DELETED and one that starts matching as ADDED (the watch cache's `prevObject` rule);
//! - `timeoutSeconds` ends the stream (default 30 minutes);
//! - `Accept: …;as=Table` (kubectl get --watch) makes each event object a one-row Table, and
//!   `as=PartialObjectMetadata` a PartialObjectMetadata.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use futures::stream;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::Status;
use super::resources::ResourceInfo;
use super::selector::{FieldSelector, LabelSelector, labels};
use super::store::{Change, ChangeKind, Store};

/// How often a watch that allows bookmarks gets one. The real server sends one about every
/// minute; a test server sends them often so tests see them in seconds.
pub const BOOKMARK_EVERY: Duration = Duration::from_secs(1);

/// Which events one watch wants.
#[derive(Debug, Clone)]
pub struct Filter {
    pub info: ResourceInfo,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// Objects as `PartialObjectMetadata`.
    pub metadata_only: bool,
    /// Objects as one-row Tables (`as=Table`), with this `includeObject`.
    pub table: Option<String>,
}

impl Filter {
    fn matches(&self, object: &Value) -> bool {
        self.labels.matches(&labels(object)) && self.fields.matches(object)
    }

    /// The event this watch sees for `change`, if any.
    fn event(&self, change: &Change) -> Option<(&'static str, Value)> {
        let (group, resource) = self
            .info
            .view_of
            .clone()
            .unwrap_or_else(|| (self.info.group.clone(), self.info.resource.clone()));
        if change.group != group || change.resource != resource {
            return None;
        }
        if self
            .namespace
            .as_ref()
            .is_some_and(|ns| *ns != change.namespace)
        {
            return None;
        }
        let shown = Store::as_version(&self.info, change.object.clone());
        let now = self.matches(&shown);
        let before = change
            .previous
            .as_ref()
            .is_some_and(|p| self.matches(&Store::as_version(&self.info, p.clone())));
        let kind = match change.kind {
            ChangeKind::Added if now => "ADDED",
            ChangeKind::Modified if now && before => "MODIFIED",
            ChangeKind::Modified if now => "ADDED",
            ChangeKind::Modified if before => "DELETED",
            ChangeKind::Deleted if now => "DELETED",
            _ => return None,
        };
        Some((kind, self.shape(shown)))
    }

    /// The object in the form the client asked for.
    fn shape(&self, object: Value) -> Value {
        if let Some(include) = &self.table {
            let rv = object["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            return super::table::table(&self.info, &[object], rv, include, jiff::Timestamp::now());
        }
        if self.metadata_only {
            return super::http::partial(&object);
        }
        object
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Value {
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let (kind, api_version) = if self.metadata_only {
            (
                "PartialObjectMetadata".to_owned(),
                "meta.k8s.io/v1".to_owned(),
            )
        } else {
            (self.info.kind.clone(), self.info.api_version())
        };
        json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version, "metadata": metadata}})
    }
}

fn line(event: &Value) -> Bytes {
    let mut text = event.to_string();
    text.push('\n');
    Bytes::from(text)
}

/// How a watch starts.
#[derive(Debug)]
pub enum Start {
    /// Synthetic ADDED events for `items` (at `rv`), then the changes (`initial_end`: a
    /// bookmark marks the end of the initial events).
    Initial {
        items: Vec<Value>,
        rv: u64,
        initial_end: bool,
        rx: broadcast::Receiver<Arc<Change>>,
    },
    /// The changes after `rv`: those already committed, then the live ones.
    From {
        rv: u64,
        backlog: Vec<Arc<Change>>,
        rx: broadcast::Receiver<Arc<Change>>,
    },
    /// The version is too old: one ERROR event.
    Expired(Status),
}

struct State {
    filter: Filter,
    queue: VecDeque<Bytes>,
    rx: Option<broadcast::Receiver<Arc<Change>>>,
    seen: u64,
    bookmarks: bool,
    next_bookmark: Instant,
    deadline: Instant,
}

/// The streamed body of one watch.
pub fn body(filter: Filter, start: Start, bookmarks: bool, timeout: Duration) -> Body {
    let mut queue = VecDeque::new();
    let (rx, seen) = match start {
        Start::Expired(status) => {
            queue.push_back(line(&json!({"type": "ERROR", "object": status.body})));
            (None, 0)
        }
        Start::Initial {
            items,
            rv,
            initial_end,
            rx,
        } => {
            for item in items {
                let item = filter.shape(item);
                queue.push_back(line(&json!({"type": "ADDED", "object": item})));
            }
            if initial_end {
                queue.push_back(line(&filter.bookmark(rv, true)));
            }
            (Some(rx), rv)
        }
        Start::From { rv, backlog, rx } => {
            let mut seen = rv;
            for change in backlog {
                seen = seen.max(change.rv);
                if let Some((kind, object)) = filter.event(&change) {
                    queue.push_back(line(&json!({"type": kind, "object": object})));
                }
            }
            (Some(rx), seen)
        }
    };
    let now = Instant::now();
    let state = State {
        filter,
        queue,
        rx,
        seen,
        bookmarks,
        next_bookmark: now + BOOKMARK_EVERY,
        deadline: now + timeout,
    };
    let events = stream::unfold(state, |mut st| async move {
        loop {
            if let Some(chunk) = st.queue.pop_front() {
                return Some((Ok::<Bytes, std::io::Error>(chunk), st));
            }
            let rx = st.rx.as_mut()?;
            let wake = if st.bookmarks {
                st.next_bookmark.min(st.deadline)
            } else {
                st.deadline
            };
            tokio::select! {
                received = rx.recv() => match received {
                    Ok(change) => {
                        // Changes older than what the backlog already covered are skipped.
                        if change.rv <= st.seen {
                            continue;
                        }
                        st.seen = change.rv;
                        if let Some((kind, object)) = st.filter.event(&change) {
                            st.queue.push_back(line(&json!({"type": kind, "object": object})));
                        }
                    }
                    // A watcher too slow for the channel is closed; the client re-watches from
                    // its last resourceVersion.
                    Err(_) => return None,
                },
                () = tokio::time::sleep_until(wake) => {
                    if Instant::now() >= st.deadline {
                        if st.bookmarks {
                            let last = line(&st.filter.bookmark(st.seen, false));
                            st.rx = None;
                            return Some((Ok(last), st));
                        }
                        return None;
                    }
                    st.next_bookmark = Instant::now() + BOOKMARK_EVERY;
                    st.queue.push_back(line(&st.filter.bookmark(st.seen, false)));
                }
            }
        }
    });
    Body::from_stream(events)
}
