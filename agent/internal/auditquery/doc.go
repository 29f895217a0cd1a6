// Package auditquery reads envletd's audit log (one JSON object per line,
// as the agent writes it) and returns the records that match a filter:
// a time range, a user, a project (or a set of them), a group, an action.
//
// Which files: the log at path and the files logrotate leaves beside it,
// path.1, path.2, … each of them plain or gzipped (path.N.gz), read oldest
// first and stopping at the first N with neither. The files are opened
// newest first and a file already opened under another name (same device
// and inode: a rotation that ran while the query opened them) is read
// once, so a rotation during a query neither skips nor repeats a file.
// Other naming schemes (dateext) are not read.
//
// Speed: a line is tested on its bytes, never decoded, until it matches:
// the agent's encoder writes each field as `"key":"value"` with no space
// and JSON escapes every quote inside a string, so `"user":"alice"` can
// only be the field itself. Only the records returned (the newest limit
// that match) are decoded, and each is checked again on its decoded
// fields. Time bounds compare the seconds of the "time" field as text and
// parse only on a tie.
//
// It must not write, lock or rename anything: it only reads, so it can run
// beside the agent's writer and logrotate. It knows nothing of who may
// read what: the caller narrows the filter (Projects) for a non-admin and
// strips what such a reader must not see.
package auditquery
