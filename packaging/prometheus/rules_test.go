// Package prometheus_test checks the example alerting rules with
// Prometheus's own promtool: they load, and each alert fires on the series
// it watches (envlet-alerts.test.yml). agent/internal/metrics checks that
// every metric they name is one the agent exports.
package prometheus_test

import (
	"os"
	"os/exec"
	"testing"
)

func promtool(t *testing.T, args ...string) {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool not found; CI must install prometheus")
		}
		t.Skip("promtool not found (apt-get install prometheus)")
	}
	out, err := exec.Command(p, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %v: %v\n%s", args, err, out)
	}
}

func TestAlertRules(t *testing.T) {
	promtool(t, "check", "rules", "envlet-alerts.yml")
	promtool(t, "test", "rules", "envlet-alerts.test.yml")
}
