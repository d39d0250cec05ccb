package tftp

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// fileKey identifies one version of a file: a file replaced (new inode),
// grown, shrunk or rewritten (new mtime or ctime) gets a new key, so a
// cached mapping is never served for a file that changed.
type fileKey struct {
	dev, ino     uint64
	size         int64
	mtime, ctime syscall.Timespec
}

// content is a file's bytes as the transfers see them: a read-only shared
// mapping of the file (page cache, no copy), or the bytes read into memory
// when the file system cannot map it. Transfers send DATA packets straight
// from it with sendmmsg, so a block is never copied in user space. Go code
// never reads a mapping (only the kernel does, in sendmmsg), so a file
// truncated under a transfer fails that send with EFAULT instead of
// raising SIGBUS.
type content struct {
	key    fileKey
	data   []byte
	mapped bool
	refs   int    // transfers using it
	used   uint64 // fileCache.clock at the last release, for eviction
}

// fileCache shares one content per file version among the transfers that
// send it, and keeps a few idle ones for the next clients (many machines
// boot the same kernel one after another).
type fileCache struct {
	mu    sync.Mutex
	files map[fileKey]*content
	idle  int // contents with refs == 0
	clock uint64
}

// maxIdleFiles bounds the idle mappings kept for later transfers.
const maxIdleFiles = 16

// maxUnmapped is the largest file read into memory when it cannot be
// mapped.
const maxUnmapped = 256 << 20

// get returns the content of the open regular file f, mapping it on first
// use. The caller must call put when done and may close f at once.
func (c *fileCache) get(f *os.File, fi os.FileInfo) (*content, error) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, fmt.Errorf("stat %s: no system information", f.Name())
	}
	key := fileKey{dev: uint64(st.Dev), ino: st.Ino, size: st.Size, mtime: st.Mtim, ctime: st.Ctim}
	c.mu.Lock()
	if ct := c.files[key]; ct != nil {
		if ct.refs == 0 {
			c.idle--
		}
		ct.refs++
		c.mu.Unlock()
		return ct, nil
	}
	c.mu.Unlock()

	ct := &content{key: key, refs: 1}
	if key.size > 0 {
		data, err := unix.Mmap(int(f.Fd()), 0, int(key.size), unix.PROT_READ, unix.MAP_SHARED)
		if err == nil {
			ct.data, ct.mapped = data, true
		} else {
			if key.size > maxUnmapped {
				return nil, fmt.Errorf("map %s: %w (and at %d MiB it is too large to read into memory)", f.Name(), err, key.size>>20)
			}
			data := make([]byte, key.size)
			if _, err := io.ReadFull(io.NewSectionReader(f, 0, key.size), data); err != nil {
				return nil, fmt.Errorf("read %s: %w", f.Name(), err)
			}
			ct.data = data
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.files == nil {
		c.files = map[fileKey]*content{}
	}
	if other := c.files[key]; other != nil {
		// Another transfer mapped the same file meanwhile; share its.
		if other.refs == 0 {
			c.idle--
		}
		other.refs++
		ct.release()
		return other, nil
	}
	c.files[key] = ct
	return ct, nil
}

// put releases a content returned by get. Idle contents beyond
// maxIdleFiles are unmapped, oldest first.
func (c *fileCache) put(ct *content) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ct.refs--
	if ct.refs > 0 {
		return
	}
	c.clock++
	ct.used = c.clock
	c.idle++
	for c.idle > maxIdleFiles {
		var oldest *content
		for _, o := range c.files {
			if o.refs == 0 && (oldest == nil || o.used < oldest.used) {
				oldest = o
			}
		}
		delete(c.files, oldest.key)
		c.idle--
		oldest.release()
	}
}

// close unmaps the idle contents; contents still in use are unmapped by
// their last put.
func (c *fileCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, ct := range c.files {
		if ct.refs == 0 {
			delete(c.files, k)
			c.idle--
			ct.release()
		}
	}
}

// cached reports how many file versions are held (for tests).
func (c *fileCache) cached() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.files)
}

func (ct *content) release() {
	if ct.mapped {
		_ = unix.Munmap(ct.data)
	}
	ct.data, ct.mapped = nil, false
}

// errShrunk is returned when a file became shorter while it was sent.
var errShrunk = errors.New("the file shrank while it was being sent")
