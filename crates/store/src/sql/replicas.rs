//! What replicas on one PostgreSQL database share beyond the tables:
//! wake-ups ([`Notifications`], LISTEN/NOTIFY) and singleton duties
//! ([`DutyLock`], an advisory lock).

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};

use crate::Result;

/// The channel every replica listens on.
const CHANNEL: &str = "gantry_signals";

/// Publishes and receives short messages between replicas. Delivery is
/// best effort (a listener that reconnects may miss some), which is all a
/// wake-up needs: waiters re-read the store and also wake on a timeout.
pub struct Notifications {
    pool: PgPool,
    url: String,
}

impl Notifications {
    pub async fn connect(url: &str) -> Result<Notifications> {
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        Ok(Notifications {
            pool,
            url: url.to_string(),
        })
    }

    /// Sends every message, in one round trip.
    pub async fn publish(&self, messages: &[String]) -> Result<()> {
        sqlx::query("SELECT pg_notify($1, m) FROM unnest($2::text[]) AS m")
            .bind(CHANNEL)
            .bind(messages)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn subscribe(&self) -> Result<Subscription> {
        let mut listener = PgListener::connect(&self.url).await?;
        listener.listen(CHANNEL).await?;
        Ok(Subscription(listener))
    }
}

pub struct Subscription(PgListener);

impl Subscription {
    /// The next message; `None` when the connection was lost (it is made
    /// again at the next call), so messages may have been missed.
    pub async fn next(&mut self) -> Result<Option<String>> {
        Ok(self
            .0
            .try_recv()
            .await?
            .map(|notification| notification.payload().to_string()))
    }
}

/// A session-level advisory lock on a connection of its own: whoever holds
/// it does the singleton duties (the lease reaper, clean-ups). PostgreSQL
/// releases it when the holder's connection ends, including when the
/// holder dies or is cut off (noticed by TCP keepalives within seconds).
pub struct DutyLock {
    conn: PgConnection,
}

/// The advisory lock's key: "gantry" in ASCII.
const DUTY_KEY: i64 = 0x67_61_6e_74_72_79;

impl DutyLock {
    /// Takes the lock if nobody holds it.
    pub async fn try_acquire(url: &str) -> Result<Option<DutyLock>> {
        // The server notices a silent holder after 2 s idle + 2 probes 1 s
        // apart, and lets go of its lock.
        let options = PgConnectOptions::from_str(url)?.options([
            ("tcp_keepalives_idle", "2"),
            ("tcp_keepalives_interval", "1"),
            ("tcp_keepalives_count", "2"),
            ("application_name", "gantry-duties"),
        ]);
        let mut conn = options.connect().await?;
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(DUTY_KEY)
            .fetch_one(&mut conn)
            .await?;
        if taken {
            Ok(Some(DutyLock { conn }))
        } else {
            conn.close().await?;
            Ok(None)
        }
    }

    /// Succeeds while the lock is still ours: the connection is alive and
    /// the lock is held by it.
    pub async fn check(&mut self) -> Result<()> {
        let held: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
                 AND pid = pg_backend_pid() AND objid = ($1::bigint & 4294967295)::oid)",
        )
        .bind(DUTY_KEY)
        .fetch_one(&mut self.conn)
        .await?;
        if held {
            Ok(())
        } else {
            Err(crate::StoreError::Database(
                "the singleton duties' advisory lock is no longer held".into(),
            ))
        }
    }
}
