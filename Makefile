# Thin front for meson/ninja. `make run` and `make test` install what is missing first.
PREFIX ?= /usr/local
DESTDIR ?=
BUILD := build
ASAN_BUILD := build-asan
# libFuzzer targets (docs/fuzzing.md): clang only, in their own build dir.
FUZZ_BUILD := build-fuzz
FUZZ_CC ?= clang-14
FUZZ_CXX ?= clang++-14
MESON_SETUP := meson setup --prefix=$(PREFIX)

.PHONY: all deps deps-build build run test fuzz install clean format

all: build

deps:
	@./scripts/deps.sh

deps-build:
	@./scripts/deps.sh --build-only

$(BUILD)/build.ninja:
	$(MESON_SETUP) $(BUILD)

$(ASAN_BUILD)/build.ninja:
	$(MESON_SETUP) -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug $(ASAN_BUILD)

$(FUZZ_BUILD)/build.ninja:
	CC=$(FUZZ_CC) CXX=$(FUZZ_CXX) $(MESON_SETUP) -Dfuzzing=true \
	  -Db_sanitize=address,undefined -Db_lundef=false $(FUZZ_BUILD)

build: $(BUILD)/build.ninja
	ninja -C $(BUILD)

# Serve on the built-in defaults in the foreground; state lives in ./run.
run: deps build
	@mkdir -p run
	STATE_DIRECTORY=$(CURDIR)/run ./$(BUILD)/tlspolicyd

# Every test, twice: a normal build and one under AddressSanitizer + UBSan; then a few
# seconds of each libFuzzer target from its checked-in corpus (only the fuzzers are built in
# $(FUZZ_BUILD), not the rest of the project).
test: deps build $(ASAN_BUILD)/build.ninja $(FUZZ_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)
	ninja -C $(FUZZ_BUILD) fuzzers
	@./scripts/run-tests.sh $(BUILD) $(ASAN_BUILD) --fuzz $(FUZZ_BUILD)

# The fuzz suite alone (FUZZ_SECONDS=N make fuzz runs each target N s); long runs:
# docs/fuzzing.md.
fuzz: deps-build $(FUZZ_BUILD)/build.ninja
	ninja -C $(FUZZ_BUILD) fuzzers
	meson test -C $(FUZZ_BUILD) --suite fuzz --no-rebuild --print-errorlogs

install: $(BUILD)/build.ninja
	meson configure $(BUILD) -Dprefix=$(PREFIX)
	ninja -C $(BUILD)
	meson install -C $(BUILD) --no-rebuild $(if $(DESTDIR),--destdir $(DESTDIR))

format:
	clang-format -i $$(git ls-files '*.cpp' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
