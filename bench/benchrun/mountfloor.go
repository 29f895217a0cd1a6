package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The floor of the mount fan-out: the least a program can do to give n
// workloads a new version of their mount with the agent's result (three
// files of a mount's size and an empty secrets directory, 0500/0400 and
// owned by the workload's uid; the link swapped with one rename; the old
// version taken back and removed), written with raw *at system calls
// relative to open directories by writers goroutines, knowing every name in
// advance (no listing, no checks, no rendering, no locked memory): 31
// system calls a mount. What the
// agent does beyond this is its own cost; the floor itself is the file
// system's.

// floorSizes are the sizes of env, docker.env and env.json of a mount of 64
// variables of 32 bytes under 10-byte names, as the agent writes them.
var floorSizes = []int{3100, 2968, 3428}

// floorCPU and floorSysCPU are the CPU time the last mountFloor took: user
// and system, and system alone.
var floorCPU, floorSysCPU time.Duration

// mountFloor lays out n mounts under dir (version 1, not timed), then times
// their rewrite to version 2 by writers goroutines.
func mountFloor(dir string, n, writers int) (time.Duration, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	mfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(mfd)
	files := make([][]byte, len(floorSizes))
	for i, s := range floorSizes {
		files[i] = make([]byte, s)
		for k := range files[i] {
			files[i][k] = 'a' + byte(k%26)
		}
	}
	names := []string{"env", "docker.env", "env.json"}
	uid := func(i int) int { return uidBase + i }
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("w%05d", i)
		if err := unix.Mkdirat(mfd, "."+id, 0o711); err != nil {
			return 0, err
		}
		vfd, err := unix.Openat(mfd, "."+id, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return 0, err
		}
		err = floorVersion(mfd, vfd, id, "1", names, files, uid(i))
		unix.Close(vfd)
		if err != nil {
			return 0, err
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	var ru0, ru1 unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru0)
	t0 := time.Now()
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += writers {
				id := "w" + fmt.Sprintf("%05d", i)
				vfd, err := unix.Openat(mfd, "."+id, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
				if err == nil {
					if err = floorVersion(mfd, vfd, id, "2", names, files, uid(i)); err == nil {
						err = floorRemove(vfd, "1", names)
					}
					unix.Close(vfd)
				}
				if err != nil {
					errs <- fmt.Errorf("%s: %w", id, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(t0)
	unix.Getrusage(unix.RUSAGE_SELF, &ru1)
	floorCPU = time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
	floorSysCPU = time.Duration(ru1.Stime.Nano() - ru0.Stime.Nano())
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return took, nil
}

// floorVersion writes version v of id's mount in vfd and swaps id's link
// in mfd to it.
func floorVersion(mfd, vfd int, id, v string, names []string, files [][]byte, uid int) error {
	if err := unix.Mkdirat(vfd, v, 0o700); err != nil {
		return err
	}
	dfd, err := unix.Openat(vfd, v, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	for i, name := range names {
		fd, err := unix.Openat(dfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o400)
		if err != nil {
			return err
		}
		_, err = unix.Write(fd, files[i])
		if err == nil {
			err = unix.Fchown(fd, uid, 0)
		}
		unix.Close(fd)
		if err != nil {
			return err
		}
	}
	if err := unix.Mkdirat(dfd, "secrets", 0o700); err != nil {
		return err
	}
	for _, err := range []error{
		unix.Fchmodat(dfd, "secrets", 0o500, 0), unix.Fchownat(dfd, "secrets", uid, 0, unix.AT_SYMLINK_NOFOLLOW),
		unix.Fchmod(dfd, 0o500), unix.Fchown(dfd, uid, 0),
		unix.Symlinkat("."+id+"/"+v, vfd, ".link"), unix.Renameat(vfd, ".link", mfd, id),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}

// floorRemove takes version v back from its workload and removes it: the
// version directory by its name (only the agent writes in .<id>), its
// files and empty secrets directory by their paths.
func floorRemove(vfd int, v string, names []string) error {
	errs := []error{unix.Fchownat(vfd, v, 0, 0, unix.AT_SYMLINK_NOFOLLOW), unix.Fchmodat(vfd, v, 0o700, 0)}
	for _, name := range names {
		errs = append(errs, unix.Unlinkat(vfd, v+"/"+name, 0))
	}
	errs = append(errs, unix.Unlinkat(vfd, v+"/secrets", unix.AT_REMOVEDIR), unix.Unlinkat(vfd, v, unix.AT_REMOVEDIR))
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// mountFloorMain is `benchrun mountfloor DIR N WRITERS`: the floor on its
// own, to compare by hand (strace -c -f, perf).
func mountFloorMain(args []string) int {
	if len(args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: benchrun mountfloor DIR N WRITERS")
		return 2
	}
	n, _ := strconv.Atoi(args[1])
	w, _ := strconv.Atoi(args[2])
	dir, err := os.MkdirTemp(args[0], "floor")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	took, err := mountFloor(filepath.Join(dir, "mounts"), n, w)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("%d mounts rewritten by %d writers in %s: %s per mount, CPU %s per mount\n", n, w, took, took/time.Duration(n), floorCPU/time.Duration(n))
	return 0
}
