//! The per-watcher task of [`SqliteStore`](super::SqliteStore)'s watch: replays the log in
//! pages, then forwards live broadcast events, and closes the stream rather than ever blocking
//! a writer. Why it works this way (subscribe first, skip what was already sent, cut off a slow
//! watcher) is in the `sqlite` module docs; this file is the loop that does it.

use std::sync::{Arc, Mutex, Weak};

use rusqlite::Connection;
use tokio::sync::{broadcast, mpsc};

use super::{HISTORY_PAGE, blocking, history};
use crate::store::{Revision, WatchEvent};

/// Feeds one watcher: history pages, then live events, closing the stream on overflow or lag.
pub(super) struct Forwarder {
    /// Weak, so that dropping the store closes the database and ends the watch.
    pub(super) db: Weak<Mutex<Connection>>,
    pub(super) prefix: String,
    /// The newest revision sent (or `after`): nothing at or below it is sent again.
    pub(super) last: Revision,
    pub(super) live: broadcast::Receiver<Arc<WatchEvent>>,
    pub(super) tx: mpsc::Sender<WatchEvent>,
}

impl Forwarder {
    pub(super) async fn run(mut self, first: Vec<WatchEvent>) {
        let mut page = first;
        loop {
            let full = page.len() == HISTORY_PAGE;
            for event in page {
                self.last = event.revision();
                if self.tx.send(event).await.is_err() {
                    return; // The receiver is gone.
                }
            }
            if !full {
                break;
            }
            let Some(db) = self.db.upgrade() else {
                return; // The store is gone.
            };
            let (prefix, after) = (self.prefix.clone(), self.last);
            page = match blocking(db, move |conn| history(conn, &prefix, after)).await {
                Ok(page) => page,
                Err(error) => {
                    // E.g. compacted past this watcher while it caught up.
                    tracing::warn!(prefix = self.prefix, %error, "watch closed while replaying history");
                    return;
                }
            };
        }
        loop {
            let event = tokio::select! {
                () = self.tx.closed() => return,
                event = self.live.recv() => event,
            };
            let event = match event {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Closed) => return, // The store is gone.
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        prefix = self.prefix,
                        last = self.last,
                        missed,
                        "watcher lagged; closing its stream"
                    );
                    return;
                }
            };
            if event.revision() <= self.last || !event.kv.key.starts_with(&self.prefix) {
                continue;
            }
            match self.tx.try_send(WatchEvent::clone(&event)) {
                Ok(()) => self.last = event.revision(),
                Err(mpsc::error::TrySendError::Closed(_)) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(
                        prefix = self.prefix,
                        last = self.last,
                        "watcher buffer full; closing its stream"
                    );
                    return;
                }
            }
        }
    }
}
