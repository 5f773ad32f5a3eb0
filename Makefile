# qtrain build. `make` builds ./train, ./quantbench and the tests; `make test` installs
# missing packages (scripts/deps.sh), builds and runs every CMocka and MPI test.
# Knobs: BUILD=dir, OPT="-O3 ...", SAN=1 (ASan+UBSan), DEPS_PREFIX=dir (unpacked .debs
# of libraries the machine lacks, e.g. on the GPU machine), CUDA=0|1 (backend, later).

CC       = mpicc
BUILD   ?= build
OPT     ?= -O3 -march=native
PKGS     = inih libpng libturbojpeg openblas
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
ifeq ($(PKG_LIBS),)
PKG_LIBS := -linih -lpng16 -lturbojpeg -lopenblas
endif
ifneq ($(DEPS_PREFIX),)
DEP_INC  = -I$(DEPS_PREFIX)/usr/include -I$(DEPS_PREFIX)/usr/include/x86_64-linux-gnu
DEP_LIB  = -L$(DEPS_PREFIX)/usr/lib/x86_64-linux-gnu -Wl,-rpath,$(abspath $(DEPS_PREFIX))/usr/lib/x86_64-linux-gnu
endif
ifeq ($(SAN),1)
SAN_FLAGS = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
endif
CFLAGS  += -std=c11 -Wall -Wextra -Werror $(OPT) -g -D_GNU_SOURCE -pthread -fopenmp -Isrc \
           $(DEP_INC) $(PKG_CFLAGS) $(SAN_FLAGS) -MMD -MP
LDLIBS  += $(DEP_LIB) $(PKG_LIBS) -lm -pthread -fopenmp $(SAN_FLAGS)

# MODULES limits the library to some folders (a helper building one module while another
# is mid-edit): make BUILD=build-q MODULES="core quant" build-q/tests/test_quant
MODULES ?= app core nn data dist quant
LIB_SRC  := $(foreach m,$(MODULES),$(if $(filter app,$(m)),$(filter-out src/train.c,$(wildcard src/*.c)),$(wildcard src/$(m)/*.c)))
LIB_SRC  := $(filter-out $(EXCLUDE),$(LIB_SRC))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
LIB      := $(BUILD)/libqtrain.a
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
TOOL_SRC := $(wildcard tools/*.c)
TOOL_BIN := $(TOOL_SRC:tools/%.c=$(BUILD)/tools/%)
CU_SRC   := $(wildcard src/*/cuda/*.cu src/*/*/cuda/*.cu)

# ---- CUDA backend (src/*/cuda/*.cu): on when nvcc and cuDNN's header are found ----
# CUDA=0 disables it, CUDA=1 forces it; CUDA_HOME (default /usr/local/cuda) locates it.
# The trainer does not drive the GPU yet (issue 6): the building blocks and their tests
# (tests/test_cuda_layers, skipped without a GPU) are what this compiles today.
CUDA_HOME ?= /usr/local/cuda
NVCC      ?= $(firstword $(shell command -v nvcc 2>/dev/null) $(wildcard $(CUDA_HOME)/bin/nvcc))
CUDNN_H   := $(firstword $(wildcard $(CUDA_HOME)/include/cudnn.h /usr/include/cudnn.h \
                                    /usr/include/x86_64-linux-gnu/cudnn.h))
ifeq ($(origin CUDA),undefined)
CUDA := $(if $(and $(NVCC),$(CUDNN_H)),1,0)
endif
ifeq ($(SAN),1)
CUDA := 0
endif
ifeq ($(CUDA),1)
CU_LIB_SRC := $(foreach m,$(MODULES),$(wildcard src/$(m)/cuda/*.cu))
CU_OBJ     := $(CU_LIB_SRC:%.cu=$(BUILD)/%.o)
LIB_OBJ    += $(CU_OBJ)
NVCCFLAGS  ?= -std=c++17 -arch=sm_90 -O3 -g -lineinfo -Xcompiler -Wall,-Wextra,-Werror \
              -DCUDNN_WARN_DEPRECATED -Isrc $(DEP_INC)
CFLAGS     += -DQT_HAVE_CUDA -I$(CUDA_HOME)/include
LDLIBS     += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudnn -lcublasLt -lcublas -lcudart -lstdc++
endif

$(BUILD)/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -MMD -MP -c $< -o $@

.PHONY: FORCE all deps test test-run sanitize quickstart bench fuzz cuda-check clean
all: train quantbench $(TEST_BIN) $(TOOL_BIN)

deps:
	@scripts/deps.sh

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

# ./train and ./quantbench are relinked on every make: the same names serve every BUILD
# (plain, SAN=1), so a stale sanitizer binary never lingers after `make sanitize`.
train: $(BUILD)/src/train.o $(LIB) FORCE
	$(CC) $(CFLAGS) -o $@ $(filter-out FORCE,$^) $(LDLIBS)

$(BUILD)/tools/%: $(BUILD)/tools/%.o $(LIB)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

quantbench: $(BUILD)/tools/quantbench FORCE
	cp $< $@

FORCE:

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(LIB)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

# `make test`: packages first (a fresh machine has none), then a build and the runner in
# a second make so that pkg-config sees the installed libraries.
test: deps
	@$(MAKE) --no-print-directory all
	@scripts/run_tests.sh $(BUILD)

sanitize: deps
	@$(MAKE) --no-print-directory BUILD=build-san SAN=1 OPT="-O1" all
	@QT_SANITIZE=1 scripts/run_tests.sh build-san

quickstart: deps
	@$(MAKE) --no-print-directory all
	@QT_BUILD=$(BUILD) scripts/quickstart.sh

bench: all
	@QT_BUILD=$(BUILD) scripts/bench_cpu.sh

fuzz:
	@scripts/fuzz.sh

# Compiles every .cu file with nvcc (no GPU needed): what CI can check of the CUDA code.
cuda-check:
	@if ! command -v nvcc >/dev/null 2>&1 && [ ! -x /usr/local/cuda/bin/nvcc ]; then \
	    echo "cuda-check: nvcc not found, skipped"; exit 0; fi; \
	 NVCC=$$(command -v nvcc || echo /usr/local/cuda/bin/nvcc); n=0; \
	 for f in $(CU_SRC); do \
	    mkdir -p $(BUILD)/cuda-check; \
	    $$NVCC -std=c++17 -arch=sm_90 -Isrc $(DEP_INC) -DCUDNN_WARN_DEPRECATED -Xcompiler -Wall,-Wextra,-Werror \
	        -c $$f -o $(BUILD)/cuda-check/$$(basename $$f).o || exit 1; n=$$((n+1)); \
	 done; echo "cuda-check: $$n .cu files compiled"

clean:
	rm -rf $(BUILD) build-san train quantbench

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
