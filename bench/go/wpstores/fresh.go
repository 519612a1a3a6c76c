package wpstores

import (
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
)

// Database is a fresh, empty database of one driver, made for one benchmark target: a
// SQLite file, or a new database on a PostgreSQL / MariaDB server reached through a data
// source of a user allowed to create databases (scripts/db/start.sh exports them).
type Database struct {
	// Driver is WOODPECKER_DATABASE_DRIVER: "sqlite3", "postgres" or "mysql".
	Driver string
	// Datasource is WOODPECKER_DATABASE_DATASOURCE of the fresh database.
	Datasource string
	// Name is the database's name (the file path for SQLite).
	Name string
	drop func() error
}

// CreateDatabase makes a fresh database: for "sqlite3" the file dir/woodpecker.sqlite (admin
// is ignored); for "postgres" and "mysql" a database called name on the server admin (a
// data source in Woodpecker's format) points to, dropped first if it exists.
func CreateDatabase(driver, admin, dir, name string) (*Database, error) {
	switch driver {
	case "sqlite3":
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		path := filepath.Join(dir, "woodpecker.sqlite")
		return &Database{Driver: driver, Datasource: path, Name: path, drop: func() error { return os.Remove(path) }}, nil
	case "postgres":
		u, err := url.Parse(admin)
		if err != nil || u.Scheme == "" {
			return nil, fmt.Errorf("postgres admin data source: want a postgres:// URL")
		}
		ds := *u
		ds.Path = "/" + name
		return createOnServer(driver, admin, ds.String(), name,
			fmt.Sprintf(`DROP DATABASE IF EXISTS "%s" WITH (FORCE)`, name), fmt.Sprintf(`CREATE DATABASE "%s"`, name))
	case "mysql":
		cfg, err := mysql.ParseDSN(admin)
		if err != nil {
			return nil, fmt.Errorf("mysql admin data source: %w", err)
		}
		cfg.DBName = name
		return createOnServer(driver, admin, cfg.FormatDSN(), name,
			fmt.Sprintf("DROP DATABASE IF EXISTS `%s`", name), fmt.Sprintf("CREATE DATABASE `%s` CHARACTER SET utf8mb4", name))
	}
	return nil, fmt.Errorf("unknown database driver %q (want sqlite3, postgres or mysql)", driver)
}

func createOnServer(driver, admin, datasource, name, drop, create string) (*Database, error) {
	db, err := sql.Open(driver, admin)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	for _, stmt := range []string{drop, create} {
		if _, err := db.Exec(stmt); err != nil {
			return nil, fmt.Errorf("%s server: %s: %w", driver, strings.Fields(stmt)[0], err)
		}
	}
	return &Database{Driver: driver, Datasource: datasource, Name: name, drop: func() error {
		db, err := sql.Open(driver, admin)
		if err != nil {
			return err
		}
		defer db.Close()
		_, err = db.Exec(drop)
		return err
	}}, nil
}

// Drop removes the database (the SQLite file).
func (d *Database) Drop() error {
	return d.drop()
}

// Open opens a plain database/sql pool on it (for the benchmark's own queries).
func (d *Database) Open() (*sql.DB, error) {
	ds := d.Datasource
	if d.Driver == "sqlite3" {
		ds = "file:" + ds + "?_busy_timeout=5000"
	}
	db, err := sql.Open(d.Driver, ds)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(2)
	db.SetConnMaxLifetime(time.Minute)
	return db, db.Ping()
}

// ApplySchema runs the statements of a schema file (statements end with ";" at the end of
// a line; "--" lines are comments), e.g. Woodpecker's tables as xorm's Sync creates them
// (crates/woodpecker-db/tests/fixtures/schema-<driver>.sql).
func ApplySchema(db *sql.DB, file string) error {
	raw, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var stmt strings.Builder
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "--") {
			continue
		}
		stmt.WriteString(line)
		stmt.WriteByte('\n')
		if strings.HasSuffix(strings.TrimSpace(line), ";") {
			if _, err := db.Exec(stmt.String()); err != nil {
				return fmt.Errorf("%s: %w", filepath.Base(file), err)
			}
			stmt.Reset()
		}
	}
	if strings.TrimSpace(stmt.String()) != "" {
		return fmt.Errorf("%s: statement without a final ';'", filepath.Base(file))
	}
	return nil
}

// SchemaFile is the fixture holding Woodpecker's tables for the driver, under dir.
func SchemaFile(dir, driver string) string {
	name := map[string]string{"sqlite3": "sqlite", "postgres": "postgres", "mysql": "mysql"}[driver]
	return filepath.Join(dir, "schema-"+name+".sql")
}
