package wpstores

// LogEntryType is Woodpecker's model.LogEntryType.
type LogEntryType int

// LogEntry is Woodpecker's model.LogEntry with the xorm tags of Woodpecker v3: they decide
// the SQLite schema (a unique index on (step_id, line) and an index on step_id) and so the
// cost of every insert. Created is filled by xorm on insert and never reaches JSON.
type LogEntry struct {
	ID      int64        `json:"id"       xorm:"pk autoincr 'id'"`
	StepID  int64        `json:"step_id"  xorm:"UNIQUE(s) INDEX 'step_id'"`
	Time    int64        `json:"time"     xorm:"'time'"`
	Line    int          `json:"line"     xorm:"UNIQUE(s) 'line'"`
	Data    []byte       `json:"data"     xorm:"LONGBLOB"`
	Created int64        `json:"-"        xorm:"created"`
	Type    LogEntryType `json:"type"     xorm:"'type'"`
}

// TableName is the table Woodpecker keeps log lines in.
func (LogEntry) TableName() string {
	return "log_entries"
}

// Store is the part of Woodpecker's log.Service the built-in stores implement for a step
// identified by its id (the stores use nothing else of model.Step).
type Store interface {
	LogFind(stepID int64) ([]*LogEntry, error)
	LogAppend(stepID int64, entries []*LogEntry) error
	LogDelete(stepID int64) error
}
