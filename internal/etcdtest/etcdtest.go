// Package etcdtest starts real etcd servers for tests: one member or a
// cluster, on loopback ports of their own, with data in a temporary
// directory, optionally with TLS. It finds Debian's etcd (the etcd-server
// package) or, run as root, installs it with apt-get; where it can do
// neither the tests skip with a message saying so — unless
// ENVLET_REQUIRE_ETCD=1 (as in CI), which makes that a failure.
//
// It must not be imported by anything but tests.
package etcdtest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RequireEnv, set to 1, turns a missing etcd into a test failure.
const RequireEnv = "ENVLET_REQUIRE_ETCD"

var (
	findOnce sync.Once
	binPath  string
	findErr  error
)

// Binary returns the etcd server binary, installing Debian's etcd-server
// (and etcd-client, for etcdctl) when it is missing and this process is
// root. The error says what to do.
func Binary() (string, error) {
	findOnce.Do(func() { binPath, findErr = find() })
	return binPath, findErr
}

func find() (string, error) {
	look := func() (string, error) {
		if _, err := exec.LookPath("etcdctl"); err != nil {
			return "", errors.New("no etcdctl on PATH")
		}
		for _, p := range []string{"etcd", "/usr/bin/etcd", "/usr/local/bin/etcd"} {
			if path, err := exec.LookPath(p); err == nil {
				return path, nil
			}
		}
		return "", errors.New("no etcd binary on PATH or in /usr/bin")
	}
	if p, err := look(); err == nil {
		return p, nil
	}
	if os.Geteuid() != 0 {
		return "", errors.New("no etcd or etcdctl, and not root to install them: run `apt-get install -y etcd-server etcd-client`")
	}
	install := func() ([]byte, error) {
		cmd := exec.Command("apt-get", "install", "-y", "-qq", "-o", "DPkg::Lock::Timeout=300", "etcd-server", "etcd-client")
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		return cmd.CombinedOutput()
	}
	if _, err := install(); err != nil {
		// The package lists may be missing or old on a fresh machine.
		upd := exec.Command("apt-get", "update", "-qq", "-o", "DPkg::Lock::Timeout=300")
		if b, uerr := upd.CombinedOutput(); uerr != nil {
			return "", fmt.Errorf("install etcd-server: apt-get update: %v\n%s", uerr, b)
		}
		if out, err := install(); err != nil {
			return "", fmt.Errorf("install etcd-server: %v\n%s", err, out)
		}
	}
	return look()
}

// Need returns the etcd binary, or skips t (fails it under
// ENVLET_REQUIRE_ETCD=1) with the reason.
func Need(t testing.TB) string {
	t.Helper()
	p, err := Binary()
	if err != nil {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("etcd is required (%s=1) but unavailable: %v", RequireEnv, err)
		}
		t.Skipf("etcd tests skipped: %v (set %s=1 to make this a failure)", err, RequireEnv)
	}
	return p
}

// Option changes how a cluster starts.
type Option func(*Cluster)

// WithTLS serves clients over TLS with a fresh CA, and requires client
// certificates (the files are CAFile, CertFile, KeyFile).
func WithTLS() Option { return func(c *Cluster) { c.tls = true } }

// Cluster is a running etcd cluster.
type Cluster struct {
	Members []*Member
	// With WithTLS: the CA that signed the server certificate, and a client
	// certificate and key it accepts.
	CAFile, CertFile, KeyFile string

	bin string
	dir string
	tls bool
}

// Member is one etcd process.
type Member struct {
	Name      string
	ClientURL string
	PeerURL   string
	dir       string
	args      []string
	bin       string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  *bytes.Buffer
}

