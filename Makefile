# berth — build, run, test, benchmark. See README.md.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)

GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/berthhq/berth/internal/cli.Version=$(VERSION)
BIN     := bin/berth
DATA    ?= $(CURDIR)/.berth-data
LISTEN  ?= 127.0.0.1:8006

# Debian packages the tests use: one deps/AREA.debs file per feature area
# (one package per line, # comments), so areas never edit the same line.
TEST_DEBS := $(sort $(shell sed 's/\#.*//' deps/*.debs))
# Debian packages the tests unpack but never install (deps/*.unpack).
UNPACK_DEBS := $(sort $(shell cat deps/*.unpack 2>/dev/null | sed 's/\#.*//'))
UNPACK_DIR  ?= /var/cache/berth-test/unpacked

.PHONY: build run test test-short deps bench bench-net bench-boot lint docs clean bench-ksm bench-image bench-netboot-tftp bench-netboot-root bench-netboot-dhcp bench-netboot-pxe bench-ct bench-vm

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/berth

## run: build berth and run the daemon on an embedded store in $(DATA),
## printing the API URL and a fresh admin token.
run: build
	$(BIN) serve --data-dir '$(DATA)' --listen '$(LISTEN)' --init-token admin

## test: install missing Debian packages, then run every test (root-only
## tests included when run as root).
test: deps
	BERTH_TEST_ROOT=$$( [ "$$(id -u)" = 0 ] && echo 1 || echo 0 ) \
	  $(GO) test -race -timeout 40m -count=1 ./...

## test-short: the tests that need neither root nor packages.
test-short:
	$(GO) test -count=1 ./...

deps:
	@scripts/install-debs $(TEST_DEBS)
	@scripts/unpack-debs $(UNPACK_DIR) $(UNPACK_DEBS)

## bench-ksm: berth's KSM tuner beside Debian's ksmtuned on the host's real KSM
## (root; ~25 minutes; results in BENCHMARKS.md).
bench-ksm: deps
	$(GO) run ./tools/ksmbench -procs 8 -mib 256 -window 300s -rounds 2

## bench-image: berth image import beside GNU tar extraction of the same
## tarballs (busybox rootfs, 5000 small files), as a ratio (root; ~2 minutes).
bench-image: deps
	$(GO) test -run '^$$' -bench ImportVsTar -benchtime 5x -count 1 ./internal/image/

## bench-boot: berth boot refresh of 3 kernels onto 2 ESPs beside a naive
## full copy with the same mtools (time and bytes written; ratios printed).
bench-boot: deps
	set -o pipefail; $(GO) test -run '^$$' -bench BenchmarkRefresh -benchtime 3x -count 1 ./internal/esp/ | tee /tmp/berth-bench-boot.txt
	@awk '/^BenchmarkRefresh\// { split($$1, n, "/"); sub(/-[0-9]+$$/, "", n[2]); t[n[2]] = $$3 } \
	  END { printf "full copy time / berth time: initial %.2fx  upgrade %.2fx  no-op %.2fx\n", t["fullcopy-initial"] / t["berth-initial"], t["fullcopy-upgrade"] / t["berth-upgrade"], t["fullcopy-noop"] / t["berth-noop"] }' /tmp/berth-bench-boot.txt

## bench-netboot-tftp: TFTP downloads (100 MiB, blksize 512/1468/65464,
## windowsize) from berth beside tftpd-hpa, dnsmasq and atftpd with the same
## atftp client, and 200 concurrent clients; run as root in a private network
## namespace (its loopback only). tftpd-hpa and atftpd conflict as packages,
## so both are unpacked from their .debs instead of installed.
NETBOOT_PEERS ?= /var/cache/berth-test/netboot-peers
bench-netboot-tftp: deps
	@for p in tftpd-hpa atftpd; do test -d $(NETBOOT_PEERS)/$$p/usr/sbin || { \
	  rm -rf $(NETBOOT_PEERS)/dl && mkdir -p $(NETBOOT_PEERS)/dl && cd $(NETBOOT_PEERS)/dl && \
	  apt-get download $$p && dpkg-deb -x $${p}_*.deb $(NETBOOT_PEERS)/$$p && \
	  cd / && rm -rf $(NETBOOT_PEERS)/dl; } || exit 1; done
	$(GO) build -o bin/tftpbench ./tools/tftpbench
	unshare --net sh -c 'ip link set lo up && bin/tftpbench -size 100 -rounds 3 -peers $(NETBOOT_PEERS)'

## bench-netboot-dhcp: 2000 DHCP DORA exchanges from distinct MACs against
## berth's DHCP server and dnsmasq on a bridge in network namespaces (root).
bench-netboot-dhcp: deps
	$(GO) build -o bin/dhcpbench ./tools/dhcpbench
	bin/dhcpbench -n 2000 -c 32 -rounds 2

## bench-net: parse+validate+plan of a 2,000-interface file beside ifupdown2's
## ifquery, and a live change to one of 200 bridges in a network namespace
## beside ifupdown2's ifreload (untouched links checked for changes).
bench-net: deps
	$(GO) run ./tools/netbench -ifaces 2000 -bridges 200 -rounds 3

## bench-netboot-pxe: QEMU (TCG, Debian's iPXE ROM) PXE boot of a kernel and
## marker initramfs from berth (TFTP and HTTP) beside dnsmasq (DHCP + TFTP) (root).
bench-netboot-pxe: deps
	BERTH_TEST_ROOT=1 $(GO) test -run '^$$' -bench PXEBoot -benchtime 1x -timeout 30m ./internal/netboot/

## bench-netboot-root: a diskless client's sequential read of its root from
## berth's NBD server beside nfs-ganesha (NFSv4.1) serving the same image,
## read by the same QEMU TCG guest (Debian's kernel: nbd and nfs clients) on a
## bridge and tap in a private network namespace (root).
bench-netboot-root: deps
	$(GO) build -o bin/rootbench ./tools/rootbench
	unshare --net sh -c 'ip link set lo up && bin/rootbench -size 256 -rounds 3'

## bench: API read throughput and p99 latency beside a bare net/http handler.
bench: bench-ksm bench-image bench-boot bench-netboot-tftp bench-netboot-dhcp bench-netboot-pxe bench-net bench-ct bench-netboot-root bench-vm
	$(GO) run ./tools/apibench -duration 5s -rounds 3 -concurrency 32

## bench-vm: boot to marker of one berth image (busybox root + Debian
## kernel, disks made by berth) as a container, a UML guest and a QEMU VM
## (TCG without /dev/kvm), host memory per idle guest, and a fork/exec loop
## inside UML beside the host (root; see BENCHMARKS.md).
bench-vm: deps
	$(GO) run ./tools/vmbench -rounds 2 -forks 100

## bench-ct: containers beside Debian's LXC on the same busybox rootfs:
## start latency (median of 50), density and stopall of 500 (root).
bench-ct: build deps
	$(GO) run ./tools/ctbench -berth $(BIN) -n 50 -density 500

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

## docs: regenerate the CLI reference and the OpenAPI document.
docs:
	$(GO) run ./cmd/berth docs cli > docs/cli.md
	$(GO) run ./cmd/berth docs openapi > docs/api/openapi.json

clean:
	rm -rf bin
