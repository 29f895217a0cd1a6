package agent

import (
	"slices"
	"testing"
	"time"
)

func TestSnakeCase(t *testing.T) {
	for in, want := range map[string]string{
		"StateDir": "state_dir", "LogJSON": "log_json", "MaxConnsPerUID": "max_conns_per_uid",
		"AdminSocketMode": "admin_socket_mode", "EtcdEndpoints": "etcd_endpoints", "Reserved": "reserved",
	} {
		if got := snakeCase(in); got != want {
			t.Errorf("snakeCase(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRestartKeys(t *testing.T) {
	cur := baseConfig()
	next := baseConfig()
	next.Defaults = []Default{{"A", "1"}}
	next.LogLevel = "debug"
	next.MaxValueBytes = 10
	next.AccountVarLimit = 3
	if got := restartKeys(cur, next); len(got) != 0 {
		t.Fatalf("reloadable changes reported as needing a restart: %v", got)
	}
	next.WorkloadSocket = "/elsewhere.sock"
	next.RequestTimeout = time.Minute
	next.Reserved = []string{"X"}
	if got := restartKeys(cur, next); !slices.Equal(slices.Sorted(slices.Values(got)), []string{"request_timeout", "reserved", "workload_socket"}) {
		t.Fatalf("restartKeys = %v", got)
	}
}