// Start starts an n-member cluster for t and stops it when t ends. It skips
// t when etcd is not available (see Need).
func Start(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	bin := Need(t)
	c, err := StartDir(bin, t.TempDir(), n, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

// StartDir starts an n-member cluster with its data under dir; the caller
// stops it. Ports are chosen free on 127.0.0.1; a start that loses a port
// to another process is tried again.
func StartDir(bin, dir string, n int, opts ...Option) (*Cluster, error) {
	var last error
	for try := 0; try < 3; try++ {
		c := &Cluster{bin: bin, dir: filepath.Join(dir, fmt.Sprintf("try%d", try))}
		for _, o := range opts {
			o(c)
		}
		if err := c.start(n); err != nil {
			c.Stop()
			last = err
			continue
		}
		return c, nil
	}
	return nil, last
}

func (c *Cluster) start(n int) error {
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return err
	}
	scheme := "http"
	if c.tls {
		if err := c.makeCerts(); err != nil {
			return fmt.Errorf("make test certificates: %w", err)
		}
		scheme = "https"
	}
	ports, err := freePorts(2 * n)
	if err != nil {
		return err
	}
	var initial []string
	for i := 0; i < n; i++ {
		m := &Member{
			Name:      fmt.Sprintf("m%d", i),
			ClientURL: fmt.Sprintf("%s://127.0.0.1:%d", scheme, ports[2*i]),
			PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]),
			dir:       filepath.Join(c.dir, fmt.Sprintf("m%d", i)),
			bin:       c.bin,
		}
		c.Members = append(c.Members, m)
		initial = append(initial, m.Name+"="+m.PeerURL)
	}
	for _, m := range c.Members {
		m.args = []string{
			"--name", m.Name, "--data-dir", m.dir,
			"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
			"--listen-peer-urls", m.PeerURL, "--initial-advertise-peer-urls", m.PeerURL,
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-token", filepath.Base(filepath.Dir(c.dir)) + "-" + filepath.Base(c.dir),
			"--initial-cluster-state", "new",
			"--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn",
		}
		if c.tls {
			m.args = append(m.args, "--cert-file", filepath.Join(c.dir, "server.pem"), "--key-file", filepath.Join(c.dir, "server-key.pem"),
				"--trusted-ca-file", c.CAFile, "--client-cert-auth")
		}
		if err := m.Start(); err != nil {
			return err
		}
	}
	for _, m := range c.Members {
		if err := c.waitHealthy(m, 60*time.Second); err != nil {
			return err
		}
	}
	return nil
}

// Endpoints are the members' client URLs.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, m := range c.Members {
		eps = append(eps, m.ClientURL)
	}
	return eps
}

// Stop kills every member.
func (c *Cluster) Stop() {
	for _, m := range c.Members {
		m.Kill()
	}
}

// Start starts (or restarts, with its data) the member's process. It
// returns once the process listens for clients; with a quorum of the
// cluster down it is not healthy yet (see Cluster.WaitHealthy).
func (m *Member) Start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		return fmt.Errorf("etcd %s is already running", m.Name)
	}
	m.log = &bytes.Buffer{}
	cmd := exec.Command(m.bin, m.args...)
	cmd.Stdout, cmd.Stderr = &lockedWriter{w: m.log, mu: &m.mu}, &lockedWriter{w: m.log, mu: &m.mu}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start etcd %s: %w", m.Name, err)
	}
	m.cmd, m.done = cmd, make(chan struct{})
	done := m.done
	go func() { cmd.Wait(); close(done) }()
	host := strings.TrimPrefix(strings.TrimPrefix(m.ClientURL, "http://"), "https://")
	limit := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-done:
			return fmt.Errorf("etcd %s exited at start: %s", m.Name, m.logText())
		default:
		}
		if conn, err := net.DialTimeout("tcp", host, time.Second); err == nil {
			conn.Close()
			return nil
		}
		if time.Now().After(limit) {
			return fmt.Errorf("etcd %s does not listen on %s after 30 s: %s", m.Name, host, m.logText())
		}
		time.Sleep(20 * time.Millisecond) // polling a port that will open
	}
}

// Kill ends the member's process with SIGKILL and waits for it.
func (m *Member) Kill() {
	m.mu.Lock()
	cmd, done := m.cmd, m.done
	m.cmd = nil
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	<-done
}

// Signal sends sig to the member's process (SIGSTOP freezes it with its
// sockets open: requests are received by the kernel and go unanswered).
func (m *Member) Signal(sig os.Signal) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return errors.New("member " + m.Name + " is not running")
	}
	return m.cmd.Process.Signal(sig)
}

func (m *Member) logText() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.log.String()
}

