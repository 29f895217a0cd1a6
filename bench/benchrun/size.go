package main

import (
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// size builds every binary static and stripped (CGO_ENABLED=0, -trimpath,
// -ldflags='-s -w'), the way envlet-exec ships, and sets each against the
// bare Go launcher, the smallest Go program that does the launcher's job.
// It also reports what `make build` left in bin/.
func (r *runner) size() error {
	dir := filepath.Join(r.work, "size")
	pkgs := []struct{ name, pkg string }{
		{"barelauncher", "./bench/barelauncher"}, // first: the others' ratios need it
		{"envlet-exec", "./cmd/envlet-exec"},
		{"envletd", "./cmd/envletd"},
		{"envlet", "./cmd/envlet"},
	}
	build := func(name, pkg string) (string, error) {
		out := filepath.Join(dir, name)
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
		cmd.Dir = r.o.repo
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("build %s: %v: %s", pkg, err, b)
		}
		return out, nil
	}
	sizes := map[string]int64{}
	var rows []string
	for _, p := range pkgs {
		path, err := build(p.name, p.pkg)
		if err != nil {
			return err
		}
		fi, err := os.Stat(path)
		if err != nil {
			return err
		}
		sizes[p.name] = fi.Size()
		static, stripped := elfKind(path)
		made := "—"
		if fi, err := os.Stat(bin(r.o.bin, p.name)); err == nil && p.name != "barelauncher" {
			s, st := elfKind(bin(r.o.bin, p.name))
			made = fmt.Sprintf("%s (%s, %s)", mib(fi.Size()), kindWord(s, "static", "dynamic"), kindWord(st, "stripped", "not stripped"))
		}
		rows = append(rows, fmt.Sprintf("| `%s` | %s (%s bytes) | %s, %s | %s | %s |", p.name, mib(fi.Size()), thousands(fi.Size()),
			kindWord(static, "static", "dynamic"), kindWord(stripped, "stripped", "not stripped"),
			ratio(float64(fi.Size()), float64(sizes["barelauncher"])), made))
	}
	var b strings.Builder
	b.WriteString("## Size\n\n")
	b.WriteString("Each binary built static and stripped, as envlet-exec ships (`CGO_ENABLED=0 go build -trimpath -ldflags='-s -w'`), ")
	b.WriteString("against the bare Go launcher (bench/barelauncher: connect, one frame, exec), the least a Go program doing the launcher's job weighs. ")
	b.WriteString("The last column is what `make build` puts in bin/ (only envlet-exec is built static and stripped there).\n\n")
	b.WriteString("Re-run: `scripts/bench.sh -only size`, or by hand `CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /tmp/x ./cmd/envlet-exec && stat -c %s /tmp/x`.\n\n")
	b.WriteString("| binary | static, stripped | kind | vs bare Go launcher | as `make build` leaves it |\n|---|---|---|---|---|\n")
	for _, row := range rows {
		b.WriteString(row + "\n")
	}
	r.rep.section(b.String())
	const launcherCap = 1600 * 1000 // cmd/envlet-exec/deps_test.go's bound (1.6 MB)
	r.rep.goal(goalRow{
		what: "Size of envlet-exec (static, stripped)", figure: mib(sizes["envlet-exec"]),
		against: "bare Go launcher " + mib(sizes["barelauncher"]), ratio: ratio(float64(sizes["envlet-exec"]), float64(sizes["barelauncher"])),
		goal: "≤ 1.6 MB (deps_test.go)", met: met(sizes["envlet-exec"] <= launcherCap),
	})
	r.rep.goal(goalRow{what: "Size of envletd (static, stripped)", figure: mib(sizes["envletd"]), against: "—", ratio: "—", goal: "—"})
	return nil
}

// elfKind reports whether the ELF file at path is static (no PT_INTERP) and
// stripped (no .symtab).
func elfKind(path string) (static, stripped bool) {
	f, err := elf.Open(path)
	if err != nil {
		return false, false
	}
	defer f.Close()
	static = true
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			static = false
		}
	}
	return static, f.Section(".symtab") == nil
}

func kindWord(b bool, yes, no string) string {
	if b {
		return yes
	}
	return no
}
