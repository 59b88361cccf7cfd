# ringman: `make run` starts a node, `make test` runs every test (installing
# what the tests need with apt-get when it is missing), `make bench` measures.

GO      ?= go
BIN     := bin/ringman
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)

# Flags for `make run`: a single node with one example instance, data in
# ./ringman-data, gossip on loopback only (7945: clear of make demo's and the
# README's three nodes, 7946-7948).
RUN_FLAGS ?= --name local --data-dir ./ringman-data --bind 127.0.0.1:7945 --service web=127.0.0.1:8080

# apt-get as root, or through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends

.PHONY: build run demo demo-stop test test-deps deps-redis-cli deps-curl deps-nginx deps-nginx-dev deps-faults deps-ui deps-systemd nginx-module test-ui faults fuzz bench bench-deps bench-callgrind scale lint clean

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/ringman

run: build
	./$(BIN) serve $(RUN_FLAGS)

# Three ringman nodes, three demo backends and nginx (nginx/lua.conf) on local
# ports, state in .demo/; Ctrl-C or `make demo-stop` stops them. Ports: see
# nginx/demo.sh (DEMO_PORT=8080, ...). Installs only nginx, its Lua module,
# libxxhash0 and curl, when missing.
demo: deps-nginx deps-curl build
	./nginx/demo.sh

demo-stop:
	./nginx/demo.sh stop

# Dependencies, each installed with apt-get when missing; `test-deps` is all
# of them, what `make test` needs.
test-deps: deps-redis-cli deps-curl deps-nginx deps-faults deps-ui deps-systemd nginx-module

# redis-cli: the wire-compatibility tests and the README's commands.
deps-redis-cli:
	@command -v redis-cli >/dev/null || { $(SUDO) apt-get update -qq && $(APT_INSTALL) redis-tools; }

# curl: test/e2e, the demo and the README's commands.
deps-curl:
	@command -v curl >/dev/null || { $(SUDO) apt-get update -qq && $(APT_INSTALL) curl ca-certificates; }

# Debian's nginx and its Lua module (test/nginx, the demo; they bring ndk,
# lua-resty-core and lua-resty-lrucache, without which nginx refuses to
# start). nginx lives in /usr/sbin, which is not in every user's PATH.
# ringman.lua hashes keys with XXH64 from libxxhash0 (apt itself depends on it).
deps-nginx:
	@{ command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; } && [ -f /usr/lib/nginx/modules/ngx_http_lua_module.so ] || { $(SUDO) apt-get update -qq && $(APT_INSTALL) nginx libnginx-mod-http-lua; }
	@{ ldconfig -p 2>/dev/null || /sbin/ldconfig -p; } | grep -q 'libxxhash.so.0 ' || { $(SUDO) apt-get update -qq && $(APT_INSTALL) libxxhash0; }

# The native module's build needs Debian's nginx headers and configure
# (nginx-dev, for the installed nginx's exact version and flags) and
# xxhash.h (libxxhash-dev; compiled in, so nothing is needed at run time).
deps-nginx-dev:
	@[ -x /usr/share/nginx/src/configure ] && [ -f /usr/include/xxhash.h ] || { $(SUDO) apt-get update -qq && $(APT_INSTALL) nginx-dev libxxhash-dev; }

