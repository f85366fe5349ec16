//! Whether the session store is answering, so an outage is logged once when
//! it starts and once when it ends (with how many calls failed meanwhile),
//! never once per request.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::store::StoreError;

#[derive(Debug, Default)]
pub(crate) struct StoreHealth {
    down: AtomicBool,
    failed: AtomicU64,
}

impl StoreHealth {
    /// Notes the outcome of a store call; passes it on.
    pub(crate) fn note<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        match &result {
            Ok(_) => {
                if self.down.load(Ordering::Relaxed) && self.down.swap(false, Ordering::AcqRel) {
                    let failed = self.failed.swap(0, Ordering::AcqRel);
                    tracing::warn!(failed_calls = failed, "session store available again");
                }
            }
            Err(error) => {
                self.failed.fetch_add(1, Ordering::AcqRel);
                if !self.down.swap(true, Ordering::AcqRel) {
                    tracing::warn!(%error, "session store unavailable: refreshes, logins and logouts answer 503 until it is back");
                }
            }
        }
        result
    }
}
