//! Fresh Woodpecker databases for tests (feature `test-support`).
//!
//! [`TestDb::create`] makes a new, empty database with Woodpecker's tables
//! (`tests/fixtures/schema-<driver>.sql`): a SQLite file in a temporary directory, or a new
//! database on the PostgreSQL / MariaDB servers `scripts/db/start.sh` starts, reached through
//! the data sources it exports ([`POSTGRES_ENV`], [`MYSQL_ENV`]). Without them the server
//! tests are skipped: `create` prints why and returns `None`.
//!
//! Rows are written as Woodpecker's database store writes them ([`TestDb::append`]: one
//! multi-row `INSERT` per batch, refused whole by the unique index on a duplicate line), and
//! [`TestDb::woodpecker_log_find`] runs Woodpecker's own `LogFind` query, decoded column by
//! column, as the reference the addon's reads are compared with.
//!
//! ```text
//! for db in TestDb::every().await {
//!     db.append(7, &[entry(7, 0, b"hello")]).await.unwrap();
//!     let env = db.env(); // WOODPECKER_DATABASE_DRIVER / _DATASOURCE for the addon
//! }
//! ```

use std::collections::HashMap;

use logservice::LogEntry;
use sqlx::Row;

use crate::db::{Database, Pool};
use crate::dsn::{DataSource, Driver};
use crate::settings::{DATABASE_DATASOURCE, DATABASE_DRIVER};

/// The PostgreSQL data source (lib/pq URL) of a user allowed to create databases.
pub const POSTGRES_ENV: &str = "WPDB_TEST_POSTGRES_DATASOURCE";
/// The MariaDB data source (go-sql-driver form) of a user allowed to create databases.
pub const MYSQL_ENV: &str = "WPDB_TEST_MYSQL_DATASOURCE";

/// Woodpecker's tables on SQLite.
pub const SCHEMA_SQLITE: &str = include_str!("../tests/fixtures/schema-sqlite.sql");
/// Woodpecker's tables on PostgreSQL.
pub const SCHEMA_POSTGRES: &str = include_str!("../tests/fixtures/schema-postgres.sql");
/// Woodpecker's tables on MySQL and MariaDB.
pub const SCHEMA_MYSQL: &str = include_str!("../tests/fixtures/schema-mysql.sql");

/// Woodpecker's store inserts at most this many entries per statement (`pgBatchSize`).
const INSERT_BATCH: usize = 1000;

/// A fresh Woodpecker database, left behind when dropped (the test servers' state
/// directory is removed by `scripts/db/stop.sh`; SQLite files with their temp dir).
pub struct TestDb {
    /// Its driver.
    pub driver: Driver,
    /// Its data source in Woodpecker's format (what `WOODPECKER_DATABASE_DATASOURCE` holds).
    pub datasource: String,
    db: Database,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A fresh database with Woodpecker's tables, or `None` (with the reason printed) when
    /// the driver's test server is not configured.
    pub async fn create(driver: Driver) -> Option<Self> {
        let db = Self::create_empty(driver).await?;
        db.execute(match driver {
            Driver::Sqlite => SCHEMA_SQLITE,
            Driver::Postgres => SCHEMA_POSTGRES,
            Driver::MySql => SCHEMA_MYSQL,
        })
        .await;
        Some(db)
    }

