package wpstores

import (
	"errors"
	"fmt"
	"time"

	_ "github.com/go-sql-driver/mysql" // Woodpecker's "mysql" driver (MySQL, MariaDB)
	_ "github.com/lib/pq"              // Woodpecker's "postgres" driver
	_ "github.com/mattn/go-sqlite3"    // the cgo SQLite driver Woodpecker registers as "sqlite3"
	"xorm.io/xorm"
	xlog "xorm.io/xorm/log"
)

// batchSize is Woodpecker's pgBatchSize: rows per INSERT statement.
const batchSize = 1000

// DBStore is Woodpecker's database log store.
type DBStore struct {
	engine *xorm.Engine
}

// OpenDBStore opens (creating) the SQLite file at path: OpenDB("sqlite3", path).
func OpenDBStore(path string) (*DBStore, error) {
	return OpenDB("sqlite3", path)
}

// OpenDB opens Woodpecker's database as its server does with its default settings, for
// WOODPECKER_DATABASE_DRIVER driver ("sqlite3", "postgres", "mysql") and
// WOODPECKER_DATABASE_DATASOURCE datasource (SQLite: the bare file path; PostgreSQL: a
// lib/pq URL or key=value string; MySQL: a go-sql-driver DSN): xorm logging off, 100 open /
// 2 idle connections, 3 s connection lifetime; then syncs the log_entries table as
// Woodpecker's migration does.
func OpenDB(driver, datasource string) (*DBStore, error) {
	path := datasource
	if driver != "sqlite3" {
		path = driver // never print a data source: it may hold a password
	}
	engine, err := xorm.NewEngine(driver, datasource)
	if err != nil {
		return nil, fmt.Errorf("open %s %s: %w", driver, path, err)
	}
	engine.SetLogger(xlog.NewSimpleLogger(nil))
	engine.SetLogLevel(xlog.LOG_OFF)
	engine.ShowSQL(false)
	engine.SetMaxOpenConns(100)
	engine.SetMaxIdleConns(2)
	engine.SetConnMaxLifetime(3 * time.Second)
	if err := engine.Ping(); err != nil {
		engine.Close()
		return nil, fmt.Errorf("ping %s %s: %w", driver, path, err)
	}
	if err := engine.Sync(new(LogEntry)); err != nil {
		engine.Close()
		return nil, fmt.Errorf("sync log_entries in %s: %w", path, err)
	}
	return &DBStore{engine: engine}, nil
}

// Engine is the xorm engine (for the benchmark's own queries, e.g. counting rows).
func (s *DBStore) Engine() *xorm.Engine {
	return s.engine
}

// Close closes the connection pool.
func (s *DBStore) Close() error {
	return s.engine.Close()
}

// LogFind reads the step's rows ordered by line.
func (s *DBStore) LogFind(stepID int64) ([]*LogEntry, error) {
	var entries []*LogEntry
	return entries, s.engine.Asc("line").Where("step_id = ?", stepID).Find(&entries)
}

// LogAppend inserts the entries in statements of at most 1000 rows; every failing chunk is
// reported, the others are kept, as in Woodpecker.
func (s *DBStore) LogAppend(_ int64, entries []*LogEntry) error {
	var errs error
	for i := 0; i < len(entries); i += batchSize {
		chunk := entries[i : i+min(batchSize, len(entries)-i)]
		if _, err := s.engine.Insert(chunk); err != nil {
			errs = errors.Join(errs, err)
		}
	}
	return errs
}

// LogDelete deletes the step's rows.
func (s *DBStore) LogDelete(stepID int64) error {
	_, err := s.engine.Where("step_id = ?", stepID).Delete(new(LogEntry))
	return err
}
