package agent

import (
	"strings"
	"testing"
	"time"
)

func TestEtcdConfig(t *testing.T) {
	c, err := ParseConfig([]byte("etcd_endpoints = https://a:2379, https://b:2379\netcd_prefix = /p/\netcd_ca_file = /ca.pem\netcd_cert_file = /c.pem\netcd_key_file = /k.pem\netcd_timeout = 750ms\n"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.EtcdEndpoints, " ") != "https://a:2379 https://b:2379" || c.EtcdPrefix != "/p/" || c.EtcdCAFile != "/ca.pem" ||
		c.EtcdCertFile != "/c.pem" || c.EtcdKeyFile != "/k.pem" || c.EtcdTimeout != 750*time.Millisecond {
		t.Fatalf("parsed %+v", c)
	}
	if d, _ := ParseConfig(nil); d.EtcdTimeout != 5*time.Second || d.EtcdPrefix != "/envlet/" || len(d.EtcdEndpoints) != 0 {
		t.Fatalf("defaults: %v %q %v", d.EtcdTimeout, d.EtcdPrefix, d.EtcdEndpoints)
	}
	for _, bad := range []string{"etcd_timeout = 5", "etcd_timeout = 10ms", "etcd_timeout = 1h", "etcd_cafile = x"} {
		if _, err := ParseConfig([]byte(bad + "\n")); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
