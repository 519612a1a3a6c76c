//! Woodpecker's `log_entries` table as a [`LegacyLogs`] source.

use std::time::{SystemTime, UNIX_EPOCH};

use engine::legacy::{LegacyError, LegacyLogs};
use logservice::{LogEntry, StepId};

use crate::db::Database;
use crate::error::DbError;

impl From<DbError> for LegacyError {
    fn from(error: DbError) -> Self {
        if error.is_unavailable() {
            LegacyError::Unavailable {
                what: error.what.clone(),
                cause: error.into(),
            }
        } else {
            LegacyError::Failed {
                what: error.what.clone(),
                cause: error.into(),
            }
        }
    }
}

#[async_trait::async_trait]
impl LegacyLogs for Database {
    fn describe(&self) -> String {
        format!(
            "Woodpecker's {} database ({})",
            self.driver(),
            self.source().masked
        )
    }

    async fn find(&self, id: StepId) -> Result<Vec<LogEntry>, LegacyError> {
        Ok(self.log_find(id.get()).await?)
    }

    async fn delete(&self, id: StepId) -> Result<(), LegacyError> {
        self.log_delete(id.get()).await?;
        Ok(())
    }

    async fn step_ids(&self, after: i64, limit: usize) -> Result<Vec<i64>, LegacyError> {
        Ok(self.log_step_ids(after.max(0), limit).await?)
    }

    async fn entries(
        &self,
        id: StepId,
        after_line: Option<i64>,
        limit: usize,
    ) -> Result<Vec<LogEntry>, LegacyError> {
        Ok(self.log_page(id.get(), after_line, limit).await?)
    }

    async fn running(&self, id: StepId) -> Result<bool, LegacyError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        Ok(self
            .step_status(id.get())
            .await?
            .is_some_and(|status| status.may_get_lines(now)))
    }
}
