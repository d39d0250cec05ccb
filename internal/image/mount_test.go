package image

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseMountsUnder(t *testing.T) {
	mi := `22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
90 22 0:5 / /data/images/.tmp-x-1/rootfs/proc rw - proc proc rw
91 90 0:6 / /data/images/.tmp-x-1/rootfs/proc/sys/fs/binfmt_misc rw - binfmt_misc x rw
92 22 7:0 / /data/images/.tmp-x-10/mnt rw - ext4 /dev/loop0 rw
93 22 7:1 / /data/images/.tmp-x-1/with\040space rw - ext4 /dev/loop1 rw
`
	got := parseMountsUnder(mi, "/data/images/.tmp-x-1/")
	want := []string{"/data/images/.tmp-x-1/rootfs/proc/sys/fs/binfmt_misc", "/data/images/.tmp-x-1/rootfs/proc", "/data/images/.tmp-x-1/with space"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("mounts mismatch (-want +got):\n%s", diff)
	}
}
