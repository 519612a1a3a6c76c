package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// maxBatchBytes is the Woodpecker agent's maxLogBatchSize: it sends a batch once the
// protobuf size of its queued entries reaches 1 MiB.
const maxBatchBytes = 1 << 20

// protoOverhead approximates the protobuf bytes of a LogEntry besides its data (step UUID,
// line, time, type and field tags), so batches are cut where the agent cuts them.
const protoOverhead = 48

// agentLine is one line as the agent sends it: Woodpecker's rpc.LogEntry without the step.
type agentLine struct {
	Line int
	Time int64
	Data []byte
	Type int
}

// corpus is the real tool output the steps print, line by line (trailing newline removed,
// as the agent's LineWriter does).
type corpus struct {
	lines [][]byte
	bytes int64
}

func loadCorpus(dir string) (*corpus, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no *.log files in corpus directory %s (run bench/corpus.sh)", dir)
	}
	sort.Strings(files)
	c := &corpus{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read corpus file: %w", err)
		}
		for _, l := range bytes.Split(bytes.TrimSuffix(raw, []byte("\n")), []byte("\n")) {
			c.lines = append(c.lines, l)
			c.bytes += int64(len(l))
		}
	}
	return c, nil
}

// stepPlan is one step of a workload: which corpus lines it prints.
type stepPlan struct {
	ID     int64
	Offset int // first corpus line
	Lines  int
}

// batches cuts the step's output into agent batches of at most maxBatchBytes and calls
// send for each; it stops at the first error send returns. The agent stamps each line with
// the seconds since the step started; here time advances one second per 2000 lines.
func (c *corpus) batches(p stepPlan, send func([]agentLine) error) error {
	batch := make([]agentLine, 0, 4096)
	size := 0
	for i := 0; i < p.Lines; i++ {
		data := c.lines[(p.Offset+i)%len(c.lines)]
		batch = append(batch, agentLine{Line: i, Time: int64(i / 2000), Data: data})
		size += len(data) + protoOverhead
		if size >= maxBatchBytes {
			if err := send(batch); err != nil {
				return err
			}
			batch = make([]agentLine, 0, 4096)
			size = 0
		}
	}
	if len(batch) > 0 {
		return send(batch)
	}
	return nil
}

// dataBytes is the number of log bytes (line data) the step prints.
func (c *corpus) dataBytes(p stepPlan) int64 {
	if p.Offset == 0 && p.Lines == len(c.lines) {
		return c.bytes
	}
	var n int64
	for i := 0; i < p.Lines; i++ {
		n += int64(len(c.lines[(p.Offset+i)%len(c.lines)]))
	}
	return n
}

// streamingPlan is the streaming workload: steps of varied sizes (real CI steps range from
// a few hundred lines to tens of thousands), each a different slice of the corpus, ids from
// firstID. The same plan drives every store.
func streamingPlan(c *corpus, steps int, firstID int64) []stepPlan {
	sizes := []int{500, 2000, 5000, 12000, 30000, 3000, 8000, 20000}
	plan := make([]stepPlan, steps)
	offset := 0
	for i := range plan {
		n := sizes[i%len(sizes)]
		plan[i] = stepPlan{ID: firstID + int64(i), Offset: offset % len(c.lines), Lines: n}
		offset += n/3 + 7919 // a different window of the corpus for each step
	}
	return plan
}
