// Package regdir keeps the workloads registered by files in step with a
// directory (workloads.d): a new, changed or removed *.json file applies
// without a restart.
//
// It owns watching the directory (fsnotify), reading its files safely (no
// FIFO, no symlink, nothing over the size limit), telling which file holds
// which workload id, and refusing a file whose id another file holds. It
// must not know what a registration means: its caller parses the bytes
// (Config.Parse) and applies the changes to its registry (Registry),
// under the registry's own lock. It never logs a file's contents: they
// hold values.
package regdir
