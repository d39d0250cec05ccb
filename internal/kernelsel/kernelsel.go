// Package kernelsel decides which kernel versions are kept on the EFI
// system partitions, with proxmox-boot-tool's rules: the running kernel,
// the one being installed, the two newest installed, the newest of the
// previous series, the manually added ones and the pinned ones. It also
// orders kernel versions. It does not read files; callers pass the facts.
package kernelsel

import (
	"slices"
	"strings"
)

// Input holds the facts the selection is made from.
type Input struct {
	// Installed are the versions that have a kernel image in /boot.
	Installed []string
	// Running is `uname -r`; it is kept only when it is installed.
	Running string
	// Installing is the version a package hook is installing ("" if none).
	Installing string
	// Manual is the manual kernel list.
	Manual []string
	// Pin and NextBoot are the permanent and next-boot pins ("" if unset).
	Pin, NextBoot string
}

// Series is a kernel version's major.minor ("6.1" for "6.1.0-27-amd64").
func Series(v string) string {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return v
	}
	minor := parts[1]
	for i, c := range minor {
		if c < '0' || c > '9' {
			minor = minor[:i]
			break
		}
	}
	return parts[0] + "." + minor
}

// Select returns the versions to keep, newest first, without duplicates.
func Select(in Input) []string {
	keep := map[string]bool{}
	add := func(v string) {
		if v = strings.TrimSpace(v); v != "" {
			keep[v] = true
		}
	}
	sorted := slices.Clone(in.Installed)
	slices.SortFunc(sorted, func(a, b string) int { return Compare(b, a) })
	sorted = slices.Compact(sorted)
	if in.Running != "" && slices.Contains(sorted, strings.ToLower(in.Running)) {
		add(strings.ToLower(in.Running))
	}
	for i := 0; i < len(sorted) && i < 2; i++ {
		add(sorted[i])
	}
	var series []string
	for _, v := range sorted {
		if s := Series(v); !slices.Contains(series, s) {
			series = append(series, s)
		}
	}
	if len(series) >= 2 {
		for _, v := range sorted {
			if Series(v) == series[1] {
				add(v)
				break
			}
		}
	}
	add(in.Installing)
	for _, v := range in.Manual {
		add(v)
	}
	add(in.Pin)
	add(in.NextBoot)
	out := make([]string, 0, len(keep))
	for v := range keep {
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b string) int { return Compare(b, a) })
	return out
}

// Compare orders kernel versions like `sort -V`: runs of digits compare as
// numbers, everything else byte-wise. It returns -1, 0 or +1.
func Compare(a, b string) int {
	for a != "" && b != "" {
		da, ra := digits(a)
		db, rb := digits(b)
		if da != "" && db != "" {
			na, nb := strings.TrimLeft(da, "0"), strings.TrimLeft(db, "0")
			if len(na) != len(nb) {
				return sign(len(na) - len(nb))
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
			a, b = ra, rb
			continue
		}
		if a[0] != b[0] {
			return sign(int(a[0]) - int(b[0]))
		}
		a, b = a[1:], b[1:]
	}
	return sign(len(a) - len(b))
}

func digits(s string) (string, string) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return s[:i], s[i:]
}

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}
