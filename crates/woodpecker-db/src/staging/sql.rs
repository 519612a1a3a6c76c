//! The statements of database staging, per driver (see `crate::sql` for the reads they
//! share with the legacy source: a page of a step's rows by line).

use crate::dsn::Driver;

/// The columns an append writes, in bind order (`id` comes from the database).
pub(super) const INSERT_COLUMNS: &str = "(step_id, time, line, data, created, type)";
/// Binds per inserted row.
pub(super) const BINDS_PER_ROW: usize = 6;

/// One driver's statements.
pub(super) struct StagingStatements {
    /// The start of an insert that skips rows whose `(step_id, line)` exists.
    pub(super) insert_ignore: &'static str,
    /// What follows the values of that insert.
    pub(super) insert_ignore_tail: &'static str,
    /// Bound parameters one statement may hold: SQLite's `SQLITE_MAX_VARIABLE_NUMBER`
    /// (32766 since 3.32), the 16-bit count of PostgreSQL's and MySQL's wire protocols.
    pub(super) max_binds: usize,
    /// Whether placeholders are numbered (`$1`) rather than `?`.
    pub(super) numbered: bool,
    /// The lines a step already has in a range (for schemas without the unique index).
    /// Binds: step id, first line, last line.
    pub(super) existing_lines: &'static str,
    /// Steps with rows: id, rows, largest id, newest `created`. Binds: after, limit.
    pub(super) staged_steps: &'static str,
    /// Deletes a step's rows in a line range. Binds: step id, first line, last line.
    pub(super) delete_lines: &'static str,
    /// (index name, column name) of the unique indexes on `log_entries` other than the
    /// primary key.
    pub(super) unique_index_columns: &'static str,
}

impl StagingStatements {
    pub(super) fn of(driver: Driver) -> &'static Self {
        match driver {
            Driver::Sqlite => &SQLITE,
            Driver::Postgres => &POSTGRES,
            Driver::MySql => &MYSQL,
        }
    }

    /// `INSERT … VALUES (…), …` for `rows` rows; `ignore`: skip rows whose line exists.
    pub(super) fn insert(&self, rows: usize, ignore: bool) -> String {
        let mut sql = String::with_capacity(80 + rows * BINDS_PER_ROW * 4);
        sql.push_str(if ignore {
            self.insert_ignore
        } else {
            "INSERT INTO log_entries "
        });
        sql.push_str(INSERT_COLUMNS);
        sql.push_str(" VALUES ");
        let mut n = 0;
        for row in 0..rows {
            if row > 0 {
                sql.push(',');
            }
            sql.push('(');
            for column in 0..BINDS_PER_ROW {
                if column > 0 {
                    sql.push(',');
                }
                n += 1;
                if self.numbered {
                    sql.push('$');
                    sql.push_str(&n.to_string());
                } else {
                    sql.push('?');
                }
            }
            sql.push(')');
        }
        if ignore {
            sql.push_str(self.insert_ignore_tail);
        }
        sql
    }
}

const SQLITE: StagingStatements = StagingStatements {
    insert_ignore: "INSERT OR IGNORE INTO log_entries ",
    insert_ignore_tail: "",
    max_binds: 32_766,
    numbered: false,
    existing_lines: "SELECT DISTINCT line FROM log_entries \
                     WHERE step_id = ? AND line BETWEEN ? AND ?",
    staged_steps: "SELECT step_id, COUNT(*), MAX(id), COALESCE(MAX(created), 0) \
                   FROM log_entries WHERE step_id > ? GROUP BY step_id ORDER BY step_id LIMIT ?",
    delete_lines: "DELETE FROM log_entries WHERE step_id = ? AND line BETWEEN ? AND ?",
    unique_index_columns: "SELECT il.name, ii.name FROM pragma_index_list('log_entries') AS il, \
                           pragma_index_info(il.name) AS ii WHERE il.\"unique\" = 1",
};

const POSTGRES: StagingStatements = StagingStatements {
    insert_ignore: "INSERT INTO log_entries ",
    insert_ignore_tail: " ON CONFLICT DO NOTHING",
    max_binds: 65_535,
    numbered: true,
    existing_lines: "SELECT DISTINCT CAST(line AS BIGINT) FROM log_entries \
                     WHERE step_id = $1 AND line BETWEEN $2 AND $3",
    staged_steps: "SELECT step_id, CAST(COUNT(*) AS BIGINT), CAST(MAX(id) AS BIGINT), \
                   CAST(COALESCE(MAX(created), 0) AS BIGINT) FROM log_entries \
                   WHERE step_id > $1 GROUP BY step_id ORDER BY step_id LIMIT $2",
    delete_lines: "DELETE FROM log_entries WHERE step_id = $1 AND line BETWEEN $2 AND $3",
    unique_index_columns: "SELECT CAST(ic.relname AS TEXT), CAST(a.attname AS TEXT) \
                           FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid \
                           JOIN pg_attribute a ON a.attrelid = i.indrelid \
                           AND a.attnum = ANY(i.indkey) \
                           WHERE i.indrelid = to_regclass('log_entries') \
                           AND i.indisunique AND NOT i.indisprimary",
};

const MYSQL: StagingStatements = StagingStatements {
    insert_ignore: "INSERT IGNORE INTO log_entries ",
    insert_ignore_tail: "",
    max_binds: 65_535,
    numbered: false,
    existing_lines: "SELECT DISTINCT CAST(line AS SIGNED) FROM log_entries \
                     WHERE step_id = ? AND line BETWEEN ? AND ?",
    staged_steps: "SELECT CAST(step_id AS SIGNED), CAST(COUNT(*) AS SIGNED), \
                   CAST(MAX(id) AS SIGNED), CAST(COALESCE(MAX(created), 0) AS SIGNED) \
                   FROM log_entries WHERE step_id > ? GROUP BY step_id ORDER BY step_id LIMIT ?",
    delete_lines: "DELETE FROM log_entries WHERE step_id = ? AND line BETWEEN ? AND ?",
    unique_index_columns: "SELECT CAST(index_name AS CHAR), CAST(column_name AS CHAR) \
                           FROM information_schema.statistics \
                           WHERE table_schema = DATABASE() AND table_name = 'log_entries' \
                           AND non_unique = 0 AND index_name <> 'PRIMARY'",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_number_every_placeholder() {
        let pg = StagingStatements::of(Driver::Postgres).insert(2, true);
        assert!(
            pg.ends_with("($7,$8,$9,$10,$11,$12) ON CONFLICT DO NOTHING"),
            "{pg}"
        );
        let my = StagingStatements::of(Driver::MySql).insert(1, true);
        assert_eq!(
            my,
            "INSERT IGNORE INTO log_entries (step_id, time, line, data, created, type) \
             VALUES (?,?,?,?,?,?)"
        );
        let plain = StagingStatements::of(Driver::Sqlite).insert(1, false);
        assert!(plain.starts_with("INSERT INTO log_entries ("), "{plain}");
    }
}
