// Package kubernetes_test checks the Kubernetes manifests without a
// cluster (none runs here): each document is decoded strictly (unknown or
// duplicate fields are errors) into the Kubernetes API types, the agent
// parses the config the DaemonSet mounts, and the DaemonSet, the config and
// the example pod agree on where the workload socket's directory is. The
// Kubernetes modules are a dependency of this test alone.
package kubernetes_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/envlet/envlet/agent"
)

// documents splits a multi-document YAML file and returns each with its kind.
func documents(t *testing.T, file string) map[string][]byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	docs := map[string][]byte{}
	for _, d := range bytes.Split(b, []byte("\n---\n")) {
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(d, &head); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if head.Kind == "" || head.APIVersion == "" {
			t.Fatalf("%s: a document without apiVersion or kind", file)
		}
		if docs[head.Kind] != nil {
			t.Fatalf("%s: two %s documents", file, head.Kind)
		}
		docs[head.Kind] = d
	}
	return docs
}

func strict(t *testing.T, what string, doc []byte, into any) {
	t.Helper()
	if err := decodeStrict(doc, into); err != nil {
		t.Fatalf("%s does not decode strictly: %v", what, err)
	}
}

// decodeStrict decodes YAML as the API server's strict field validation
// does: duplicate keys, unknown fields and fields in the wrong case
// (hostPid for hostPID, which encoding/json and so yaml.UnmarshalStrict
// would accept) are errors.
func decodeStrict(doc []byte, into any) error {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strictErrs, err := kjson.UnmarshalStrict(js, into)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}

// TestStrictDecodingCatchesTypos: the decoding below would notice a
// misspelt field (the check the other tests rely on).
func TestStrictDecodingCatchesTypos(t *testing.T) {
	for _, bad := range []string{
		"apiVersion: v1\nkind: Pod\nspec:\n  hostPid: true\n",
		"apiVersion: v1\nkind: Pod\nspec:\n  hostPID: true\n  hostPID: false\n",
		"apiVersion: v1\nkind: Pod\nspec:\n  hostPIDs: true\n",
	} {
		var p corev1.Pod
		if err := decodeStrict([]byte(bad), &p); err == nil {
			t.Errorf("decoded without an error:\n%s", bad)
		}
	}
}

