package ksm_test

import (
	"bufio"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/ksm"
)

func TestGuestMerge(t *testing.T) {
	tests := []struct {
		config map[string]string
		want   bool
		choice ksm.Choice
		bad    bool
	}{
		{nil, true, ksm.ChoiceDefault, false},
		{map[string]string{"ksm": "1"}, true, ksm.ChoiceOn, false},
		{map[string]string{"ksm": "0"}, false, ksm.ChoiceOff, false},
		{map[string]string{"ksm": "off"}, false, ksm.ChoiceOff, false},
		{map[string]string{"ksm": "maybe"}, false, ksm.ChoiceDefault, true},
	}
	for _, tt := range tests {
		g := api.Guest{ID: 101, Kind: api.GuestVM, Config: tt.config}
		got, err := ksm.GuestMerge(g)
		if got != tt.want || (err != nil) != tt.bad {
			t.Errorf("%v: got %v, %v; want %v (error %v)", tt.config, got, err, tt.want, tt.bad)
		}
		if c, _ := ksm.GuestChoice(g); c != tt.choice {
			t.Errorf("%v: GuestChoice = %v, want %v", tt.config, c, tt.choice)
		}
		if fields := ksm.ValidateGuest(g); (fields["ksm"] != "") != tt.bad {
			t.Errorf("%v: ValidateGuest = %v", tt.config, fields)
		}
	}
}

// mergeableRAM starts a real QEMU (paused, TCG) with the -machine option
// berth's helper gives and reports whether its 64 MiB of guest RAM is
// marked mergeable: the "mg" flag in /proc/PID/smaps.
func mergeableRAM(t *testing.T, qemu string, merge bool) bool {
	t.Helper()
	cmd := exec.Command(qemu, "-machine", "pc,accel=tcg", "-machine", ksm.QEMUMachineOption(merge),
		"-m", "64", "-S", "-nodefaults", "-display", "none", "-monitor", "none", "-serial", "none")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	smaps := "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/smaps"
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		f, err := os.Open(smaps)
		if err != nil {
			t.Fatal(err)
		}
		var size int
		ramSeen, mg := false, false
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "Size:"):
				size, _ = strconv.Atoi(strings.Fields(line)[1])
			case strings.HasPrefix(line, "VmFlags:"):
				if size >= 64*1024 && size < 80*1024 {
					ramSeen = true
					if strings.Contains(line, " mg") {
						mg = true
					}
				}
			}
		}
		f.Close()
		if ramSeen {
			return mg
		}
	}
	t.Fatal("QEMU mapped no 64 MiB guest RAM within 20 s")
	return false
}

// TestQEMUMemMerge checks that real QEMU honours QEMUMachineOption: guest
// RAM is mergeable by default-on and not with a ksm=0 guest's option.
func TestQEMUMemMerge(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		if os.Getenv("BERTH_TEST_ROOT") == "1" {
			t.Fatal("qemu-system-x86_64 is missing although make test installs it (deps/vm.debs): ", err)
		}
		t.Skip("needs qemu-system-x86_64 (make test installs it)")
	}
	if !mergeableRAM(t, qemu, true) {
		t.Error("with mem-merge=on, QEMU's guest RAM is not marked mergeable")
	}
	if mergeableRAM(t, qemu, false) {
		t.Error("with mem-merge=off (ksm=0), QEMU's guest RAM is marked mergeable")
	}
}
