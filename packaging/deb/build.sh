#!/usr/bin/env bash
# Builds envlet_<version>_<arch>.deb with dpkg-deb alone (no debhelper, fpm
# or nfpm): `make deb`, or packaging/deb/build.sh [OUTDIR].
#
#   VERSION  the package version (default: the Makefile's)
#   GO       the go command (default: go)
#   MAN      the man pages `make man` wrote (default: bin/man)
#
# The tree it packs:
#   /usr/bin/envletd, /usr/bin/envlet       as `make build` builds them (cgo
#                                           where a C compiler is, for NSS
#                                           user names), stripped
#   /usr/bin/envlet-exec                    static and stripped
#   /lib/systemd/system/envletd.service, envletd.socket,
#     envletd-admin.socket, envletd-credentials.socket
#   /usr/lib/sysusers.d/envlet.conf, /usr/lib/tmpfiles.d/envlet.conf
#   /etc/envlet/envletd.conf               a conffile
#   /etc/envlet/workloads.d/
#   /etc/logrotate.d/envlet                 the audit log's rotation, a conffile
#   /usr/share/doc/envlet/                 README, copyright, examples (also
#                                           prometheus/envlet-alerts.yml)
#   /usr/lib/python3/dist-packages/envlet/  the Python client (clients/python)
#   /usr/share/man/man1/envlet*.1.gz, man8/envletd.8.gz
#   /usr/share/bash-completion/completions/envlet, zsh and fish
#                                           completions (envlet completion)
set -euo pipefail
umask 022
cd "$(dirname "$0")/../.."
out=${1:-dist}
version=${VERSION:-0.1.0}
go=${GO:-go}
man=${MAN:-bin/man}
arch=$($go env GOARCH)
case $arch in amd64 | arm64) ;; *) echo "build.sh: no Debian architecture for GOARCH=$arch" >&2; exit 1 ;; esac
case $version in [0-9]*) ;; *) echo "build.sh: VERSION must start with a digit: $version" >&2; exit 1 ;; esac

