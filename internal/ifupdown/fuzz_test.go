package ifupdown

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzRoundTrip checks that any input the parser accepts is written back
// byte for byte, and that validation and the derived views never panic.
func FuzzRoundTrip(f *testing.F) {
	files, _ := filepath.Glob("testdata/seeds/*.interfaces")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("iface a\\\n inet static\r\n\taddress 1.2.3.4/8\\"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fl, err := Parse("interfaces", data)
		if err != nil {
			return
		}
		if got := fl.Bytes(); string(got) != string(data) {
			t.Fatalf("round trip changed %q into %q", data, got)
		}
		c := FromFile(fl)
		_ = Validate(c, nil)
		c.Order(c.Up())
		for _, i := range c.Ifaces {
			i.Addresses()
			i.VLAN()
		}
	})
}

// FuzzEdit checks that edits keep the file parseable and that a set
// option reads back.
func FuzzEdit(f *testing.F) {
	files, _ := filepath.Glob("testdata/seeds/*.interfaces")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b, "mtu", "9000")
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, key, value string) {
		fl, err := Parse("interfaces", data)
		if err != nil || !ValidKey(key) || !ValidValue(value) {
			return
		}
		c := FromFile(fl)
		if len(c.Ifaces) == 0 {
			return
		}
		name := c.Ifaces[0].Name
		s := fl.Ifaces(name)[0]
		fl.SetOption(s, key, value)
		g, err := Parse("interfaces", fl.Bytes())
		if err != nil {
			t.Fatalf("edited file does not parse: %v\n%s", err, fl.Bytes())
		}
		got := ""
		for _, o := range g.Ifaces(name)[0].Options() {
			if o.Key == key {
				got = o.Value
			}
		}
		if got != value {
			t.Fatalf("%s = %q after setting %q\n%s", key, got, value, fl.Bytes())
		}
		g.RemoveIface(name)
		if _, err := Parse("interfaces", g.Bytes()); err != nil {
			t.Fatalf("file after removing %s does not parse: %v\n%s", name, err, g.Bytes())
		}
	})
}
