# Thin front for meson/ninja. `make run` and `make test` install what is missing first.
PREFIX ?= /usr/local
DESTDIR ?=
BUILD := build
ASAN_BUILD := build-asan
MESON_SETUP := meson setup --prefix=$(PREFIX)

.PHONY: all deps deps-build build run test install clean format

all: build

deps:
	@./scripts/deps.sh

deps-build:
	@./scripts/deps.sh --build-only

$(BUILD)/build.ninja:
	$(MESON_SETUP) $(BUILD)

$(ASAN_BUILD)/build.ninja:
	$(MESON_SETUP) -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug $(ASAN_BUILD)

build: $(BUILD)/build.ninja
	ninja -C $(BUILD)

# Serve on the built-in defaults in the foreground; state lives in ./run.
run: deps build
	@mkdir -p run
	STATE_DIRECTORY=$(CURDIR)/run ./$(BUILD)/tlspolicyd

# Every test, twice: a normal build and one under AddressSanitizer + UBSan.
test: deps build $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)
	@./scripts/run-tests.sh $(BUILD) $(ASAN_BUILD)

install: $(BUILD)/build.ninja
	meson configure $(BUILD) -Dprefix=$(PREFIX)
	ninja -C $(BUILD)
	meson install -C $(BUILD) --no-rebuild $(if $(DESTDIR),--destdir $(DESTDIR))

format:
	clang-format -i $$(git ls-files '*.cpp' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
