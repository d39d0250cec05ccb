package api

// KSM modes: who decides whether Kernel Samepage Merging runs.
const (
	// KSMModeAuto lets berth's tuner start KSM when memory runs short,
	// adapt its speed and stop it when it is no longer needed.
	KSMModeAuto = "auto"
	// KSMModeOn keeps KSM running at all times (`berth ksm enable`); the
	// tuner only adapts its speed.
	KSMModeOn = "on"
	// KSMModeOff keeps KSM stopped (`berth ksm disable`); the tuner does
	// nothing and the daemon stops KSM again at every start.
	KSMModeOff = "off"
)

// KSMStatus is the data of GET /node/ksm: the kernel's KSM counters from
// /sys/kernel/mm/ksm, the node's KSM mode, the tuner's last decision and
// the processes with merged pages.
type KSMStatus struct {
	// Supported is false when the kernel has no KSM (no
	// /sys/kernel/mm/ksm); all counters are then zero.
	Supported bool `json:"supported"`
	// Run is 0 (stopped), 1 (merging) or 2 (stopped after unmerging
	// everything), as in /sys/kernel/mm/ksm/run.
	Run int `json:"run"`
	// State is Run in words: "stopped", "running" or "unmerged".
	State string `json:"state"`
	// Mode is the node's KSM mode: "auto", "on" or "off".
	Mode string `json:"mode"`
	// PagesShared is the number of shared (deduplicated) physical pages.
	PagesShared uint64 `json:"pages-shared"`
	// PagesSharing is how many more mappings use those shared pages:
	// the number of pages saved.
	PagesSharing uint64 `json:"pages-sharing"`
	// PagesUnshared is the number of pages unique but repeatedly checked.
	PagesUnshared uint64 `json:"pages-unshared"`
	// PagesVolatile is the number of pages changing too fast to merge.
	PagesVolatile uint64 `json:"pages-volatile"`
	// FullScans is how many times all mergeable areas were scanned.
	FullScans uint64 `json:"full-scans"`
	// GeneralProfit is the kernel's estimate of bytes saved minus KSM's
	// own metadata, when the kernel reports it (6.1+).
	GeneralProfit *int64 `json:"general-profit,omitempty"`
	// PagesToScan and SleepMillisecs are ksmd's current speed: pages
	// scanned per wake-up and the pause between wake-ups.
	PagesToScan    uint64 `json:"pages-to-scan"`
	SleepMillisecs uint64 `json:"sleep-millisecs"`
	// Saved is PagesSharing times the page size, in bytes.
	Saved uint64 `json:"saved"`
	// Tuner is the built-in tuner's state.
	Tuner KSMTunerState `json:"tuner"`
	// Processes lists the processes with merged pages (or, for guests,
	// a mergeable memory), guests first.
	Processes []KSMProcess `json:"processes"`
}

// KSMTunerState tells what the tuner last did and why.
type KSMTunerState struct {
	// Active is true while the tuner loop runs in the daemon.
	Active bool `json:"active"`
	// Started is true when KSM runs because the tuner started it.
	Started bool `json:"started"`
	// Time is when the tuner last decided, in Unix seconds (0: never).
	Time int64 `json:"time,omitempty"`
	// Action is the last decision: start, stop, boost, decay, hold,
	// converged, idle (ksmd stopped after merging converged; merged pages
	// stay), resume (scanning again after idle) or none.
	Action string `json:"action,omitempty"`
	// Reason explains Action with the figures it was based on.
	Reason string `json:"reason,omitempty"`
}

