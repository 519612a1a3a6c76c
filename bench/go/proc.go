package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of the CPU times in /proc/<pid>/stat: 100 on every Linux
// architecture the addon targets (the kernel fixes it for the user ABI).
const clockTicks = 100

// procMemKiB reads a "VmXXX:" field (kB) of /proc/<pid>/status; VmHWM is the peak RSS.
func procMemKiB(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), field+":"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// procCPU is the user + system CPU time the process has used (/proc/<pid>/stat fields 14
// and 15; the command name in field 2 may hold spaces, so fields are counted after ')').
func procCPU(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := strings.LastIndexByte(string(raw), ')')
	if i < 0 {
		return 0, fmt.Errorf("unreadable /proc/%d/stat", pid)
	}
	fields := strings.Fields(string(raw[i+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("unreadable CPU times in /proc/%d/stat", pid)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// selfCPU is this process's user + system CPU time: the server-side cost of the built-in
// stores, which run inside the Woodpecker server.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// dirBytes is the total size of the regular files under dir (0 if it does not exist).
func dirBytes(dir string) int64 {
	var total int64
	_ = walkFiles(dir, func(_ string, size int64) { total += size })
	return total
}

// countFiles is the number of regular files under dir whose name ends in suffix.
func countFiles(dir, suffix string) int {
	n := 0
	_ = walkFiles(dir, func(name string, _ int64) {
		if strings.HasSuffix(name, suffix) {
			n++
		}
	})
	return n
}