    /// A fresh database without any table (for the "missing table" cases).
    pub async fn create_empty(driver: Driver) -> Option<Self> {
        let (datasource, dir) = match driver {
            Driver::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let path = dir.path().join("woodpecker.sqlite");
                std::fs::File::create(&path).expect("create the SQLite file");
                (path.to_string_lossy().into_owned(), Some(dir))
            }
            Driver::Postgres | Driver::MySql => {
                let env = if driver == Driver::Postgres {
                    POSTGRES_ENV
                } else {
                    MYSQL_ENV
                };
                let Ok(admin) = std::env::var(env) else {
                    eprintln!(
                        "skipping the {driver} case: {env} is not set \
                         (run `eval \"$(scripts/db/start.sh)\"` first)"
                    );
                    return None;
                };
                let name = format!("wpdb_{}_{}", std::process::id(), fastrand::u32(..));
                let admin_db = Self::open(driver, &admin);
                admin_db.execute(&format!("CREATE DATABASE {name}")).await;
                admin_db.db.close().await;
                (with_database(driver, &admin, &name), None)
            }
        };
        let mut db = Self::open(driver, &datasource);
        db._dir = dir;
        Some(db)
    }

    /// A fresh SQLite database with Woodpecker's tables (always available).
    pub async fn sqlite() -> Self {
        Self::create(Driver::Sqlite)
            .await
            .expect("SQLite needs no server")
    }

    /// SQLite, and PostgreSQL and MariaDB when their test servers are configured.
    pub async fn every() -> Vec<Self> {
        let mut all = Vec::new();
        for driver in [Driver::Sqlite, Driver::Postgres, Driver::MySql] {
            all.extend(Self::create(driver).await);
        }
        all
    }

    fn open(driver: Driver, datasource: &str) -> Self {
        let source = DataSource::parse(driver, DATABASE_DATASOURCE.name, datasource)
            .unwrap_or_else(|e| panic!("test data source: {e}"));
        Self {
            driver,
            datasource: datasource.to_owned(),
            db: Database::connect_lazy(source),
            _dir: None,
        }
    }

    /// The addon's handle on it.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Its data source, parsed.
    pub fn data_source(&self) -> DataSource {
        self.db.source().clone()
    }

    /// The variables a Woodpecker server using it has (and the addon inherits).
    pub fn env(&self) -> HashMap<String, String> {
        HashMap::from([
            (
                DATABASE_DRIVER.name.to_owned(),
                self.driver.name().to_owned(),
            ),
            (DATABASE_DATASOURCE.name.to_owned(), self.datasource.clone()),
        ])
    }

    /// Runs SQL (several statements allowed); panics on error.
    pub async fn execute(&self, sql: &str) {
        let done = match self.db.pool() {
            Pool::Sqlite(p) => sqlx::raw_sql(sql).execute(p).await.map(drop),
            Pool::Postgres(p) => sqlx::raw_sql(sql).execute(p).await.map(drop),
            Pool::MySql(p) => sqlx::raw_sql(sql).execute(p).await.map(drop),
        };
        done.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Stores `entries` for `step_id` as Woodpecker's database store does: `created` set
    /// to now, one multi-row `INSERT` per 1000 entries; a batch holding a line the step
    /// already has is refused whole by the unique index (the error is returned).
    pub async fn append(&self, step_id: i64, entries: &[LogEntry]) -> Result<(), sqlx::Error> {
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        for batch in entries.chunks(INSERT_BATCH) {
            let sql = insert_sql(
                self.driver,
                "log_entries",
                &["step_id", "time", "line", "data", "created", "type"],
                batch.len(),
            );
            macro_rules! run {
                ($pool:expr) => {{
                    let mut query = sqlx::query(&sql);
                    for e in batch {
                        query = query
                            .bind(step_id)
                            .bind(e.time)
                            .bind(e.line)
                            .bind(e.data.clone())
                            .bind(created)
                            .bind(e.entry_type);
                    }
                    query.execute($pool).await.map(drop)
                }};
            }
            match self.db.pool() {
                Pool::Sqlite(p) => run!(p),
                Pool::Postgres(p) => run!(p),
                Pool::MySql(p) => run!(p),
            }?;
        }
        Ok(())
    }

    /// A row in `steps`.
    pub async fn add_step(&self, id: i64, pipeline_id: i64, pid: i64, state: &str, finished: i64) {
        let sql = insert_sql(
            self.driver,
            "steps",
            &[
                "id",
                "uuid",
                "pipeline_id",
                "pid",
                "ppid",
                "name",
                "state",
                "started",
                "finished",
                "type",
            ],
            1,
        );
        macro_rules! run {
            ($pool:expr) => {
                sqlx::query(&sql)
                    .bind(id)
                    .bind(format!("uuid-{id}"))
                    .bind(pipeline_id)
                    .bind(pid)
                    .bind(1_i64)
                    .bind(format!("step-{pid}"))
                    .bind(state)
                    .bind(i64::from(finished > 0) * (finished - 10).max(1))
                    .bind(finished)
                    .bind("commands")
                    .execute($pool)
                    .await
                    .map(drop)
            };
        }
        match self.db.pool() {
            Pool::Sqlite(p) => run!(p),
            Pool::Postgres(p) => run!(p),
            Pool::MySql(p) => run!(p),
        }
        .unwrap_or_else(|e| panic!("adding step {id}: {e}"));
    }

    /// A row in `pipelines`.
    pub async fn add_pipeline(
        &self,
        id: i64,
        repo_id: i64,
        number: i64,
        status: &str,
        created: i64,
    ) {
        let sql = insert_sql(
            self.driver,
            "pipelines",
            &["id", "repo_id", "number", "status", "created", "updated"],
            1,
        );
        macro_rules! run {
            ($pool:expr) => {
                sqlx::query(&sql)
                    .bind(id)
                    .bind(repo_id)
                    .bind(number)
                    .bind(status)
                    .bind(created)
                    .bind(created)
                    .execute($pool)
                    .await
                    .map(drop)
            };
        }
        match self.db.pool() {
            Pool::Sqlite(p) => run!(p),
            Pool::Postgres(p) => run!(p),
            Pool::MySql(p) => run!(p),
        }
        .unwrap_or_else(|e| panic!("adding pipeline {id}: {e}"));
    }

    /// A row in `repos`.
    pub async fn add_repo(&self, id: i64, full_name: &str) {
        let (owner, name) = full_name.split_once('/').unwrap_or(("", full_name));
        let sql = insert_sql(
            self.driver,
            "repos",
            &[
                "id",
                "forge_id",
                "forge_remote_id",
                "owner",
                "name",
                "full_name",
            ],
            1,
        );
        macro_rules! run {
            ($pool:expr) => {
                sqlx::query(&sql)
                    .bind(id)
                    .bind(1_i64)
                    .bind(id.to_string())
                    .bind(owner)
                    .bind(name)
                    .bind(full_name)
                    .execute($pool)
                    .await
                    .map(drop)
            };
        }
        match self.db.pool() {
            Pool::Sqlite(p) => run!(p),
            Pool::Postgres(p) => run!(p),
            Pool::MySql(p) => run!(p),
        }
        .unwrap_or_else(|e| panic!("adding repo {id}: {e}"));
    }

    /// Sets a `server_configs` value, as Woodpecker's `ServerConfigSet` does.
    pub async fn set_server_config(&self, key: &str, value: &str) {
        let quoted = if self.driver == Driver::MySql {
            "`key`"
        } else {
            "\"key\""
        };
        let sql = insert_sql(self.driver, "server_configs", &[quoted, "value"], 1);
        macro_rules! run {
            ($pool:expr) => {
                sqlx::query(&sql)
                    .bind(key)
                    .bind(value)
                    .execute($pool)
                    .await
                    .map(drop)
            };
        }
        match self.db.pool() {
            Pool::Sqlite(p) => run!(p),
            Pool::Postgres(p) => run!(p),
            Pool::MySql(p) => run!(p),
        }
        .unwrap_or_else(|e| panic!("setting {key}: {e}"));
    }

    /// The first column of the first row `sql` answers, as a 64-bit integer (sizes, counts);
    /// panics on error.
    pub async fn query_i64(&self, sql: &str) -> i64 {
        match self.db.pool() {
            Pool::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await,
            Pool::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await,
            Pool::MySql(p) => sqlx::query_scalar(sql).fetch_one(p).await,
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Rows of a step in `log_entries`.
    pub async fn count_log_rows(&self, step_id: i64) -> i64 {
        let sql = match self.driver {
            Driver::Postgres => "SELECT COUNT(*) FROM log_entries WHERE step_id = $1",
            _ => "SELECT COUNT(*) FROM log_entries WHERE step_id = ?",
        };
        match self.db.pool() {
            Pool::Sqlite(p) => sqlx::query_scalar(sql).bind(step_id).fetch_one(p).await,
            Pool::Postgres(p) => sqlx::query_scalar(sql).bind(step_id).fetch_one(p).await,
            Pool::MySql(p) => sqlx::query_scalar(sql).bind(step_id).fetch_one(p).await,
        }
        .unwrap_or_else(|e| panic!("counting rows: {e}"))
    }

    /// Woodpecker's database store's `LogFind` for a step, as the JSON array the server
    /// answers: xorm's query (`WHERE step_id = ? ORDER BY line ASC`, every column), each
    /// column decoded as its schema type (`line` and `type` are 32-bit on PostgreSQL and
    /// MySQL), NULLs read as Go reads them (0, nil).
    pub async fn woodpecker_log_find(&self, step_id: i64) -> Vec<u8> {
        const COLUMNS: &str = "id, step_id, time, line, data, created, type";
        let mut entries = Vec::new();
        macro_rules! run {
            ($pool:expr, $placeholder:expr, $int:ty) => {{
                let sql = format!(
                    "SELECT {COLUMNS} FROM log_entries WHERE (step_id={}) ORDER BY line ASC",
                    $placeholder
                );
                let rows = sqlx::query(&sql)
                    .bind(step_id)
                    .fetch_all($pool)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                for row in rows {
                    let int = |name: &str| -> i64 {
                        row.try_get::<Option<$int>, _>(name)
                            .unwrap_or_else(|e| panic!("{name}: {e}"))
                            .map_or(0, i64::from)
                    };
                    entries.push(LogEntry {
                        id: row.try_get::<i64, _>("id").unwrap(),
                        step_id: row
                            .try_get::<Option<i64>, _>("step_id")
                            .unwrap()
                            .unwrap_or(0),
                        time: row.try_get::<Option<i64>, _>("time").unwrap().unwrap_or(0),
                        line: int("line"),
                        data: row.try_get::<Option<Vec<u8>>, _>("data").unwrap(),
                        entry_type: int("type"),
                    });
                }
            }};
        }
        match self.db.pool() {
            Pool::Sqlite(p) => run!(p, "?", i64),
            Pool::Postgres(p) => run!(p, "$1", i32),
            Pool::MySql(p) => run!(p, "?", i32),
        }
        let mut out = b"[".to_vec();
        for (i, entry) in entries.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            logservice::push_entry(entry, &mut out);
        }
        out.push(b']');
        out
    }
}

/// `INSERT INTO table (columns) VALUES (…), …` with the driver's placeholders.
fn insert_sql(driver: Driver, table: &str, columns: &[&str], rows: usize) -> String {
    let mut n = 0;
    let values: Vec<String> = (0..rows)
        .map(|_| {
            let row: Vec<String> = columns
                .iter()
                .map(|_| {
                    n += 1;
                    if driver == Driver::Postgres {
                        format!("${n}")
                    } else {
                        "?".to_owned()
                    }
                })
                .collect();
            format!("({})", row.join(","))
        })
        .collect();
    format!(
        "INSERT INTO {table} ({}) VALUES {}",
        columns.join(","),
        values.join(",")
    )
}

/// The admin data source with another database name.
fn with_database(driver: Driver, datasource: &str, name: &str) -> String {
    match driver {
        Driver::Postgres => {
            let mut url =
                url::Url::parse(datasource).expect("the PostgreSQL test data source is a URL");
            url.set_path(name);
            url.to_string()
        }
        _ => {
            let slash = datasource
                .rfind('/')
                .expect("a go-sql-driver data source has a /");
            let params = datasource[slash..]
                .find('?')
                .map_or("", |q| &datasource[slash + q..]);
            format!("{}/{name}{params}", &datasource[..slash])
        }
    }
}
