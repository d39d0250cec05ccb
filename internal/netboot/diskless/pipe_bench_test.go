package diskless

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"path/filepath"
	"testing"
)

// BenchmarkPipelinedRead reads the whole export with depth requests of
// 256 KiB in flight, as the kernel's nbd driver does.
func BenchmarkPipelinedRead(b *testing.B) {
	for _, depth := range []int{1, 16} {
		b.Run(map[int]string{1: "depth1", 16: "depth16"}[depth], func(b *testing.B) {
			base, _ := makeBase(b, 16<<20)
			_, addr := startServer(b, Config{ClientsDir: filepath.Join(b.TempDir(), "c"),
				Image: func(net.HardwareAddr) (string, bool) { return base, true }})
			c, size := dialExport(b, addr, "52-54-00-00-00-01")
			const req = 256 << 10
			b.SetBytes(size)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				w := bufio.NewWriter(c)
				r := bufio.NewReaderSize(c, 1<<20)
				sent, got := int64(0), int64(0)
				hdr := make([]byte, 28)
				rep := make([]byte, 16)
				data := make([]byte, req)
				inflight := 0
				for got < size {
					for inflight < depth && sent < size {
						binary.BigEndian.PutUint32(hdr[0:], requestMagic)
						binary.BigEndian.PutUint16(hdr[6:], cmdRead)
						binary.BigEndian.PutUint64(hdr[16:], uint64(sent))
						binary.BigEndian.PutUint32(hdr[24:], req)
						w.Write(hdr)
						sent += req
						inflight++
					}
					w.Flush()
					if _, err := io.ReadFull(r, rep); err != nil {
						b.Fatal(err)
					}
					if _, err := io.ReadFull(r, data); err != nil {
						b.Fatal(err)
					}
					got += req
					inflight--
				}
			}
		})
	}
}

// dialExport does the fixed-newstyle handshake with NBD_OPT_GO.
func dialExport(b *testing.B, addr, name string) (net.Conn, int64) {
	b.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	hello := make([]byte, 18)
	io.ReadFull(c, hello)
	binary.Write(c, binary.BigEndian, uint32(flagFixedNewstyle|flagNoZeroes))
	opt := binary.BigEndian.AppendUint64(nil, optMagic)
	opt = binary.BigEndian.AppendUint32(opt, optGo)
	opt = binary.BigEndian.AppendUint32(opt, uint32(4+len(name)+2))
	opt = binary.BigEndian.AppendUint32(opt, uint32(len(name)))
	opt = append(opt, name...)
	opt = append(opt, 0, 0)
	c.Write(opt)
	var size int64
	for {
		h := make([]byte, 20)
		if _, err := io.ReadFull(c, h); err != nil {
			b.Fatal(err)
		}
		data := make([]byte, binary.BigEndian.Uint32(h[16:]))
		io.ReadFull(c, data)
		switch binary.BigEndian.Uint32(h[12:]) {
		case repInfo:
			size = int64(binary.BigEndian.Uint64(data[2:]))
		case repAck:
			return c, size
		default:
			b.Fatalf("option reply %#x", binary.BigEndian.Uint32(h[12:]))
		}
	}
}
