package agent

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
)

// Workload attestation by cgroup (docs/design.md §3): the agent reads the peer's
// /proc/PID/cgroup and derives the systemd unit, the path and the container
// id (and Kubernetes pod UID) that `systemd_unit`, `cgroup`, `container_id`
// and `pod_uid` match against.
//
// Which line: a cgroup v2 host has one line, `0::PATH`. A v1 host has one
// per hierarchy; the named `name=systemd` one is where systemd and every v1
// container runtime (runc joins it) place processes. A hybrid host (this
// is one) has both, and they differ for containers started by a v1
// runtime with the cgroupfs driver: docker on such a host shows
// `1:name=systemd:/docker/ID` and `0::/system.slice/containerd.service`
// (the shim's), so the v2 line would attribute every container to
// containerd.service. The agent therefore uses the `name=systemd` line when
// it is present and not the root `/`, else the `0::` line.

// maxCgroupFile bounds what the agent reads of /proc/PID/cgroup.
const maxCgroupFile = 64 << 10

// cgroupInfo is what the agent knows about a process's cgroup.
type cgroupInfo struct {
	path   string   // the cgroup path identity uses
	unit   string   // the system unit owning path, "" when none (e.g. /docker/ID)
	slices []string // the slices above unit, outermost first
	// containerID is the 64-hex id of the container the process runs in,
	// from one of the known runtime layouts, "" when none.
	containerID string
	// podUID is the Kubernetes pod UID of the kubepods layouts (kubelet's
	// cgroupfs and systemd drivers), "" when none.
	podUID string
	// delegatedUID is N when path lies inside user@N.service: that user
	// names the cgroups below it (rootless podman), so a container id found
	// there counts only for a registration that also pins the uid. -1
	// otherwise.
	delegatedUID int64
}

var errNoCgroupLine = errors.New("no name=systemd or cgroup v2 line")

