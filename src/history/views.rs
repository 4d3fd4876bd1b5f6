//! Saved views (SPEC §19) in the history store: a subject's named views,
//! kept as the JSON objects the API answers. What a view may hold is
//! decided by the API (`http::views`); the store keeps them and enforces
//! that wall views' names are unique and that a subject keeps at most
//! [`MAX_VIEWS`].

use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{Row as _, query};

use super::store::HistoryStore;
use crate::time::Ts;

/// Views a subject keeps at most.
pub const MAX_VIEWS: i64 = 100;

/// A view to keep.
#[derive(Clone, Debug, PartialEq)]
pub struct NewView<'a> {
    pub subject: &'a str,
    pub name: &'a str,
    pub page: &'a str,
    pub wall: bool,
    pub pinned: bool,
    /// The view object (with its `updated_at`).
    pub view: &'a Value,
    pub updated_at: Ts,
}

/// Why a view was not kept.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("another subject has a wall view named {0:?}")]
    WallNameTaken(String),
    #[error("a subject keeps at most {MAX_VIEWS} views")]
    TooMany,
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

fn view_of(row: &AnyRow) -> Result<Value, sqlx::Error> {
    let text: String = row.try_get("view")?;
    serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(e.into()))
}

/// Pinned views first, then by name.
const ORDER: &str = " ORDER BY pinned DESC, name";

impl HistoryStore {
    /// `subject`'s views, pinned first, then by name.
    pub async fn views(&self, subject: &str) -> Result<Vec<Value>, sqlx::Error> {
        let sql = format!("SELECT view FROM saved_views WHERE subject = $1{ORDER}");
        query(&sql).bind(subject).fetch_all(self.pool()).await?.iter().map(view_of).collect()
    }

    /// Every view marked for wall displays, pinned first, then by name.
    pub async fn wall_views(&self) -> Result<Vec<Value>, sqlx::Error> {
        let sql = format!("SELECT view FROM saved_views WHERE wall = 1{ORDER}");
        query(&sql).fetch_all(self.pool()).await?.iter().map(view_of).collect()
    }

    /// `subject`'s view `name`.
    pub async fn view(&self, subject: &str, name: &str) -> Result<Option<Value>, sqlx::Error> {
        let row = query("SELECT view FROM saved_views WHERE subject = $1 AND name = $2")
            .bind(subject)
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(view_of).transpose()
    }

    /// The wall view `name` (of whichever subject made it).
    pub async fn wall_view(&self, name: &str) -> Result<Option<Value>, sqlx::Error> {
        let row = query("SELECT view FROM saved_views WHERE wall = 1 AND name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(view_of).transpose()
    }

    /// Keeps `v` in place of the subject's view of that name; `true` when
    /// it is new.
    pub async fn put_view(&self, v: &NewView<'_>) -> Result<bool, PutError> {
        let mut tx = self.pool().begin().await?;
        // A write first: SQLite takes the write lock here, so the reads below
        // cannot deadlock against another writer by upgrading a read lock
        // (SQLITE_BUSY at once, whatever the busy timeout). It changes nothing.
        let exists = query("UPDATE saved_views SET updated_at = updated_at WHERE subject = $1 AND name = $2")
            .bind(v.subject)
            .bind(v.name)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        if !exists {
            let count: i64 = query("SELECT COUNT(*) AS n FROM saved_views WHERE subject = $1")
                .bind(v.subject)
                .fetch_one(&mut *tx)
                .await?
                .try_get("n")?;
            if count >= MAX_VIEWS {
                return Err(PutError::TooMany);
            }
        }
        if v.wall {
            let taken = query("SELECT 1 FROM saved_views WHERE wall = 1 AND name = $1 AND subject <> $2")
                .bind(v.name)
                .bind(v.subject)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            if taken {
                return Err(PutError::WallNameTaken(v.name.to_owned()));
            }
        }
        let written = query(
            "INSERT INTO saved_views VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (subject, name) DO UPDATE SET \
             page = excluded.page, wall = excluded.wall, pinned = excluded.pinned, view = excluded.view, \
             updated_at = excluded.updated_at",
        )
        .bind(v.subject)
        .bind(v.name)
        .bind(v.page)
        .bind(i64::from(v.wall))
        .bind(i64::from(v.pinned))
        .bind(v.view.to_string())
        .bind(v.updated_at)
        .execute(&mut *tx)
        .await;
        match written {
            Ok(_) => {}
            // Another subject's wall view of that name, committed meanwhile.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(PutError::WallNameTaken(v.name.to_owned()));
            }
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        Ok(!exists)
    }

    /// Deletes `subject`'s view `name`; `true` if there was one.
    pub async fn delete_view(&self, subject: &str, name: &str) -> Result<bool, sqlx::Error> {
        let done = query("DELETE FROM saved_views WHERE subject = $1 AND name = $2")
            .bind(subject)
            .bind(name)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
