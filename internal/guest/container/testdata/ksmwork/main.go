// Command ksmwork is the KSM test workload run as a container's init (see
// ksm_test.go): it maps MIB MiB, fills it with pages that are identical in
// every ksmwork process (and all different within one), optionally marks
// it mergeable with madvise(MADV_MERGEABLE) as QEMU does, prints what
// madvise answered and then waits. It uses only the standard library so
// that it builds as a static binary that runs in a busybox root.
//
// Usage: ksmwork madvise|plain MIB
package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: ksmwork madvise|plain MIB")
		os.Exit(2)
	}
	mib, err := strconv.Atoi(os.Args[2])
	if err != nil || mib < 1 {
		fmt.Fprintln(os.Stderr, "ksmwork: bad size", os.Args[2])
		os.Exit(2)
	}
	mem, err := syscall.Mmap(-1, 0, mib<<20, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ksmwork: mmap:", err)
		os.Exit(1)
	}
	if os.Args[1] == "madvise" {
		// 12 is MADV_MERGEABLE.
		err := syscall.Madvise(mem, 12)
		fmt.Printf("ksmwork: madvise(MADV_MERGEABLE): %v\n", err)
	}
	ps := os.Getpagesize()
	for p := 0; p < len(mem)/ps; p++ {
		for o := 0; o < ps; o += 8 {
			binary.LittleEndian.PutUint64(mem[p*ps+o:], uint64(p)|0xb3<<56)
		}
	}
	fmt.Println("ksmwork: ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGPWR, syscall.SIGINT, syscall.SIGUSR2)
	<-sig
}