// KSMProcess is one process's share in KSM, from /proc/PID/ksm_stat.
type KSMProcess struct {
	PID int `json:"pid"`
	// Command is the process name (/proc/PID/comm).
	Command string `json:"command"`
	// Guest is the ID of the guest whose main process this is, 0 when
	// the process is not a guest.
	Guest int `json:"guest,omitempty"`
	// GuestKind is the kind of that guest.
	GuestKind GuestKind `json:"guest-kind,omitempty"`
	// GuestKSM is that guest's KSM choice from its configuration: "on"
	// (ksm=1), "off" (ksm=0: its memory is never merged) or "default"
	// (VMs mergeable; containers only what programs mark). It applies
	// from the guest's next start, and every guest starts as "off"
	// while the node's KSM mode is off.
	GuestKSM string `json:"guest-ksm,omitempty"`
	// MergingPages is how many of the process's pages are merged
	// (/proc/PID/ksm_merging_pages).
	MergingPages uint64 `json:"merging-pages"`
	// Profit is the kernel's estimate of bytes this process saves.
	Profit int64 `json:"profit"`
	// MergeAny is true when the whole process is mergeable
	// (prctl PR_SET_MEMORY_MERGE), not only areas it marked.
	MergeAny bool `json:"merge-any"`
}

// KSMConfig is the node's KSM and tuner configuration (GET and PUT
// /node/ksm/config). The tuner's knobs are those of Debian's ksmtuned, with
// its defaults except where noted.
type KSMConfig struct {
	// Mode is "auto" (the tuner decides), "on" or "off". `berth ksm
	// enable` and `disable` set it.
	Mode string `json:"mode"`
	// MonitorInterval is the seconds between tuner decisions (ksmtuned:
	// KSM_MONITOR_INTERVAL, 60; berth: 10, as reading the counters is
	// cheap).
	MonitorInterval int `json:"monitor-interval"`
	// SleepMsec is ksmd's pause between scans on a 16 GiB host, scaled
	// by the host's memory and at least 10 (KSM_SLEEP_MSEC).
	SleepMsec int `json:"sleep-msec"`
	// NpagesBoost is added to pages_to_scan while memory is short or
	// merging progresses (KSM_NPAGES_BOOST).
	NpagesBoost int `json:"npages-boost"`
	// NpagesDecay is added (it is negative) when memory is not short and
	// merging has stalled (KSM_NPAGES_DECAY).
	NpagesDecay int `json:"npages-decay"`
	// NpagesMin and NpagesMax bound pages_to_scan (KSM_NPAGES_MIN,
	// KSM_NPAGES_MAX; berth's max is 10000, bounded by MaxCPU).
	NpagesMin int `json:"npages-min"`
	NpagesMax int `json:"npages-max"`
	// ThresCoef is the percentage of memory that must stay available;
	// below it KSM runs (KSM_THRES_COEF).
	ThresCoef int `json:"thres-coef"`
	// ThresConst is the least threshold in KiB (KSM_THRES_CONST).
	ThresConst int `json:"thres-const"`
	// MaxCPU caps ksmd's CPU use in percent of one CPU: above it the
	// tuner does not boost (berth only; 0 means no cap).
	MaxCPU int `json:"max-cpu"`
	// Digest is the digest of the stored configuration; on PUT it
	// guards against concurrent changes.
	Digest string `json:"digest,omitempty"`
}

// KSMConfigUpdate is the body of PUT /node/ksm/config; nil fields stay,
// names in Delete return to their defaults.
type KSMConfigUpdate struct {
	Mode            *string  `json:"mode,omitempty"`
	MonitorInterval *int     `json:"monitor-interval,omitempty"`
	SleepMsec       *int     `json:"sleep-msec,omitempty"`
	NpagesBoost     *int     `json:"npages-boost,omitempty"`
	NpagesDecay     *int     `json:"npages-decay,omitempty"`
	NpagesMin       *int     `json:"npages-min,omitempty"`
	NpagesMax       *int     `json:"npages-max,omitempty"`
	ThresCoef       *int     `json:"thres-coef,omitempty"`
	ThresConst      *int     `json:"thres-const,omitempty"`
	MaxCPU          *int     `json:"max-cpu,omitempty"`
	Delete          []string `json:"delete,omitempty"`
	// Digest, when set, must match the stored configuration's digest.
	Digest string `json:"digest,omitempty"`
}

// KSMDisableRequest is the optional body of POST /node/ksm/disable.
type KSMDisableRequest struct {
	// Unmerge also breaks up every merged page (run=2), giving each
	// process its own copy again.
	Unmerge bool `json:"unmerge,omitempty"`
}