func TestDaemonSet(t *testing.T) {
	docs := documents(t, "daemonset.yaml")
	var ns corev1.Namespace
	var cm corev1.ConfigMap
	var ds appsv1.DaemonSet
	for kind, into := range map[string]any{"Namespace": &ns, "ConfigMap": &cm, "DaemonSet": &ds} {
		if docs[kind] == nil {
			t.Fatalf("daemonset.yaml has no %s", kind)
		}
		strict(t, kind, docs[kind], into)
	}
	if ds.Namespace != ns.Name || cm.Namespace != ns.Name {
		t.Errorf("namespaces: DaemonSet %q, ConfigMap %q, Namespace %q", ds.Namespace, cm.Namespace, ns.Name)
	}
	spec := ds.Spec.Template.Spec
	if !spec.HostPID {
		t.Error("hostPID is off: SO_PEERCRED pids of other pods would be 0")
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("the agent needs no service account token")
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers", len(spec.Containers))
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil || sc.Privileged != nil && *sc.Privileged {
		t.Fatal("the agent's container needs a securityContext with capabilities, not privileged")
	}
	var added []string
	for _, cp := range sc.Capabilities.Add {
		added = append(added, string(cp))
	}
	slices.Sort(added)
	// systemd/envletd.service's set, and SYS_ADMIN for nsenter alone.
	if want := []string{"CHOWN", "DAC_READ_SEARCH", "FOWNER", "IPC_LOCK", "SYS_ADMIN"}; !slices.Equal(added, want) {
		t.Errorf("capabilities added %v, want %v", added, want)
	}
	if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("capabilities dropped %v, want ALL", sc.Capabilities.Drop)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("root file system not read-only")
	}
	// The entrypoint enters the host's cgroup namespace, then drops
	// SYS_ADMIN before the agent runs.
	cmd := strings.Join(c.Command, " ")
	if !strings.HasPrefix(cmd, "nsenter --cgroup=/proc/1/ns/cgroup -- setpriv --bounding-set=-sys_admin -- /usr/bin/envletd -config ") {
		t.Errorf("command %q", cmd)
	}
	confPath := c.Command[len(c.Command)-1]

	// Volumes: where each mount comes from.
	from := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		from[v.Name] = v
	}
	hostPathAt := map[string]string{} // mount path in the container -> host path
	var confDir string
	for _, m := range c.VolumeMounts {
		v, ok := from[m.Name]
		if !ok {
			t.Fatalf("volume mount %s has no volume", m.Name)
		}
		switch {
		case v.HostPath != nil:
			hostPathAt[m.MountPath] = v.HostPath.Path
		case v.ConfigMap != nil && v.ConfigMap.Name == cm.Name:
			confDir = m.MountPath
		}
	}
	if filepath.Dir(confPath) != confDir {
		t.Fatalf("the agent reads %s; the ConfigMap is mounted at %q", confPath, confDir)
	}
	conf, err := agent.ParseConfig([]byte(cm.Data[filepath.Base(confPath)]))
	if err != nil {
		t.Fatalf("the agent refuses the ConfigMap's %s: %v", filepath.Base(confPath), err)
	}
	// Everything the agent keeps or serves is on the host, so it outlives
	// the pod, and is where the node and its pods look.
	for what, p := range map[string]string{"state_dir": conf.StateDir, "workload_socket": conf.WorkloadSocket, "admin_socket": conf.AdminSocket,
		"mount_dir": conf.MountDir, "token_dir": conf.TokenDir, "audit_log": conf.AuditLog, "workloads_dir": conf.WorkloadsDir} {
		if hostPath(hostPathAt, p) != p {
			t.Errorf("%s %s is not on the host at the same path (mounts %v)", what, p, hostPathAt)
		}
	}
	if filepath.Dir(conf.WorkloadSocket) == filepath.Dir(conf.AdminSocket) {
		t.Error("the workload socket's directory, which pods mount, holds the admin socket")
	}
	if got := exampleSocketDir(t); got != filepath.Dir(conf.WorkloadSocket) {
		t.Errorf("the example pod mounts %s; the agent's workload socket is in %s", got, filepath.Dir(conf.WorkloadSocket))
	}
}

// hostPath maps a path in the agent's container to the host, "" when no
// hostPath volume holds it.
func hostPath(mounts map[string]string, p string) string {
	best := ""
	for in := range mounts {
		if (p == in || strings.HasPrefix(p, in+"/")) && len(in) > len(best) {
			best = in
		}
	}
	if best == "" {
		return ""
	}
	return mounts[best] + strings.TrimPrefix(p, best)
}

// exampleSocketDir decodes the example pod strictly and returns the host
// directory it mounts where its ENVLET_SOCKET points.
func exampleSocketDir(t *testing.T) string {
	t.Helper()
	docs := documents(t, "example-pod.yaml")
	var pod corev1.Pod
	strict(t, "the example Pod", docs["Pod"], &pod)
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	sock := ""
	for _, e := range c.Env {
		if e.Name == "ENVLET_SOCKET" {
			sock = e.Value
		}
	}
	if sock == "" {
		t.Fatal("the example pod sets no ENVLET_SOCKET")
	}
	if pod.Spec.SecurityContext == nil || pod.Spec.SecurityContext.RunAsUser == nil || *pod.Spec.SecurityContext.RunAsUser == 0 {
		t.Error("the example pod does not run as a uid of its own")
	}
	for _, m := range c.VolumeMounts {
		if m.MountPath != filepath.Dir(sock) {
			continue
		}
		if !m.ReadOnly {
			t.Error("the socket directory is mounted writable")
		}
		for _, v := range pod.Spec.Volumes {
			if v.Name == m.Name && v.HostPath != nil {
				if v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathDirectory {
					t.Errorf("hostPath type %v, want Directory (the socket's directory, not the socket)", v.HostPath.Type)
				}
				return v.HostPath.Path
			}
		}
	}
	t.Fatalf("no hostPath volume is mounted at %s, the directory of ENVLET_SOCKET", filepath.Dir(sock))
	return ""
}
