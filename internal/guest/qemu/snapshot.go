package qemu

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/berthhq/berth/api"
	"github.com/berthhq/berth/internal/guest"
)

var snapNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]{0,39}$`)

// ValidSnapshotName checks a snapshot name.
func ValidSnapshotName(name string) error {
	if !snapNameRE.MatchString(name) {
		return &guest.ValidationError{Fields: map[string]string{"name": fmt.Sprintf("%q: a snapshot name is a letter followed by up to 39 letters, digits, '_', '.' or '-'", name)}}
	}
	return nil
}

func (d *Driver) qcow2Disks(cfg api.Guest) ([]Disk, string, error) {
	s, err := d.spec(cfg)
	if err != nil {
		return nil, "", err
	}
	var out []Disk
	for _, dk := range s.Disks {
		if dk.Format == "qcow2" {
			out = append(out, dk)
		}
	}
	if len(out) == 0 {
		return nil, "", fmt.Errorf("VM %d: %w", cfg.ID, errNoQcow2)
	}
	return out, "", nil
}

// Snapshots lists the snapshots found on the VM's qcow2 disks.
func (d *Driver) Snapshots(ctx context.Context, cfg api.Guest) ([]api.VMSnapshot, error) {
	disks, _, err := d.qcow2Disks(cfg)
	if err != nil {
		return nil, err
	}
	byName := map[string]*api.VMSnapshot{}
	var names []string
	for _, dk := range disks {
		out, err := exec.CommandContext(ctx, d.QemuImg, "info", "-U", "--output=json", d.diskPath(cfg.ID, dk)).Output()
		if err != nil {
			return nil, fmt.Errorf("%s: qemu-img info: %w", dk.Key, err)
		}
		var info struct {
			Snapshots []struct {
				Name    string `json:"name"`
				DateSec int64  `json:"date-sec"`
			} `json:"snapshots"`
		}
		if err := json.Unmarshal(out, &info); err != nil {
			return nil, fmt.Errorf("%s: qemu-img info: %w", dk.Key, err)
		}
		for _, sn := range info.Snapshots {
			s, ok := byName[sn.Name]
			if !ok {
				s = &api.VMSnapshot{Name: sn.Name, Date: sn.DateSec}
				byName[sn.Name] = s
				names = append(names, sn.Name)
			}
			s.Disks = append(s.Disks, dk.Key)
		}
	}
	res := make([]api.VMSnapshot, 0, len(names))
	for _, n := range names {
		res = append(res, *byName[n])
	}
	slices.SortFunc(res, func(a, b api.VMSnapshot) int { return int(a.Date - b.Date) })
	return res, nil
}

// SnapshotCreate takes snapshot name of every qcow2 disk: with the VM
// running through QEMU (savevm, RAM included), stopped through qemu-img.
func (d *Driver) SnapshotCreate(ctx context.Context, cfg api.Guest, name string, log guest.Logger) error {
	return d.snapshotOp(ctx, cfg, name, "savevm", "-c", log)
}

// SnapshotRollback returns every qcow2 disk to snapshot name.
func (d *Driver) SnapshotRollback(ctx context.Context, cfg api.Guest, name string, log guest.Logger) error {
	return d.snapshotOp(ctx, cfg, name, "loadvm", "-a", log)
}

// SnapshotDelete removes snapshot name from every qcow2 disk.
func (d *Driver) SnapshotDelete(ctx context.Context, cfg api.Guest, name string, log guest.Logger) error {
	return d.snapshotOp(ctx, cfg, name, "delvm", "-d", log)
}

func (d *Driver) snapshotOp(ctx context.Context, cfg api.Guest, name, hmp, imgFlag string, log guest.Logger) error {
	if err := ValidSnapshotName(name); err != nil {
		return err
	}
	disks, _, err := d.qcow2Disks(cfg)
	if err != nil {
		return err
	}
	if hmp != "savevm" {
		have, err := d.Snapshots(ctx, cfg)
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(have, func(s api.VMSnapshot) bool { return s.Name == name }) {
			return fmt.Errorf("VM %d has no snapshot %q", cfg.ID, name)
		}
	}
	if d.pid(cfg.ID) != 0 {
		c, err := d.monitor(ctx, cfg.ID)
		if err != nil {
			return err
		}
		defer c.Close()
		cctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		defer cancel()
		var out string
		if err := c.Execute(cctx, "human-monitor-command", map[string]string{"command-line": hmp + " " + name}, &out); err != nil {
			return err
		}
		if out = strings.TrimSpace(out); out != "" {
			return fmt.Errorf("%s %s: %s", hmp, name, out)
		}
		log.Printf("%s %s done on the running VM", hmp, name)
		return nil
	}
	for _, dk := range disks {
		if out, err := exec.CommandContext(ctx, d.QemuImg, "snapshot", imgFlag, name, d.diskPath(cfg.ID, dk)).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: qemu-img snapshot %s %s: %w: %s", dk.Key, imgFlag, name, err, strings.TrimSpace(string(out)))
		}
		log.Printf("%s: qemu-img snapshot %s %s", dk.Key, imgFlag, name)
	}
	return nil
}
