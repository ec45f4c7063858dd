//! Leases and rate buckets in Redis: `SET NX PX` taken and released by
//! token (Lua), and the GCRA bucket (`RATE_LIMIT`).

use std::time::Duration;

use redis::Pipeline;
use uuid::Uuid;

use super::record::{decode, Fields};
use super::RedisStore;
use crate::state::{Lease, LeaseOf, Rate, StoreError};
use crate::upload::UploadRecord;

/// A lease to try for, with a fresh random token.
fn new_lease(of: LeaseOf) -> Lease {
    Lease {
        of,
        token: Uuid::new_v4().simple().to_string(),
    }
}

impl RedisStore {
    pub(super) fn lease_key(&self, of: &LeaseOf) -> String {
        let prefix = &self.prefix;
        match of {
            LeaseOf::Chunk { upload, index } => format!("{prefix}{{{upload}}}:lease:chunk:{index}"),
            LeaseOf::Append(upload) => format!("{prefix}{{{upload}}}:lease:append"),
            LeaseOf::Complete(upload) => format!("{prefix}{{{upload}}}:lease:complete"),
            LeaseOf::Create(key) => format!("{prefix}lease:create:{key}"),
            LeaseOf::Delivery => format!("{prefix}lease:delivery"),
        }
    }

    /// Adds the taking of `lease` (`SET NX PX`; answers nil if it is held).
    fn add_lease(&self, pipe: &mut Pipeline, lease: &Lease, ttl: Duration) {
        pipe.cmd("SET")
            .arg(self.lease_key(&lease.of))
            .arg(&lease.token)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64);
    }

    pub(super) async fn lease_try(
        &self,
        of: LeaseOf,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let lease = new_lease(of);
        let (set,): (Option<String>,) = self
            .query(|| {
                let mut p = redis::pipe();
                self.add_lease(&mut p, &lease, ttl);
                p
            })
            .await?;
        Ok(set.map(|_| lease))
    }

    pub(super) async fn bucket_take(
        &self,
        bucket: &str,
        rate: Rate,
    ) -> Result<Option<Duration>, StoreError> {
        let key = format!("{}rate:{bucket}", self.prefix);
        let (interval_us, tolerance_us) = (rate.interval_us(), rate.tolerance_us());
        let (wait_us,): (u64,) = self
            .query(|| {
                let mut pipe = redis::pipe();
                self.scripts
                    .rate_limit
                    .add(&mut pipe, &[&key], &[&interval_us, &tolerance_us]);
                pipe
            })
            .await?;
        Ok((wait_us > 0).then(|| Duration::from_micros(wait_us)))
    }

    pub(super) async fn lease_release(&self, lease: &Lease) -> Result<(), StoreError> {
        self.query::<(i64,)>(|| {
            let mut p = redis::pipe();
            self.scripts
                .release
                .add(&mut p, &[&self.lease_key(&lease.of)], &[&lease.token]);
            p
        })
        .await
        .map(|_| ())
    }

    pub(super) async fn lease_renew(
        &self,
        lease: &Lease,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let (done,): (i64,) = self
            .query(|| {
                let mut p = redis::pipe();
                self.scripts.renew.add(
                    &mut p,
                    &[&self.lease_key(&lease.of)],
                    &[&lease.token, &ttl.as_millis()],
                );
                p
            })
            .await?;
        Ok(done == 1)
    }

    pub(super) async fn lease_and_read(
        &self,
        id: Uuid,
        index: u64,
        ttl: Duration,
    ) -> Result<Option<(Lease, Option<UploadRecord>)>, StoreError> {
        // One round trip: the read runs after the SET in Redis's order, so it
        // sees everything the lease's previous holder recorded.
        let lease = new_lease(LeaseOf::Chunk { upload: id, index });
        let (set, fields, bitmap): (Option<String>, Fields, Option<Vec<u8>>) = self
            .query(|| {
                let mut p = redis::pipe();
                self.add_lease(&mut p, &lease, ttl);
                self.add_read(&mut p, id);
                p
            })
            .await?;
        if set.is_none() {
            return Ok(None);
        }
        Ok(Some((lease, decode(fields, bitmap)?)))
    }
}
