package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/berthhq/berth/api"
)

// fakeStatfs makes Status report fixed root filesystem sizes for path and
// restores the real statfs when the test ends.
func fakeStatfs(t *testing.T, path string) {
	t.Helper()
	t.Cleanup(func() { statfs = unix.Statfs })
	statfs = func(p string, s *unix.Statfs_t) error {
		if p != path {
			t.Errorf("statfs(%q), want %q", p, path)
		}
		*s = unix.Statfs_t{Bsize: 4096, Frsize: 4096, Blocks: 1000, Bfree: 400, Bavail: 300}
		return nil
	}
}

func fixtureHost(name string) Host {
	dir := filepath.Join("testdata", name)
	return Host{Proc: filepath.Join(dir, "proc"), Sys: filepath.Join(dir, "sys"), RootFS: dir}
}

func TestStatusFixtures(t *testing.T) {
	const kib = 1024
	page := uint64(os.Getpagesize())
	rootfs := api.FSUsage{Total: 1000 * 4096, Used: 600 * 4096, Avail: 300 * 4096}
	tests := []struct {
		name string
		want api.NodeStatus
	}{
		{"efi-ksm", api.NodeStatus{
			Hostname: "berth1",
			Kernel: api.KernelInfo{
				Sysname: "Linux",
				Release: "6.1.0-28-amd64",
				Version: "#1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1 (2024-11-22)",
			},
			Uptime:  351234,
			LoadAvg: [3]float64{0.52, 1.25, 2.00},
			CPUInfo: api.CPUInfo{
				Model:   "Intel(R) Xeon(R) Silver 4214 CPU @ 2.20GHz",
				CPUs:    8,
				Sockets: 2,
				Cores:   4,
			},
			Memory: api.MemoryUsage{
				Total:     65795076 * kib,
				Used:      (65795076 - 40000000) * kib,
				Free:      1234568 * kib,
				Available: 40000000 * kib,
			},
			Swap:     api.SwapUsage{Total: 8388604 * kib, Used: 388604 * kib, Free: 8000000 * kib},
			RootFS:   rootfs,
			BootInfo: api.BootInfo{Mode: "efi", SecureBoot: true},
			KSM: api.KSM{
				Run:           1,
				PagesShared:   1500,
				PagesSharing:  12000,
				PagesUnshared: 300,
				FullScans:     42,
				Saved:         12000 * page,
			},
		}},
		// An arm64-style cpuinfo without model name or topology, a kernel
		// without MemAvailable or KSM, no swap, booted by BIOS.
		{"bios-noksm", api.NodeStatus{
			Hostname: "arm-node",
			Kernel:   api.KernelInfo{Sysname: "Linux", Release: "6.12.0-rc1", Version: "#3 SMP Tue Oct  1 10:00:00 UTC 2024"},
			Uptime:   59,
			LoadAvg:  [3]float64{4, 0.10, 0.05},
			CPUInfo:  api.CPUInfo{CPUs: 4, Sockets: 1, Cores: 4},
			Memory: api.MemoryUsage{
				Total:     4000000 * kib,
				Used:      2400000 * kib,
				Free:      1000000 * kib,
				Available: 1600000 * kib,
			},
			RootFS:   rootfs,
			BootInfo: api.BootInfo{Mode: "bios"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := fixtureHost(tt.name)
			fakeStatfs(t, h.RootFS)
			got, err := h.Status()
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Status() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// copyTree copies the fixture tree src into a new temporary directory.
func copyTree(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	return dst
}

func TestStatusVariants(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(t *testing.T, root string)
		want    api.BootInfo
		wantErr string // substring; "" means success
	}{
		{
			name: "efi without efivars",
			edit: func(t *testing.T, root string) {
				rm(t, root, "sys/firmware/efi/efivars")
			},
			want: api.BootInfo{Mode: "efi"},
		},
		{
			name: "secure boot disabled",
			edit: func(t *testing.T, root string) {
				write(t, root, "sys/firmware/efi/efivars/"+secureBootVar, "\x06\x00\x00\x00\x00")
			},
			want: api.BootInfo{Mode: "efi"},
		},
		{
			name: "secure boot variable truncated",
			edit: func(t *testing.T, root string) {
				write(t, root, "sys/firmware/efi/efivars/"+secureBootVar, "\x06\x00\x00\x00")
			},
			want: api.BootInfo{Mode: "efi"},
		},
		{
			name:    "missing meminfo",
			edit:    func(t *testing.T, root string) { rm(t, root, "proc/meminfo") },
			wantErr: "meminfo: no such file",
		},
		{
			name:    "missing hostname",
			edit:    func(t *testing.T, root string) { rm(t, root, "proc/sys/kernel/hostname") },
			wantErr: "hostname: no such file",
		},
		{
			name:    "bad loadavg",
			edit:    func(t *testing.T, root string) { write(t, root, "proc/loadavg", "0.1 x 0.3 1/2 3\n") },
			wantErr: `bad load average "x"`,
		},
		{
			name:    "empty cpuinfo",
			edit:    func(t *testing.T, root string) { write(t, root, "proc/cpuinfo", "") },
			wantErr: "no processor entries",
		},
		{
			name:    "ksm file missing",
			edit:    func(t *testing.T, root string) { rm(t, root, "sys/kernel/mm/ksm/full_scans") },
			wantErr: "full_scans: no such file",
		},
		{
			name:    "ksm file garbage",
			edit:    func(t *testing.T, root string) { write(t, root, "sys/kernel/mm/ksm/run", "on\n") },
			wantErr: `bad number "on"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := copyTree(t, filepath.Join("testdata", "efi-ksm"))
			tt.edit(t, root)
			h := Host{Proc: filepath.Join(root, "proc"), Sys: filepath.Join(root, "sys"), RootFS: root}
			fakeStatfs(t, root)
			got, err := h.Status()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Status() error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got.BootInfo); diff != "" {
				t.Errorf("BootInfo mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func rm(t *testing.T, root, rel string) {
	t.Helper()
	if err := os.RemoveAll(filepath.Join(root, rel)); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, root, rel, data string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(root, rel), []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestStatusRealHost reads the machine the test runs on, so it can only
// check that the values are sane.
func TestStatusRealHost(t *testing.T) {
	st, err := Host{}.Status()
	if err != nil {
		t.Fatal(err)
	}
	hostname, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	if st.Hostname != hostname {
		t.Errorf("Hostname = %q, want os.Hostname() = %q", st.Hostname, hostname)
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		t.Fatal(err)
	}
	if want := unix.ByteSliceToString(uts.Release[:]); st.Kernel.Release != want {
		t.Errorf("Kernel.Release = %q, want uname -r = %q", st.Kernel.Release, want)
	}
	if st.Kernel.Sysname != "Linux" || st.Kernel.Version == "" {
		t.Errorf("Kernel = %+v, want Linux with a version", st.Kernel)
	}
	if st.Uptime <= 0 {
		t.Errorf("Uptime = %d, want > 0", st.Uptime)
	}
	for i, l := range st.LoadAvg {
		if l < 0 {
			t.Errorf("LoadAvg[%d] = %v, want >= 0", i, l)
		}
	}
	if c := st.CPUInfo; c.CPUs < 1 || c.Sockets < 1 || c.Cores < 1 || c.Cores > c.CPUs || c.Sockets > c.CPUs {
		t.Errorf("CPUInfo = %+v, want 1 <= sockets, cores <= cpus", c)
	}
	if m := st.Memory; m.Total == 0 || m.Used+m.Available != m.Total || m.Free > m.Total {
		t.Errorf("Memory = %+v, want total > 0, used+available = total, free <= total", m)
	}
	if s := st.Swap; s.Used+s.Free != s.Total {
		t.Errorf("Swap = %+v, want used+free = total", s)
	}
	if r := st.RootFS; r.Total == 0 || r.Used > r.Total || r.Avail > r.Total {
		t.Errorf("RootFS = %+v, want total > 0 and used, avail <= total", r)
	}
	if m := st.BootInfo.Mode; m != "efi" && m != "bios" {
		t.Errorf("BootInfo.Mode = %q, want efi or bios", m)
	}
	if k := st.KSM; k.Run < 0 || k.Run > 2 || k.Saved != k.PagesSharing*uint64(os.Getpagesize()) {
		t.Errorf("KSM = %+v, want run 0-2 and saved = pages_sharing * page size", k)
	}
}
