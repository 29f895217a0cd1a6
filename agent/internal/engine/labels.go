package engine

import (
	"fmt"
	"sort"
	"strings"
)

// The labels a container carries to be registered.
const (
	LabelUser    = "io.envlet.user"    // required: the user whose variables it gets
	LabelProject = "io.envlet.project" // required: the project
	// LabelMount "true" asks for the file-mounted env as well.
	LabelMount = "io.envlet.mount"
	// LabelRuntimePrefix + NAME = VALUE is a runtime variable of the
	// registration (the layer a registration's "runtime" holds).
	LabelRuntimePrefix = "io.envlet.runtime."
)

// Container is what a labelled container asks to be registered as.
type Container struct {
	ID      string // the full 64-hex container id
	User    string
	Project string
	Mount   bool
	Runtime map[string]string // nil when none
}

// fromLabels reads a container's labels. ok is false when it carries
// neither envlet label (it is none of envlet's business); an error when
// it carries some but not a usable set, which the agent logs and skips.
func fromLabels(id string, labels map[string]string) (c Container, ok bool, err error) {
	user, hasUser := labels[LabelUser]
	project, hasProject := labels[LabelProject]
	if !hasUser && !hasProject {
		for k := range labels {
			if strings.HasPrefix(k, "io.envlet.") {
				return c, false, fmt.Errorf("container %s has %s but not %s and %s", id, k, LabelUser, LabelProject)
			}
		}
		return c, false, nil
	}
	if !hasUser || !hasProject {
		return c, false, fmt.Errorf("container %s needs both %s and %s", id, LabelUser, LabelProject)
	}
	c = Container{ID: id, User: user, Project: project}
	var unknown []string
	for k, v := range labels {
		switch {
		case k == LabelUser, k == LabelProject:
		case k == LabelMount:
			switch v {
			case "true":
				c.Mount = true
			case "false", "":
			default:
				return c, false, fmt.Errorf("container %s: %s must be true or false", id, LabelMount)
			}
		case strings.HasPrefix(k, LabelRuntimePrefix):
			if c.Runtime == nil {
				c.Runtime = map[string]string{}
			}
			c.Runtime[strings.TrimPrefix(k, LabelRuntimePrefix)] = v
		case strings.HasPrefix(k, "io.envlet."):
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		// A misspelt label must not pass silently.
		return c, false, fmt.Errorf("container %s: unknown envlet labels %s", id, strings.Join(unknown, ", "))
	}
	return c, true, nil
}