// parseCgroupFile reads the /proc/PID/cgroup format
// (`hierarchy-ID:controller-list:path` per line) and returns the path of
// the cgroup v2 line and of the v1 `name=systemd` line, "" for a line
// that is absent. A malformed or repeated line is an error: the kernel
// never writes one, so the file is not what it claims to be.
func parseCgroupFile(b []byte) (v2, v1systemd string, err error) {
	if len(b) > maxCgroupFile {
		return "", "", errors.New("cgroup file too large")
	}
	if bytes.IndexByte(b, 0) >= 0 {
		return "", "", errors.New("cgroup file holds a NUL byte")
	}
	var hasV2, hasV1 bool
	for n, line := range strings.Split(string(b), "\n") {
		if line == "" {
			continue
		}
		id, rest, ok1 := strings.Cut(line, ":")
		ctrl, path, ok2 := strings.Cut(rest, ":")
		if !ok1 || !ok2 || id == "" || !allDigits(id) || len(id) > 10 || !strings.HasPrefix(path, "/") {
			return "", "", errors.New("cgroup file line " + strconv.Itoa(n+1) + " is malformed")
		}
		switch {
		case id == "0" && ctrl == "":
			if hasV2 {
				return "", "", errors.New("cgroup file has two v2 lines")
			}
			v2, hasV2 = path, true
		case id == "0":
			return "", "", errors.New("cgroup file line " + strconv.Itoa(n+1) + " is malformed")
		case hasController(ctrl, "name=systemd"):
			if hasV1 {
				return "", "", errors.New("cgroup file has two name=systemd lines")
			}
			v1systemd, hasV1 = path, true
		}
	}
	if !hasV1 && !hasV2 {
		return "", "", errNoCgroupLine
	}
	return v2, v1systemd, nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func hasController(list, name string) bool {
	for _, c := range strings.Split(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}

// cgroupOf parses a /proc/PID/cgroup file into what identity matches on.
func cgroupOf(b []byte) (cgroupInfo, error) {
	v2, v1, err := parseCgroupFile(b)
	if err != nil {
		return cgroupInfo{}, err
	}
	path := v1
	if path == "" || path == "/" {
		if v2 != "" {
			path = v2
		}
	}
	return describeCgroup(path)
}

// describeCgroup derives the unit, slices, container id and pod UID of a
// path. A pod UID counts only for a process in one of the pod's containers
// (not the runtime's monitor, crio-conmon, in the same slice).
func describeCgroup(path string) (cgroupInfo, error) {
	info, err := describeCgroupPath(path)
	if info.containerID == "" || info.delegatedUID >= 0 {
		info.podUID = ""
	}
	return info, err
}

func describeCgroupPath(path string) (cgroupInfo, error) {
	info := cgroupInfo{path: path, delegatedUID: -1}
	if path == "/" {
		return info, nil
	}
	comps := strings.Split(strings.TrimPrefix(path, "/"), "/")
	for _, c := range comps {
		// A path outside the agent's cgroup namespace shows as /../..;
		// "" would be a // the kernel never writes.
		if c == "" || c == "." || c == ".." {
			return cgroupInfo{}, errors.New("cgroup path is outside the agent's cgroup namespace or malformed")
		}
	}
	// systemd's rule (cg_path_get_unit): skip the slices, the next
	// component is the unit; whatever lies below it belongs to that unit.
	i := 0
	for i < len(comps) && strings.HasSuffix(comps[i], ".slice") {
		info.slices = append(info.slices, comps[i])
		i++
	}
	if len(info.slices) > 0 && info.slices[0] == "kubepods.slice" {
		// kubelet, systemd driver: kubepods[-QOS]-pod<UID, _ for ->.slice
		for _, sl := range info.slices[1:] {
			if i := strings.LastIndex(sl, "-pod"); i >= 0 && strings.HasPrefix(sl, "kubepods-") {
				if uid := strings.ReplaceAll(strings.TrimSuffix(sl[i+len("-pod"):], ".slice"), "_", "-"); validPodUID(uid) {
					info.podUID = uid
				}
			}
		}
	}
	if i < len(comps) && isUnitName(comps[i]) {
		info.unit = comps[i]
		if id := scopeContainerID(comps[i]); id != "" {
			info.containerID = id
			return info, nil
		}
		if uid, ok := userManagerUID(comps[i]); ok {
			// The user's own manager: apply the rule again below it, for
			// rootless podman's user.slice/libpod-ID.scope.
			j := i + 1
			for j < len(comps) && strings.HasSuffix(comps[j], ".slice") {
				j++
			}
			if j < len(comps) {
				if id := scopeContainerID(comps[j]); id != "" {
					info.containerID, info.delegatedUID = id, uid
				}
			}
		}
		return info, nil
	}
	if len(info.slices) > 0 {
		return info, nil
	}
	// cgroupfs layouts, at the root of the hierarchy (only root creates
	// cgroups there).
	switch comps[0] {
	case "docker": // docker: /docker/ID
		if len(comps) >= 2 && isContainerID(comps[1]) {
			info.containerID = comps[1]
		}
	case "kubepods": // kubelet: /kubepods[/QOS]/podUID/ID (containerd) or crio-ID (CRI-O)
		j := 1
		if j < len(comps) && (comps[j] == "burstable" || comps[j] == "besteffort") {
			j++
		}
		if j < len(comps) && strings.HasPrefix(comps[j], "pod") && validPodUID(comps[j][3:]) {
			info.podUID = comps[j][3:]
		}
		if j+1 < len(comps) && strings.HasPrefix(comps[j], "pod") {
			c := strings.TrimPrefix(comps[j+1], "crio-")
			if isContainerID(c) {
				info.containerID = c
			}
		}
	case "libpod_parent": // podman, cgroupfs manager: /libpod_parent/libpod-ID
		if len(comps) >= 2 {
			if c, ok := strings.CutPrefix(comps[1], "libpod-"); ok && isContainerID(c) {
				info.containerID = c
			}
		}
	}
	return info, nil
}

// scopeContainerID returns the id in a runtime's scope unit: docker-ID.scope
// (docker, systemd driver), cri-containerd-ID.scope (containerd/CRI),
// crio-ID.scope (CRI-O), libpod-ID.scope (podman). The runtimes' monitor
// scopes (crio-conmon-ID, libpod-conmon-ID) are not the container.
func scopeContainerID(unit string) string {
	base, ok := strings.CutSuffix(unit, ".scope")
	if !ok {
		return ""
	}
	for _, prefix := range []string{"docker-", "cri-containerd-", "crio-", "libpod-"} {
		if id, ok := strings.CutPrefix(base, prefix); ok && isContainerID(id) {
			return id
		}
	}
	return ""
}

// userManagerUID recognises user@N.service, the unit of a user's systemd
// manager, whose subtree is delegated to that user.
func userManagerUID(unit string) (int64, bool) {
	rest, ok := strings.CutPrefix(unit, "user@")
	if !ok {
		return 0, false
	}
	n, ok := strings.CutSuffix(rest, ".service")
	if !ok || n == "" || !allDigits(n) || len(n) > 10 {
		return 0, false
	}
	uid, err := strconv.ParseInt(n, 10, 64)
	if err != nil || uid > 1<<32-1 {
		return 0, false
	}
	return uid, true
}

// isContainerID: a full container id, 64 lowercase hex digits.
func isContainerID(s string) bool {
	return len(s) == 64 && isLowerHex(s)
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// isUnitName: a systemd unit that can hold processes, by its suffix, with
// the characters systemd allows in a unit name.
func isUnitName(s string) bool {
	if len(s) > 255 {
		return false
	}
	base := ""
	for _, suf := range []string{".service", ".scope"} {
		if b, ok := strings.CutSuffix(s, suf); ok {
			base = b
			break
		}
	}
	if base == "" {
		return false
	}
	return unitChars(base)
}

func unitChars(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == ':' || c == '-' || c == '_' || c == '.' || c == '\\' || c == '@':
		default:
			return false
		}
	}
	return true
}

// validMatchUnit checks a registration's systemd_unit: a .service, .scope
// or .slice name.
func validMatchUnit(s string) bool {
	if isUnitName(s) {
		return true
	}
	b, ok := strings.CutSuffix(s, ".slice")
	return ok && b != "" && len(s) <= 255 && unitChars(b)
}

// validMatchCgroup checks a registration's cgroup prefix: absolute, clean,
// not the root (which every process is under).
func validMatchCgroup(s string) bool {
	if len(s) < 2 || len(s) > 4096 || s[0] != '/' || strings.HasSuffix(s, "/") {
		return false
	}
	for _, c := range strings.Split(s[1:], "/") {
		if c == "" || c == "." || c == ".." {
			return false
		}
		for i := 0; i < len(c); i++ {
			if c[i] < 0x20 || c[i] == 0x7f {
				return false
			}
		}
	}
	return true
}

// validMatchContainerID: 12 to 64 lowercase hex digits, a full id or the
// short form `docker ps` shows.
func validMatchContainerID(s string) bool {
	return len(s) >= 12 && len(s) <= 64 && isLowerHex(s)
}

// validPodUID: a pod's metadata.uid as kubelet names its cgroup, an RFC
// 4122 UUID in lowercase (8-4-4-4-12 hex digits), or the 32 hex digits of
// a static pod's (a hash of its manifest).
func validPodUID(s string) bool {
	if len(s) == 32 {
		return isLowerHex(s)
	}
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch i {
		case 8, 13, 18, 23:
			if s[i] != '-' {
				return false
			}
		default:
			if !isLowerHex(s[i : i+1]) {
				return false
			}
		}
	}
	return true
}

// underCgroup reports whether path is prefix or lies below it, on a
// component boundary (/a/b is not under /a/bc).
func underCgroup(path, prefix string) bool {
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}
