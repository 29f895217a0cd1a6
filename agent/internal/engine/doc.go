// Package engine registers containers from a container engine's own
// record of them: it follows the Docker Engine API (which dockerd and
// `podman system service` serve) on a Unix socket, and turns each
// container labelled io.envlet.user and io.envlet.project into a
// registration by container id — put when the container is created,
// removed when it is removed, reconciled with the containers that exist
// at start and whenever the engine comes back.
//
// It owns the engine connection, the label format (labels.go) and the
// check that the engine's socket is root's: the labels are trusted only
// because whoever can create containers through that socket is root
// already.
//
// It must not: touch the agent's state except through the Registrar it is
// given (declared here, implemented by the agent); register a container
// without both labels; speak to an engine over TCP or on a socket another
// user owns; log a label's value other than user and project; or be
// imported by cmd/envlet-exec (the launcher stays free of it).
package engine