# nginx/module as a dynamic module for the installed nginx:
# bin/ngx_http_ringman_module.so, for `load_module` (nginx/module.conf).
# Debian's configure flags (conf_flags, --with-compat among them) make it
# loadable by Debian's nginx binary; conf_flags leaves out the compiler
# options, so they are taken from `nginx -V` (Debian's -O2 and hardening):
# the module is compiled as the nginx it runs in. Built in
# bin/nginx-module-build/, and again only when a source file changed.
NGINX_MODULE := bin/ngx_http_ringman_module.so
NGINX_MODULE_BUILD := bin/nginx-module-build
NGINX_MODULE_SRCS := $(wildcard nginx/module/*.c nginx/module/*.h) nginx/module/config
NGINX_CC_OPT = $(shell n=$$(command -v nginx || echo /usr/sbin/nginx); $$n -V 2>&1 | sed -n "s/.*--with-cc-opt='\([^']*\)'.*/\1/p" | sed 's/ *-ffile-prefix-map=[^ ]*//')

# $(call nginx-module-recipe,BUILD_DIR,MAKE_ARGS) configures nginx's
# sources in BUILD_DIR with the module, builds it with MAKE_ARGS added to
# objs/Makefile's, and puts it at the target.
define nginx-module-recipe
	@rm -rf $(1) && mkdir -p bin && cp -r /usr/share/nginx/src $(1)
	cd $(1) && bash -c '. ./conf_flags && ./configure "$${NGX_CONF_FLAGS[@]}" --with-cc-opt="$(NGINX_CC_OPT)" --add-dynamic-module=$(CURDIR)/nginx/module' >configure.log 2>&1 || { tail -20 configure.log; exit 1; }
	$(MAKE) -C $(1) -f objs/Makefile modules $(2) >/dev/null
	@# A rename, not a write over it: a running nginx has the old file mapped.
	cp $(1)/objs/ngx_http_ringman_module.so $@.tmp && mv $@.tmp $@
endef

nginx-module: $(NGINX_MODULE)

$(NGINX_MODULE): $(NGINX_MODULE_SRCS) | deps-nginx deps-nginx-dev
	$(call nginx-module-recipe,$(NGINX_MODULE_BUILD))

# The module under AddressSanitizer and UndefinedBehaviorSanitizer, for
# test-nginx-asan: bin/ngx_http_ringman_module.asan.so, built apart in
# bin/nginx-module-asan-build/ with the same configure and warnings (the
# CFLAGS configure wrote, plus SANITIZE). Only the module is instrumented:
# Debian's nginx must start with libasan preloaded (LIBASAN) to load it.
NGINX_MODULE_ASAN := bin/ngx_http_ringman_module.asan.so
NGINX_MODULE_ASAN_BUILD := bin/nginx-module-asan-build
SANITIZE := -fsanitize=address,undefined -fno-omit-frame-pointer
LIBASAN = $(shell $(CC) -print-file-name=libasan.so)

nginx-module-asan: $(NGINX_MODULE_ASAN)

$(NGINX_MODULE_ASAN): $(NGINX_MODULE_SRCS) | deps-nginx deps-nginx-dev
	$(call nginx-module-recipe,$(NGINX_MODULE_ASAN_BUILD),CFLAGS="$$(sed -n 's/^CFLAGS = *//p' $(NGINX_MODULE_ASAN_BUILD)/objs/Makefile) $(SANITIZE)" LINK='$$(CC) $(SANITIZE)')

# The native module's tests (TestModule*, and nginx -t of its configs) with
# the sanitized module: nginx runs with libasan in LD_PRELOAD, and a
# sanitizer report from any nginx process fails the test that ran it (see
# test/nginxrun's Env). 13-27 s on a shared 2-core machine (10 s of it to
# rebuild the module after a change), so `make test` runs it too.
test-nginx-asan: nginx-module-asan
	RINGMAN_NGINX_MODULE=$(CURDIR)/$(NGINX_MODULE_ASAN) RINGMAN_NGINX_PRELOAD=$(LIBASAN) \
		$(GO) test -count=1 -timeout 10m -run 'TestModule|TestConfigsSyntax' -v ./test/nginx/

# test/faults: network namespaces and nftables (ip and nft live in /usr/sbin).
deps-faults:
	@{ command -v ip || [ -x /usr/sbin/ip ]; } >/dev/null && { command -v nft || [ -x /usr/sbin/nft ]; } >/dev/null || { $(SUDO) apt-get update -qq && $(APT_INSTALL) iproute2 nftables; }

# test/ui drives Debian's chromium headless for the status page.
deps-ui:
	@command -v chromium >/dev/null || [ -x /usr/bin/chromium ] || { $(SUDO) apt-get update -qq && $(APT_INSTALL) chromium; }

# test/dist runs systemd-analyze verify on dist/systemd/ringman.service.
deps-systemd:
	@command -v systemd-analyze >/dev/null || { $(SUDO) apt-get update -qq && $(APT_INSTALL) systemd; }

test: test-deps
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...
	@# ring's 1,000-instance checks skip under -race (~15 s per ring there): run them plain.
	$(GO) test -count=1 ./ring/
	@# The allocation checks of the lookup path skip under -race (its instrumentation allocates).
	$(GO) test -count=1 -run 'DoesNotAllocate|NoAllocs|Alloc' ./redisapi/ ./router/
	@# A cluster of 50 nodes in one process starves under -race: run it plain.
	$(GO) test -count=1 -run 'TestLargeClusters' ./discovery/
	$(MAKE) --no-print-directory fuzz FUZZTIME=5s
	$(MAKE) --no-print-directory test-nginx-asan

# The fault suite (test/faults): root only (network namespaces, nftables);
# regenerates docs/RELIABILITY.md. About 3 minutes; `make test` runs it too.
faults: deps-faults build
	RINGMAN_BIN=$(CURDIR)/$(BIN) RINGMAN_FAULTS_REPORT=docs/RELIABILITY.md $(GO) test -count=1 -timeout 15m -run 'TestFaults|TestLabSweep' -v ./test/faults/

# The status page in headless Chromium; screenshots in ./artifacts.
test-ui: deps-ui
	RINGMAN_ARTIFACTS=$(CURDIR)/artifacts $(GO) test -race -count=1 -run TestStatusPage -v ./test/ui/

# Every fuzz target (a func Fuzz... in a _test.go file) for FUZZTIME each,
# starting from its seed corpus in testdata/fuzz/. `go test -fuzz` takes one
# target of one package per run, hence the loops. An input that fails is
# written to testdata/fuzz/<FuzzName>/: commit it with the fix.
FUZZTIME ?= 10s

fuzz:
	@set -e; for file in $$(grep -rl --include='*_test.go' '^func Fuzz' . | sort); do \
		pkg=$$(dirname $$file); \
		for target in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$file); do \
			echo "fuzz $$pkg $$target for $(FUZZTIME)"; \
			$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

