//! Per-object locks that serialise the commit of writes to one path, so the
//! metadata recorded for a path is always that of the content that won.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// (connection id, path)
type ObjectKey = (String, String);

/// Locks keyed by (connection id, path), freed when nobody holds them.
#[derive(Debug, Default)]
pub struct PathLocks {
    locks: Mutex<HashMap<ObjectKey, Weak<AsyncMutex<()>>>>,
}

impl PathLocks {
    /// Waits for and takes the lock of one object.
    pub async fn lock(&self, connection_id: &str, path: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.locks.lock().expect("lock map poisoned");
            map.retain(|_, weak| weak.strong_count() > 0);
            let key = (connection_id.to_owned(), path.to_owned());
            match map.get(&key).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(AsyncMutex::new(()));
                    map.insert(key, Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_same_path_is_exclusive_and_others_are_not() {
        let locks = PathLocks::default();
        let a = locks.lock("c", "a").await;
        let _b = locks.lock("c", "b").await;
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), locks.lock("c", "a"))
                .await
                .is_err()
        );
        drop(a);
        let _a = locks.lock("c", "a").await;
    }
}