work=$(mktemp -d "${TMPDIR:-/tmp}/envlet-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" \
	"$root/usr/lib/sysusers.d" "$root/usr/lib/tmpfiles.d" "$root/etc/envlet/workloads.d" "$root/etc/logrotate.d" \
	"$root/usr/share/doc/envlet/examples/systemd/workloads.d" "$root/usr/share/doc/envlet/examples/container"

$go build -trimpath -ldflags='-s -w' -o "$root/usr/bin/" ./cmd/envletd ./cmd/envlet
CGO_ENABLED=0 $go build -trimpath -ldflags='-s -w' -o "$root/usr/bin/envlet-exec" ./cmd/envlet-exec
chmod 0755 "$root"/usr/bin/*

install -m 0644 systemd/envletd.service systemd/envletd.socket systemd/envletd-admin.socket \
	systemd/envletd-credentials.socket "$root/lib/systemd/system/"
install -m 0644 systemd/sysusers.d/envlet.conf "$root/usr/lib/sysusers.d/envlet.conf"
install -m 0644 systemd/tmpfiles.d/envlet.conf "$root/usr/lib/tmpfiles.d/envlet.conf"
install -m 0644 packaging/envletd.conf "$root/etc/envlet/envletd.conf"
install -m 0644 packaging/deb/logrotate "$root/etc/logrotate.d/envlet"
doc=$root/usr/share/doc/envlet
install -m 0644 README.md "$doc/README.md"
install -m 0644 packaging/deb/copyright "$doc/copyright"
install -m 0644 systemd/examples/*.service systemd/examples/*.path systemd/examples/*.conf "$doc/examples/systemd/"
install -m 0644 systemd/examples/workloads.d/*.json "$doc/examples/systemd/workloads.d/"
install -m 0644 packaging/container/Dockerfile packaging/container/*.json packaging/container/*.yaml "$doc/examples/container/"
install -m 0755 packaging/container/run.sh "$doc/examples/container/"
# The Python client, pure Python: importable by Debian's python3 as is.
install -d -m 0755 "$root/usr/lib/python3/dist-packages/envlet"
install -m 0644 clients/python/src/envlet/*.py clients/python/src/envlet/py.typed "$root/usr/lib/python3/dist-packages/envlet/"

install -d -m 0755 "$doc/examples/prometheus"
install -m 0644 packaging/prometheus/envlet-alerts.yml "$doc/examples/prometheus/"

# Man pages, compressed as Debian policy asks (-n: no name or time in the
# header, so the package is the same from build to build).
[ -f "$man/envlet.1" ] && [ -f "$man/envletd.8" ] || { echo "build.sh: no man pages in $man (make man)" >&2; exit 1; }
install -d -m 0755 "$root/usr/share/man/man1" "$root/usr/share/man/man8"
for page in "$man"/*.1 "$man"/*.8; do
	sec=${page##*.}
	gzip -9n <"$page" >"$root/usr/share/man/man$sec/$(basename "$page").gz"
	chmod 0644 "$root/usr/share/man/man$sec/$(basename "$page").gz"
done

# Shell completion, from the envlet just built (the package's architecture
# is this machine's: see arch above).
install -d -m 0755 "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
	"$root/usr/share/fish/vendor_completions.d"
"$root/usr/bin/envlet" completion bash >"$root/usr/share/bash-completion/completions/envlet"
"$root/usr/bin/envlet" completion zsh >"$root/usr/share/zsh/vendor-completions/_envlet"
"$root/usr/bin/envlet" completion fish >"$root/usr/share/fish/vendor_completions.d/envlet.fish"
chmod 0644 "$root/usr/share/bash-completion/completions/envlet" "$root/usr/share/zsh/vendor-completions/_envlet" \
	"$root/usr/share/fish/vendor_completions.d/envlet.fish"

# A cgo build of the agent links glibc: depend on the newest symbol
# version it uses. A static build depends on nothing.
libc=
for b in "$root/usr/bin/envletd" "$root/usr/bin/envlet"; do
	if ldd "$b" >/dev/null 2>&1; then
		v=$(grep -a -o 'GLIBC_[0-9][0-9.]*[0-9]' "$b" | sed 's/^GLIBC_//' | sort -V | tail -1)
		if [ -n "$v" ] && { [ -z "$libc" ] || [ "$(printf '%s\n%s\n' "$libc" "$v" | sort -V | tail -1)" = "$v" ]; }; then
			libc=$v
		fi
	fi
done

size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
{
	echo "Package: envlet"
	echo "Version: $version"
	echo "Architecture: $arch"
	echo "Maintainer: envlet maintainers <maintainers@envlet.invalid>"
	echo "Section: admin"
	echo "Priority: optional"
	echo "Installed-Size: $size"
	[ -z "$libc" ] || echo "Depends: libc6 (>= $libc)"
	echo "Recommends: systemd, logrotate"
	echo "Homepage: https://github.com/envlet/envlet"
	echo "Description: environment variables and secrets for every workload on a node"
	echo " envletd, the agent, keeps the variables and secrets that users, projects"
	echo " and the organization define, resolves them per workload with strict"
	echo " precedence, holds them in locked memory and serves them over a Unix socket"
	echo " to the process the kernel says is calling. envlet-exec, a small static"
	echo " launcher, is a container entrypoint or an ExecStart= wrapper that runs the"
	echo " real program with its environment, and can restart it when that changes."
	echo " envlet is the admin CLI."
} >"$root/DEBIAN/control"
printf '%s\n' /etc/envlet/envletd.conf /etc/logrotate.d/envlet >"$root/DEBIAN/conffiles"
for s in postinst prerm postrm; do
	install -m 0755 "packaging/deb/$s" "$root/DEBIAN/$s"
done

mkdir -p "$out"
deb=$out/envlet_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
