//! The statements the addon runs on Woodpecker's tables, per driver: placeholders (`?`,
//! `$1`), identifier quoting (`key` is reserved in MySQL) and casts, so that every column
//! decodes as `i64` whatever integer type the driver's schema gave it (`line` and `type`
//! are `INTEGER`, the rest `BIGINT`; xorm leaves them nullable, Go reads NULL as 0).

/// One driver's statements.
pub(crate) struct Statements {
    /// Fails unless `log_entries` exists.
    pub(crate) check_log_table: &'static str,
    /// Woodpecker's `LogFind`: a step's rows by line (then id, for duplicate rows of old
    /// databases). Binds: step id.
    pub(crate) log_find: &'static str,
    /// A page of a step's rows. Binds: step id, after line, limit.
    pub(crate) log_page: &'static str,
    /// Distinct step ids. Binds: after, limit.
    pub(crate) log_step_ids: &'static str,
    /// Deletes a batch of a step's rows. Binds: step id, limit.
    pub(crate) log_delete_batch: &'static str,
    /// A step's state and times. Binds: step id.
    pub(crate) step_status: &'static str,
    /// A `server_configs` value. Binds: key.
    pub(crate) server_config: &'static str,
}

pub(crate) const SQLITE: Statements = Statements {
    check_log_table: "SELECT 1 FROM log_entries LIMIT 1",
    log_find: "SELECT id, step_id, COALESCE(time, 0), COALESCE(line, 0), CAST(data AS BLOB), \
               COALESCE(type, 0) FROM log_entries WHERE step_id = ? ORDER BY line, id",
    log_page: "SELECT id, step_id, COALESCE(time, 0), COALESCE(line, 0), CAST(data AS BLOB), \
               COALESCE(type, 0) FROM log_entries WHERE step_id = ? AND line > ? \
               ORDER BY line, id LIMIT ?",
    log_step_ids: "SELECT DISTINCT step_id FROM log_entries WHERE step_id > ? \
                   ORDER BY step_id LIMIT ?",
    log_delete_batch: "DELETE FROM log_entries WHERE id IN \
                       (SELECT id FROM log_entries WHERE step_id = ? LIMIT ?)",
    step_status: "SELECT COALESCE(state, ''), COALESCE(started, 0), COALESCE(finished, 0) \
                  FROM steps WHERE id = ?",
    server_config: "SELECT value FROM server_configs WHERE \"key\" = ?",
};

pub(crate) const POSTGRES: Statements = Statements {
    check_log_table: "SELECT 1 FROM log_entries LIMIT 1",
    log_find: "SELECT CAST(id AS BIGINT), CAST(step_id AS BIGINT), \
               CAST(COALESCE(time, 0) AS BIGINT), CAST(COALESCE(line, 0) AS BIGINT), data, \
               CAST(COALESCE(type, 0) AS BIGINT) FROM log_entries WHERE step_id = $1 \
               ORDER BY line, id",
    log_page: "SELECT CAST(id AS BIGINT), CAST(step_id AS BIGINT), \
               CAST(COALESCE(time, 0) AS BIGINT), CAST(COALESCE(line, 0) AS BIGINT), data, \
               CAST(COALESCE(type, 0) AS BIGINT) FROM log_entries \
               WHERE step_id = $1 AND line > $2 ORDER BY line, id LIMIT $3",
    // `step_id` is BIGINT in xorm's schema: no cast, so the (step_id, line) index serves
    // the DISTINCT and the ORDER BY.
    log_step_ids: "SELECT DISTINCT step_id FROM log_entries \
                   WHERE step_id > $1 ORDER BY step_id LIMIT $2",
    log_delete_batch: "DELETE FROM log_entries WHERE id IN \
                       (SELECT id FROM log_entries WHERE step_id = $1 LIMIT $2)",
    step_status: "SELECT CAST(COALESCE(state, '') AS TEXT), \
                  CAST(COALESCE(started, 0) AS BIGINT), CAST(COALESCE(finished, 0) AS BIGINT) \
                  FROM steps WHERE id = $1",
    server_config: "SELECT CAST(value AS TEXT) FROM server_configs WHERE \"key\" = $1",
};

pub(crate) const MYSQL: Statements = Statements {
    check_log_table: "SELECT 1 FROM log_entries LIMIT 1",
    log_find: "SELECT CAST(id AS SIGNED), CAST(step_id AS SIGNED), \
               CAST(COALESCE(time, 0) AS SIGNED), CAST(COALESCE(line, 0) AS SIGNED), data, \
               CAST(COALESCE(type, 0) AS SIGNED) FROM log_entries WHERE step_id = ? \
               ORDER BY line, id",
    log_page: "SELECT CAST(id AS SIGNED), CAST(step_id AS SIGNED), \
               CAST(COALESCE(time, 0) AS SIGNED), CAST(COALESCE(line, 0) AS SIGNED), data, \
               CAST(COALESCE(type, 0) AS SIGNED) FROM log_entries \
               WHERE step_id = ? AND line > ? ORDER BY line, id LIMIT ?",
    log_step_ids: "SELECT DISTINCT step_id FROM log_entries \
                   WHERE step_id > ? ORDER BY step_id LIMIT ?",
    // MySQL allows no LIMIT in an IN subquery, but a LIMIT on DELETE itself.
    log_delete_batch: "DELETE FROM log_entries WHERE step_id = ? LIMIT ?",
    step_status: "SELECT CAST(COALESCE(state, '') AS CHAR), \
                  CAST(COALESCE(started, 0) AS SIGNED), CAST(COALESCE(finished, 0) AS SIGNED) \
                  FROM steps WHERE id = ?",
    server_config: "SELECT CAST(value AS CHAR) FROM server_configs WHERE `key` = ?",
};
