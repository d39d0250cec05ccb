package guest

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/berthhq/berth/api"
)

// MaxStartupSeconds bounds Startup.Up and Startup.Down (one day).
const MaxStartupSeconds = 86400

// ParseStartup parses the Proxmox text form "order=N,up=S,down=S". Every
// part is optional and the empty string is the zero Startup. Order must be
// at least 1 when given (omit it for "no order"); up and down are seconds
// from 0 to MaxStartupSeconds. Unknown or repeated keys are errors.
func ParseStartup(s string) (api.Startup, error) {
	var st api.Startup
	if strings.TrimSpace(s) == "" {
		return st, nil
	}
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		k, v, ok := strings.Cut(part, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" {
			return api.Startup{}, fmt.Errorf("startup %q: %q is not key=value (want order=N,up=S,down=S)", s, part)
		}
		if seen[k] {
			return api.Startup{}, fmt.Errorf("startup %q: %s given twice", s, k)
		}
		seen[k] = true
		n, err := strconv.Atoi(v)
		if err != nil {
			return api.Startup{}, fmt.Errorf("startup %q: %s=%q is not an integer", s, k, v)
		}
		switch k {
		case "order":
			st.Order = n
		case "up":
			st.Up = n
		case "down":
			st.Down = n
		default:
			return api.Startup{}, fmt.Errorf("startup %q: unknown key %q (want order, up or down)", s, k)
		}
	}
	if msg := checkStartup(st, seen["order"]); msg != "" {
		return api.Startup{}, fmt.Errorf("startup %q: %s", s, msg)
	}
	return st, nil
}

// checkStartup returns what is wrong with st, or "". orderGiven says the
// order was spelled out, in which case 0 is rejected too.
func checkStartup(st api.Startup, orderGiven bool) string {
	switch {
	case st.Order < 0 || (orderGiven && st.Order == 0):
		return fmt.Sprintf("order %d must be at least 1 (omit it to start after the ordered guests)", st.Order)
	case st.Up < 0 || st.Up > MaxStartupSeconds:
		return fmt.Sprintf("up %d must be 0 to %d seconds", st.Up, MaxStartupSeconds)
	case st.Down < 0 || st.Down > MaxStartupSeconds:
		return fmt.Sprintf("down %d must be 0 to %d seconds", st.Down, MaxStartupSeconds)
	}
	return ""
}

// FormatStartup returns the text form of st, leaving out zero parts, so the
// zero Startup formats as "". ParseStartup(FormatStartup(st)) == st for
// every valid st.
func FormatStartup(st api.Startup) string {
	var parts []string
	if st.Order != 0 {
		parts = append(parts, "order="+strconv.Itoa(st.Order))
	}
	if st.Up != 0 {
		parts = append(parts, "up="+strconv.Itoa(st.Up))
	}
	if st.Down != 0 {
		parts = append(parts, "down="+strconv.Itoa(st.Down))
	}
	return strings.Join(parts, ",")
}

// compareStart orders guests for starting: those with a startup order
// first, by ascending order, then those without; ties by ascending ID.
func compareStart(a, b api.Guest) int {
	ao, bo := a.Startup.Order > 0, b.Startup.Order > 0
	switch {
	case ao && !bo:
		return -1
	case !ao && bo:
		return 1
	case ao && bo && a.Startup.Order != b.Startup.Order:
		return cmp.Compare(a.Startup.Order, b.Startup.Order)
	}
	return cmp.Compare(a.ID, b.ID)
}

// StartOrder returns the onboot guests of gs in the order a node start
// starts them: by ascending startup order, guests without an order after
// those with one, ties by ascending ID. gs is not modified.
func StartOrder(gs []api.Guest) []api.Guest {
	out := make([]api.Guest, 0, len(gs))
	for _, g := range gs {
		if g.OnBoot {
			out = append(out, g)
		}
	}
	slices.SortStableFunc(out, compareStart)
	return out
}

// sortedForStart returns all of gs in start order, onboot or not.
func sortedForStart(gs []api.Guest) []api.Guest {
	out := slices.Clone(gs)
	slices.SortStableFunc(out, compareStart)
	return out
}

// StopOrder returns all guests of gs, onboot or not, in the order a node
// shutdown stops them: the exact reverse of start order. gs is not
// modified.
func StopOrder(gs []api.Guest) []api.Guest {
	out := sortedForStart(gs)
	slices.Reverse(out)
	return out
}
