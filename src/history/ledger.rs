//! The delivery ledger (SPEC §16) in the history store: messages planned
//! in the same transaction as the alert they are about (so an alert in the
//! log always has its messages), their attempts and outcomes, the members of
//! grouped messages and digests, and followed unsubscribe links.

use sqlx::any::AnyRow;
use sqlx::{Row as _, query};

use super::store::HistoryStore;
use crate::alert::Alert;
use crate::time::Ts;

/// A message or group member to record for an alert.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    /// The idempotency key (a member's key, for a group member).
    pub id: String,
    /// `alert`, `report` or `digest`.
    pub kind: &'static str,
    pub refs: Vec<String>,
    pub destination: String,
    /// `email`, `slack` or `webhook`.
    pub dest_kind: &'static str,
    pub recipient: String,
    pub account_id: Option<String>,
    /// A csm recipient's book (its csm id) when planned.
    pub book: Option<String>,
    pub severity: Option<String>,
    pub created_at: Ts,
    /// When it may go (a member: when its group goes, if it opens one).
    pub next_at: Ts,
    /// `{"alerts": [§5.3 messages]}` (a report's own document for reports).
    pub payload: String,
    /// For a group member: the group's key.
    pub group: Option<String>,
}

/// What the history writer asks about each alert it records.
pub trait Planner: Send + Sync {
    /// The messages and group members `alert` makes now (`now`: wall clock).
    fn plan(&self, alert: &Alert, now: Ts) -> Vec<Planned>;
}

/// A ledger row.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    pub id: String,
    pub kind: String,
    pub refs: Vec<String>,
    pub destination: String,
    pub dest_kind: String,
    pub recipient: String,
    pub account_id: Option<String>,
    pub book: Option<String>,
    pub severity: Option<String>,
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: Ts,
    pub next_at: Ts,
    pub sent_at: Option<Ts>,
    pub payload: String,
}

/// A group member as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    pub key: String,
    pub kind: String,
    pub destination: String,
    pub dest_kind: String,
    pub recipient: String,
    pub account_id: Option<String>,
    pub book: Option<String>,
    pub severity: Option<String>,
    pub created_at: Ts,
    pub due_at: Ts,
    pub payload: String,
}

/// What an attempt changed.
#[derive(Clone, Debug)]
pub struct Outcome<'a> {
    pub status: &'a str,
    pub attempts: i64,
    pub last_error: Option<&'a str>,
    pub next_at: Ts,
    pub sent_at: Option<Ts>,
}

const COLUMNS: &str = "id, kind, refs, destination, dest_kind, recipient, account_id, book, severity, status, \
                       attempts, last_error, created_at, next_at, sent_at, payload";

fn delivery(r: &AnyRow) -> Result<Delivery, sqlx::Error> {
    let refs: String = r.try_get("refs")?;
    Ok(Delivery {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        refs: serde_json::from_str(&refs).unwrap_or_default(),
        destination: r.try_get("destination")?,
        dest_kind: r.try_get("dest_kind")?,
        recipient: r.try_get("recipient")?,
        account_id: r.try_get("account_id")?,
        book: r.try_get("book")?,
        severity: r.try_get("severity")?,
        status: r.try_get("status")?,
        attempts: r.try_get("attempts")?,
        last_error: r.try_get("last_error")?,
        created_at: r.try_get("created_at")?,
        next_at: r.try_get("next_at")?,
        sent_at: r.try_get("sent_at")?,
        payload: r.try_get("payload")?,
    })
}

/// Records `p` (a message, or a group member) unless its key is there.
pub(super) async fn record(conn: &mut sqlx::AnyConnection, p: &Planned) -> Result<(), sqlx::Error> {
    match &p.group {
        None => insert_message(conn, p, "pending").await,
        Some(group) => {
            // A member joins its group's open window (or opens one).
            let open: Option<i64> = query("SELECT MIN(due_at) AS due FROM delivery_members WHERE group_key = $1")
                .bind(group.as_str())
                .fetch_one(&mut *conn)
                .await?
                .try_get("due")?;
            query(
                "INSERT INTO delivery_members (member_key, group_key, kind, destination, dest_kind, recipient, \
                 account_id, book, severity, created_at, due_at, payload) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING",
            )
            .bind(p.id.as_str())
            .bind(group.as_str())
            .bind(p.kind)
            .bind(p.destination.as_str())
            .bind(p.dest_kind)
            .bind(p.recipient.as_str())
            .bind(p.account_id.clone())
            .bind(p.book.clone())
            .bind(p.severity.clone())
            .bind(p.created_at)
            .bind(open.unwrap_or(p.next_at))
            .bind(p.payload.as_str())
            .execute(&mut *conn)
            .await?;
            Ok(())
        }
    }
}

