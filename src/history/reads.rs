//! What reports read from the history store (SPEC §17): a scope's account
//! rows at a day boundary, and the tier and alert logs over a period, for
//! every account at once.

use serde_json::Value;
use sqlx::{Row as _, query};

use super::store::HistoryStore;
use crate::state::log::account_object;
use crate::time::Ts;

/// One tier change as the tier log keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct TierLogRow {
    pub account_id: String,
    pub ts: Ts,
    pub from: Option<String>,
    pub to: String,
    pub score: f64,
    /// The §15 cause object (`{"topic", "event_id"}`, or time passing).
    pub cause: Value,
}

impl HistoryStore {
    /// The account objects (§3.1, without rank, with the closed day's usage)
    /// of the rows at the day boundary `at`, of `csm_id`'s book when given
    /// (`Some("")`: the unassigned), ordered by account id.
    pub async fn account_rows_at(&self, at: Ts, csm_id: Option<&str>) -> Result<Vec<Value>, sqlx::Error> {
        let (book, bound) = match csm_id {
            None => ("", None),
            Some("") => (" AND csm_id IS NULL", None),
            Some(csm) => (" AND csm_id = $2", Some(csm)),
        };
        let sql = format!("SELECT account_id, vals FROM account_rows WHERE at = $1{book} ORDER BY account_id");
        let mut q = query(&sql).bind(at);
        if let Some(csm) = bound {
            q = q.bind(csm);
        }
        let rows = q.fetch_all(self.pool()).await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("account_id")?;
                let vals: String = r.try_get("vals")?;
                let values: Vec<Value> = serde_json::from_str(&vals).map_err(|e| sqlx::Error::Decode(e.into()))?;
                Ok(account_object(&id, &values))
            })
            .collect()
    }

    /// Every tier change with `ts` in [from, to), oldest first.
    pub async fn tier_log_between(&self, from: Ts, to: Ts) -> Result<Vec<TierLogRow>, sqlx::Error> {
        let rows = query(
            "SELECT account_id, ts, from_tier, to_tier, score, cause FROM tier_log \
             WHERE ts >= $1 AND ts < $2 ORDER BY ts, account_id, seq",
        )
        .bind(from)
        .bind(to)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let cause: String = r.try_get("cause")?;
                Ok(TierLogRow {
                    account_id: r.try_get("account_id")?,
                    ts: r.try_get("ts")?,
                    from: r.try_get("from_tier")?,
                    to: r.try_get("to_tier")?,
                    score: r.try_get("score")?,
                    cause: serde_json::from_str(&cause).unwrap_or(Value::Null),
                })
            })
            .collect()
    }

    /// Every alert transition with `ts` in [from, to), oldest first, as its
    /// §5.3 message.
    pub async fn alert_log_between(&self, from: Ts, to: Ts) -> Result<Vec<Value>, sqlx::Error> {
        let rows = query("SELECT body FROM alert_log WHERE ts >= $1 AND ts < $2 ORDER BY ts, alert_id, version, state")
            .bind(from)
            .bind(to)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                let body: String = r.try_get("body")?;
                Ok(serde_json::from_str(&body).unwrap_or(Value::Null))
            })
            .collect()
    }
}
