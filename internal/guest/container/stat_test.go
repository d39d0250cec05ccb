package container_test

import (
	"os"
	"syscall"

	"github.com/berthhq/berth/internal/guest/container"
)

func statUID(fi os.FileInfo) int { return int(fi.Sys().(*syscall.Stat_t).Uid) }

func containerMAC(id, idx int) string { return container.MAC(id, idx) }
