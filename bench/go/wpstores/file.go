package wpstores

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// maxLineLength is Woodpecker's scanner limit: its pipeline.MaxLogLineLength (1 MiB) in
// base64 plus 64 KiB for the other JSON fields.
const maxLineLength = (1024*1024/3)*4 + 64*1024

// FileStore is Woodpecker's file log store.
type FileStore struct {
	base string
}

// NewFileStore creates the base directory when it is missing, as Woodpecker does.
func NewFileStore(base string) (*FileStore, error) {
	if base == "" {
		return nil, fmt.Errorf("file storage base path is required")
	}
	if err := os.MkdirAll(base, 0o700); err != nil {
		return nil, fmt.Errorf("file store directory %s: %w", base, err)
	}
	return &FileStore{base: base}, nil
}

func (l *FileStore) filePath(id int64) string {
	return filepath.Join(l.base, fmt.Sprintf("%d.json", id))
}

// LogFind reads the step's file line by line, in the order the lines were appended.
func (l *FileStore) LogFind(stepID int64) ([]*LogEntry, error) {
	file, err := os.Open(l.filePath(stepID))
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, err
	}
	defer file.Close()

	buf := make([]byte, 0, bufio.MaxScanTokenSize)
	s := bufio.NewScanner(file)
	s.Buffer(buf, maxLineLength)

	var entries []*LogEntry
	for s.Scan() {
		j := s.Text()
		if len(strings.TrimSpace(j)) == 0 {
			continue
		}
		entry := &LogEntry{}
		if err := json.Unmarshal([]byte(j), entry); err != nil {
			return nil, err
		}
		entries = append(entries, entry)
	}
	return entries, s.Err()
}

// LogAppend opens the file for appending, marshals every entry and writes the batch at once.
func (l *FileStore) LogAppend(stepID int64, entries []*LogEntry) error {
	file, err := os.OpenFile(l.filePath(stepID), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	var bytes []byte
	for _, entry := range entries {
		line, err := json.Marshal(entry)
		if err != nil {
			continue // Woodpecker logs the error and goes on with the batch
		}
		bytes = append(bytes, line...)
		bytes = append(bytes, '\n')
	}
	_, werr := file.Write(bytes) // Woodpecker only logs a failed write
	if cerr := file.Close(); cerr != nil {
		return cerr
	}
	return werr
}

// LogDelete removes the step's file.
func (l *FileStore) LogDelete(stepID int64) error {
	return os.Remove(l.filePath(stepID))
}