# Benchmark peers: redis-server and redis-benchmark; wrk, nginx and its Lua
# module for the nginx section (nginx lives in /usr/sbin); valgrind
# (callgrind) for the instructions per request.
bench-deps:
	@command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null || { $(SUDO) apt-get update -qq && $(APT_INSTALL) redis-server redis-tools; }
	@command -v wrk >/dev/null && { command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; } && [ -f /usr/lib/nginx/modules/ngx_http_lua_module.so ] || { $(SUDO) apt-get update -qq && $(APT_INSTALL) wrk nginx libnginx-mod-http-lua; }
	@command -v valgrind >/dev/null && command -v callgrind_control >/dev/null || { $(SUDO) apt-get update -qq && $(APT_INSTALL) valgrind; }

bench: bench-deps build nginx-module
	$(GO) run ./test/bench -bin $(BIN)

# The nginx configs' instructions per request under callgrind alone (about
# 30 s; `make bench` runs it too). The request dumps stay in
# bin/callgrind/, for `callgrind_annotate --inclusive=yes FILE`.
bench-callgrind: bench-deps build nginx-module
	$(GO) run ./test/bench -bin $(BIN) -only callgrind -callgrind-out bin/callgrind

# Clusters of 50 and 100 processes on this machine, per gossip profile
# (about 5 minutes; needs the machine to itself to mean anything):
# SCALE_NODES=10,20 SCALE_PROFILES=fast to choose.
SCALE_NODES ?= 50,100
SCALE_PROFILES ?= fast,lan
scale: build
	$(GO) run ./test/bench -bin $(BIN) -only scale -scale-nodes $(SCALE_NODES) -scale-profiles $(SCALE_PROFILES)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin artifacts
