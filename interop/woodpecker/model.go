package woodpecker

// LogEntryType is Woodpecker's model.LogEntryType.
type LogEntryType int

// The five entry types Woodpecker agents send.
const (
	LogEntryStdout LogEntryType = iota
	LogEntryStderr
	LogEntryExitCode
	LogEntryMetadata
	LogEntryProgress
)

// LogEntry is Woodpecker's model.LogEntry as it travels over JSON. Data is a []byte, so
// encoding/json writes it as base64 and a nil slice as null: an addon has to keep null and
// "" apart to be Woodpecker-exact.
type LogEntry struct {
	ID     int64        `json:"id"`
	StepID int64        `json:"step_id"`
	Time   int64        `json:"time"`
	Line   int          `json:"line"`
	Data   []byte       `json:"data"`
	Type   LogEntryType `json:"type"`
}

// StatusValue is Woodpecker's model.StatusValue (pending, running, success, ...).
type StatusValue string

// StepType is Woodpecker's model.StepType (clone, service, plugin, commands, cache).
type StepType string

// Step is the JSON face of Woodpecker v3's model.Step: the fields a log addon receives.
// Woodpecker's Failure field is tagged json:"-" and never reaches the addon, so it is absent.
type Step struct {
	ID         int64       `json:"id"`
	UUID       string      `json:"uuid"`
	PipelineID int64       `json:"pipeline_id"`
	PID        int         `json:"pid"`
	PPID       int         `json:"ppid"`
	Name       string      `json:"name"`
	State      StatusValue `json:"state"`
	Error      string      `json:"error,omitempty"`
	ExitCode   int         `json:"exit_code"`
	Started    int64       `json:"started,omitempty"`
	Finished   int64       `json:"finished,omitempty"`
	Type       StepType    `json:"type,omitempty"`
}

// Service is Woodpecker v3's server/services/log.Service: what the server calls on any log
// store, the addon included.
type Service interface {
	LogFind(step *Step) ([]*LogEntry, error)
	LogAppend(step *Step, logEntries []*LogEntry) error
	LogDelete(step *Step) error
	StepFinished(step *Step)
}
