package wpstores

import (
	"errors"
	"fmt"
	"time"

	_ "github.com/mattn/go-sqlite3" // the cgo SQLite driver Woodpecker registers as "sqlite3"
	"xorm.io/xorm"
	xlog "xorm.io/xorm/log"
)

// batchSize is Woodpecker's pgBatchSize: rows per INSERT statement.
const batchSize = 1000

// DBStore is Woodpecker's database log store on SQLite.
type DBStore struct {
	engine *xorm.Engine
}

// OpenDBStore opens (creating) the SQLite file at path as Woodpecker's server does with its
// default settings: DSN = the bare path, xorm logging off, 100 open / 2 idle connections,
// 3 s connection lifetime; then syncs the log_entries table as Woodpecker's migration does.
func OpenDBStore(path string) (*DBStore, error) {
	engine, err := xorm.NewEngine("sqlite3", path)
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	engine.SetLogger(xlog.NewSimpleLogger(nil))
	engine.SetLogLevel(xlog.LOG_OFF)
	engine.ShowSQL(false)
	engine.SetMaxOpenConns(100)
	engine.SetMaxIdleConns(2)
	engine.SetConnMaxLifetime(3 * time.Second)
	if err := engine.Ping(); err != nil {
		engine.Close()
		return nil, fmt.Errorf("ping sqlite %s: %w", path, err)
	}
	if err := engine.Sync(new(LogEntry)); err != nil {
		engine.Close()
		return nil, fmt.Errorf("sync log_entries in %s: %w", path, err)
	}
	return &DBStore{engine: engine}, nil
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
