// Command syncfloor is the floor of a durable write: it appends one record
// to a file and fdatasyncs it, again and again, from one writer, for a
// while, and prints how many it did. No store, no encryption, no HTTP:
// the least any store that acknowledges a write only once it is on disk
// must do per write without group commit. benchrun's adminwrite section
// runs it beside envletd, on the same file system, in the same run.
//
//	syncfloor -dir DIR [-duration 3s] [-size 160]
//
// prints "writes N seconds S".
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	dir := flag.String("dir", os.TempDir(), "directory for the file")
	dur := flag.Duration("duration", 3*time.Second, "how long to write")
	size := flag.Int("size", 160, "bytes per record (about one sealed variable in a log record)")
	flag.Parse()
	f, err := os.CreateTemp(*dir, "syncfloor-*")
	if err != nil {
		fmt.Fprintln(os.Stderr, "syncfloor:", err)
		os.Exit(1)
	}
	defer os.Remove(filepath.Join(*dir, filepath.Base(f.Name())))
	defer f.Close()
	rec := make([]byte, *size)
	var off int64
	n := 0
	t0 := time.Now()
	for time.Since(t0) < *dur {
		if _, err := f.WriteAt(rec, off); err != nil {
			fmt.Fprintln(os.Stderr, "syncfloor:", err)
			os.Exit(1)
		}
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			fmt.Fprintln(os.Stderr, "syncfloor:", err)
			os.Exit(1)
		}
		off += int64(len(rec))
		n++
	}
	fmt.Printf("writes %d seconds %.6f\n", n, time.Since(t0).Seconds())
}
