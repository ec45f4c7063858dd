//! Caps on chunk requests in progress, overall and per upload, so that one
//! client opening hundreds of parallel PUTs cannot take every connection,
//! buffer and disk slot of the instance. Counted per process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use crate::core::Error;

#[derive(Debug, Clone)]
pub struct ChunkSlots {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    max_total: usize,
    max_per_upload: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    total: usize,
    per_upload: HashMap<Uuid, usize>,
}

/// A taken slot; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    inner: Arc<Inner>,
    id: Uuid,
}

impl ChunkSlots {
    pub fn new(max_total: usize, max_per_upload: usize) -> ChunkSlots {
        ChunkSlots {
            inner: Arc::new(Inner {
                max_total,
                max_per_upload,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Takes a slot for a chunk request to upload `id`, or says to come back.
    pub fn try_take(&self, id: Uuid) -> Result<Slot, Error> {
        let mut st = self.inner.state.lock().expect("slot state poisoned");
        if st.total >= self.inner.max_total {
            return Err(Error::RateLimited {
                message: format!(
                    "this server has {} chunk requests in progress, its limit; retry shortly",
                    self.inner.max_total
                ),
                retry_after: std::time::Duration::from_secs(1),
            });
        }
        let n = st.per_upload.entry(id).or_insert(0);
        if *n >= self.inner.max_per_upload {
            return Err(Error::RateLimited {
                message: format!(
                    "upload {id} already has {} chunk requests in progress, the limit; send fewer in parallel",
                    self.inner.max_per_upload
                ),
                retry_after: std::time::Duration::from_secs(1),
            });
        }
        *n += 1;
        st.total += 1;
        Ok(Slot {
            inner: self.inner.clone(),
            id,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut st = self.inner.state.lock().expect("slot state poisoned");
        st.total -= 1;
        if let Some(n) = st.per_upload.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                st.per_upload.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_and_given_back() {
        let slots = ChunkSlots::new(3, 2);
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        let a1 = slots.try_take(a).unwrap();
        let _a2 = slots.try_take(a).unwrap();
        assert!(slots.try_take(a).is_err(), "per-upload cap");
        let _b1 = slots.try_take(b).unwrap();
        assert!(slots.try_take(b).is_err(), "overall cap");
        drop(a1);
        assert!(slots.try_take(b).is_ok());
    }
}