async fn insert_message(conn: &mut sqlx::AnyConnection, p: &Planned, status: &str) -> Result<(), sqlx::Error> {
    query(&format!(
        "INSERT INTO deliveries ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, NULL, $11, $12, \
         NULL, $13) ON CONFLICT DO NOTHING"
    ))
    .bind(p.id.as_str())
    .bind(p.kind)
    .bind(serde_json::to_string(&p.refs).unwrap_or_default())
    .bind(p.destination.as_str())
    .bind(p.dest_kind)
    .bind(p.recipient.as_str())
    .bind(p.account_id.clone())
    .bind(p.book.clone())
    .bind(p.severity.clone())
    .bind(status)
    .bind(p.created_at)
    .bind(p.next_at)
    .bind(p.payload.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl HistoryStore {
    /// The ids of up to `limit` messages to try now, oldest due first.
    pub async fn due_ids(&self, now: Ts, limit: i64) -> Result<Vec<String>, sqlx::Error> {
        let rows = query(&format!(
            "SELECT id FROM deliveries WHERE status IN ('pending', 'failed') AND next_at <= $1 \
             ORDER BY next_at LIMIT {limit}"
        ))
        .bind(now)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| r.try_get("id")).collect()
    }

    /// The earliest instant a pending or failed message or a group is due.
    pub async fn next_due(&self) -> Result<Option<Ts>, sqlx::Error> {
        let r = query(
            "SELECT MIN(t) AS t FROM (SELECT MIN(next_at) AS t FROM deliveries WHERE status IN ('pending', \
             'failed') UNION ALL SELECT MIN(due_at) AS t FROM delivery_members) AS due",
        )
        .fetch_one(self.pool())
        .await?;
        r.try_get("t")
    }

    /// Records an attempt's outcome (or a hold: a later `next_at`).
    pub async fn set_outcome(&self, id: &str, o: &Outcome<'_>) -> Result<(), sqlx::Error> {
        query("UPDATE deliveries SET status = $1, attempts = $2, last_error = $3, next_at = $4, sent_at = $5 WHERE id = $6")
            .bind(o.status)
            .bind(o.attempts)
            .bind(o.last_error.map(str::to_owned))
            .bind(o.next_at)
            .bind(o.sent_at)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The groups with members due by `now`.
    pub async fn due_groups(&self, now: Ts) -> Result<Vec<String>, sqlx::Error> {
        let rows = query("SELECT DISTINCT group_key FROM delivery_members WHERE due_at <= $1")
            .bind(now)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(|r| r.try_get("group_key")).collect()
    }

    /// Turns the due members of `group` into the message `make` builds from
    /// them (none: they are dropped), in one transaction.
    pub async fn flush_group(
        &self,
        group: &str,
        now: Ts,
        make: impl FnOnce(Vec<Member>) -> Option<Planned>,
    ) -> Result<Option<String>, sqlx::Error> {
        let mut tx = self.pool().begin().await?;
        let rows = query(
            "SELECT member_key, kind, destination, dest_kind, recipient, account_id, book, severity, created_at, \
             due_at, payload FROM delivery_members WHERE group_key = $1 AND due_at <= $2 ORDER BY created_at, member_key",
        )
        .bind(group)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let members = rows
            .iter()
            .map(|r| {
                Ok(Member {
                    key: r.try_get("member_key")?,
                    kind: r.try_get("kind")?,
                    destination: r.try_get("destination")?,
                    dest_kind: r.try_get("dest_kind")?,
                    recipient: r.try_get("recipient")?,
                    account_id: r.try_get("account_id")?,
                    book: r.try_get("book")?,
                    severity: r.try_get("severity")?,
                    created_at: r.try_get("created_at")?,
                    due_at: r.try_get("due_at")?,
                    payload: r.try_get("payload")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        for m in &members {
            query("DELETE FROM delivery_members WHERE member_key = $1").bind(m.key.as_str()).execute(&mut *tx).await?;
        }
        let made = make(members);
        if let Some(p) = &made {
            insert_message(&mut tx, p, "pending").await?;
        }
        tx.commit().await?;
        Ok(made.map(|p| p.id))
    }

    /// A message recorded directly (a resend, a report's delivery).
    pub async fn add_delivery(&self, p: &Planned) -> Result<(), sqlx::Error> {
        let mut conn = self.pool().acquire().await?;
        insert_message(&mut conn, p, "pending").await
    }

    pub async fn delivery(&self, id: &str) -> Result<Option<Delivery>, sqlx::Error> {
        let row = query(&format!("SELECT {COLUMNS} FROM deliveries WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(delivery).transpose()
    }

    /// The ledger, newest first: created at or after `from`, with the
    /// status and kind given, at most `limit` rows.
    pub async fn deliveries(
        &self,
        status: Option<&str>,
        kind: Option<&str>,
        from: Ts,
        limit: i64,
    ) -> Result<Vec<Delivery>, sqlx::Error> {
        let rows = query(&format!(
            "SELECT {COLUMNS} FROM deliveries WHERE created_at >= $1 AND ($2 = '' OR status = $2) \
             AND ($3 = '' OR kind = $3) ORDER BY created_at DESC, id LIMIT {limit}"
        ))
        .bind(from)
        .bind(status.unwrap_or(""))
        .bind(kind.unwrap_or(""))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(delivery).collect()
    }

    /// Records a followed unsubscribe link (again: nothing changes).
    pub async fn unsubscribe(&self, person: &str, route: &str, at: Ts) -> Result<(), sqlx::Error> {
        query("INSERT INTO unsubscribed (person, route, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(person)
            .bind(route)
            .bind(at)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Every (person, route) unsubscribed.
    pub async fn unsubscribed(&self) -> Result<Vec<(String, String)>, sqlx::Error> {
        let rows = query("SELECT person, route FROM unsubscribed").fetch_all(self.pool()).await?;
        rows.iter().map(|r| Ok((r.try_get("person")?, r.try_get("route")?))).collect()
    }

    /// Deletes finished messages created before `before`.
    pub async fn prune_deliveries(&self, before: Ts) -> Result<u64, sqlx::Error> {
        let r = query("DELETE FROM deliveries WHERE created_at < $1 AND status IN ('sent', 'gave_up', 'cancelled')")
            .bind(before)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected())
    }
}