// WaitHealthy waits until every running member reports health (it has a
// leader and answers), up to limit.
func (c *Cluster) WaitHealthy(limit time.Duration) error {
	for _, m := range c.Members {
		m.mu.Lock()
		running := m.cmd != nil
		m.mu.Unlock()
		if running {
			if err := c.waitHealthy(m, limit); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *Cluster) waitHealthy(m *Member, limit time.Duration) error {
	hc, err := c.httpClient()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(limit)
	for {
		resp, err := hc.Get(m.ClientURL + "/health")
		if err == nil {
			var b [256]byte
			n, _ := resp.Body.Read(b[:])
			resp.Body.Close()
			if resp.StatusCode == 200 && bytes.Contains(b[:n], []byte(`"health":"true"`)) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd %s is not healthy after %v: %v\n%s", m.Name, limit, err, m.logText())
		}
		time.Sleep(50 * time.Millisecond) // polling a server that is electing
	}
}

func (c *Cluster) httpClient() (*http.Client, error) {
	hc := &http.Client{Timeout: 2 * time.Second}
	if !c.tls {
		return hc, nil
	}
	cfg, err := c.clientTLS()
	if err != nil {
		return nil, err
	}
	hc.Transport = &http.Transport{TLSClientConfig: cfg}
	return hc, nil
}

// Etcdctl runs etcdctl against the running members (v3 API) and returns
// its standard output.
func (c *Cluster) Etcdctl(args ...string) (string, error) {
	var eps []string
	for _, m := range c.Members {
		m.mu.Lock()
		if m.cmd != nil {
			eps = append(eps, m.ClientURL)
		}
		m.mu.Unlock()
	}
	var flags []string
	if c.tls {
		flags = []string{"--cacert", c.CAFile, "--cert", c.CertFile, "--key", c.KeyFile}
	}
	return etcdctl(strings.Join(eps, ","), flags, args)
}

// Etcdctl runs etcdctl (v3 API) against endpoints, comma-separated, and
// returns its standard output.
func Etcdctl(endpoints string, args ...string) (string, error) {
	return etcdctl(endpoints, nil, args)
}

func etcdctl(endpoints string, flags, args []string) (string, error) {
	ctl, err := exec.LookPath("etcdctl")
	if err != nil {
		return "", fmt.Errorf("etcdctl: %w (install etcd-client)", err)
	}
	full := append([]string{"--endpoints", endpoints, "--command-timeout", "10s"}, flags...)
	cmd := exec.Command(ctl, append(full, args...)...)
	cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("etcdctl %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

// freePorts returns n distinct TCP ports that were free on 127.0.0.1.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.w.Len() > 1<<20 {
		return len(p), nil // enough to diagnose
	}
	return l.w.Write(p)
}

// makeCerts writes a CA, a server certificate for 127.0.0.1 and a client
// certificate, all ECDSA P-256, valid for a day.
func (c *Cluster) makeCerts() error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "envlet test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	c.CAFile = filepath.Join(c.dir, "ca.pem")
	if err := writePEM(c.CAFile, "CERTIFICATE", caDER); err != nil {
		return err
	}
	leaf := func(serial int64, name string, usage x509.ExtKeyUsage, certFile, keyFile string) error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: name},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage, x509.ExtKeyUsageClientAuth},
			IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
			DNSNames:     []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		kb, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return err
		}
		if err := writePEM(certFile, "CERTIFICATE", der); err != nil {
			return err
		}
		return writePEM(keyFile, "EC PRIVATE KEY", kb)
	}
	if err := leaf(2, "127.0.0.1", x509.ExtKeyUsageServerAuth, filepath.Join(c.dir, "server.pem"), filepath.Join(c.dir, "server-key.pem")); err != nil {
		return err
	}
	c.CertFile, c.KeyFile = filepath.Join(c.dir, "client.pem"), filepath.Join(c.dir, "client-key.pem")
	return leaf(3, "envlet-agent", x509.ExtKeyUsageClientAuth, c.CertFile, c.KeyFile)
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// clientTLS is the TLS config of a client the cluster accepts.
func (c *Cluster) clientTLS() (*tls.Config, error) {
	ca, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}, nil
}
