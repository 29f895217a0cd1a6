package main

import (
	"strings"
	"testing"
)

// TestAuditHMACFlagErrorHidesArgument: a value mistaken for a flag is not
// repeated by the flag error of audit hmac.
func TestAuditHMACFlagErrorHidesArgument(t *testing.T) {
	for _, args := range [][]string{
		{"audit", "hmac", "--s3cretCanary"},
		{"audit", "hmac", "-s3cretCanary"},
		{"audit", "hmac", "--value-stdin=s3cretCanary"},
	} {
		s := startStub(t, 200, `{"hmac":"00"}`)
		out, errOut, code := runCLI(t, "", append([]string{"--socket", s.socket}, args...)...)
		if code != 2 || strings.Contains(out+errOut, "s3cretCanary") || !strings.Contains(errOut, "USAGE") {
			t.Fatalf("%v: exit %d, stdout %q, stderr %q; want USAGE without the argument", args, code, out, errOut)
		}
		if reqs := s.requests(); len(reqs) != 0 {
			t.Fatalf("%v: sent %+v", args, reqs)
		}
	}
}
