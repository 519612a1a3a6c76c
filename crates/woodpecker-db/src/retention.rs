//! The queries of `gc`: which steps of a batch still exist, with what retention decides by
//! (their pipeline's repo, number, creation time and status, and how many newer pipelines
//! its repo has).
//!
//! One statement per batch of at most 1000 ids (a listing page of the archive). The ids are
//! written into the statement as numbers: they are `i64`s, so nothing but digits and a sign
//! can reach the SQL, and one text serves all three drivers' placeholder styles.

use crate::db::{Database, Pool};
use crate::dsn::Driver;
use crate::error::DbError;

/// A step of a batch that exists in `steps`, and its pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepFacts {
    /// `steps.id`.
    pub step_id: i64,
    /// `steps.state` (`pending`, `running`, `success`, …).
    pub step_state: String,
    /// The pipeline, when its row exists.
    pub pipeline: Option<PipelineFacts>,
}

/// What retention looks at in a pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineFacts {
    /// `pipelines.id`.
    pub id: i64,
    /// `pipelines.repo_id`.
    pub repo_id: i64,
    /// `pipelines.number` within its repo.
    pub number: i64,
    /// `pipelines.status`.
    pub status: String,
    /// `pipelines.created`, unix seconds.
    pub created: i64,
    /// `pipelines.finished`, unix seconds (0: not finished).
    pub finished: i64,
    /// How many pipelines of the same repo have a higher number (0 for the newest).
    pub newer: i64,
}

type FactsRow = (
    i64,
    String,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

/// The statement for `ids`, with the driver's casts to 64-bit integers and text.
fn facts_sql(driver: Driver, ids: &[i64]) -> String {
    let (int, text) = match driver {
        Driver::Sqlite => ("INTEGER", "TEXT"),
        Driver::Postgres => ("BIGINT", "TEXT"),
        Driver::MySql => ("SIGNED", "CHAR"),
    };
    let list: Vec<String> = ids.iter().map(i64::to_string).collect();
    format!(
        "SELECT CAST(s.id AS {int}), CAST(COALESCE(s.state, '') AS {text}), \
         CAST(p.id AS {int}), CAST(p.repo_id AS {int}), CAST(p.number AS {int}), \
         CAST(p.status AS {text}), CAST(p.created AS {int}), CAST(p.finished AS {int}), \
         CAST((SELECT COUNT(*) FROM pipelines newer \
               WHERE newer.repo_id = p.repo_id AND newer.number > p.number) AS {int}) \
         FROM steps s LEFT JOIN pipelines p ON p.id = s.pipeline_id \
         WHERE s.id IN ({})",
        list.join(",")
    )
}

impl Database {
    /// Of `ids`, the steps that still exist, with their pipelines. An id missing from the
    /// answer is a step Woodpecker deleted (with its pipeline or repo).
    pub async fn step_facts(&self, ids: &[i64]) -> Result<Vec<StepFacts>, DbError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = facts_sql(self.driver(), ids);
        let rows: Vec<FactsRow> = match self.pool() {
            Pool::Sqlite(pool) => sqlx::query_as(&sql).fetch_all(pool).await,
            Pool::Postgres(pool) => sqlx::query_as(&sql).fetch_all(pool).await,
            Pool::MySql(pool) => sqlx::query_as(&sql).fetch_all(pool).await,
        }
        .map_err(|e| self.error("reading steps and pipelines", e))?;
        Ok(rows
            .into_iter()
            .map(
                |(step_id, step_state, id, repo_id, number, status, created, finished, newer)| {
                    StepFacts {
                        step_id,
                        step_state,
                        pipeline: id.map(|id| PipelineFacts {
                            id,
                            repo_id: repo_id.unwrap_or(0),
                            number: number.unwrap_or(0),
                            status: status.unwrap_or_default(),
                            created: created.unwrap_or(0),
                            finished: finished.unwrap_or(0),
                            newer: newer.unwrap_or(0),
                        }),
                    }
                },
            )
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_written_as_numbers_only() {
        let sql = facts_sql(Driver::MySql, &[1, 22, 333]);
        assert!(sql.contains("AS SIGNED"), "{sql}");
        assert!(sql.ends_with("WHERE s.id IN (1,22,333)"), "{sql}");
    }
}
