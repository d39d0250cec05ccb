package container_test

import (
	"os"
	"syscall"
)

func statUID(fi os.FileInfo) int { return int(fi.Sys().(*syscall.Stat_t).Uid) }
