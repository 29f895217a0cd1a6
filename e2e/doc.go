// Package e2e tests envlet end to end: the real binaries built once, a real
// agent on real Unix sockets, workloads run as other uids through the real
// launcher, and every output searched for planted canary values.
package e2e
