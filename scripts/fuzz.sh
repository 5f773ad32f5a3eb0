#!/usr/bin/env bash
# `make fuzz`: builds the libFuzzer targets (clang, ASan + UBSan) and runs each for
# QT_FUZZ_SECONDS (default 20): fuzz/fuzz_decode.c (qt_codec_decode_add of every codec and
# encoding, seeded with valid streams), fuzz/fuzz_image.c (content sniffing, PNG and JPEG
# decode, resampling) and fuzz/fuzz_htk.c (HTK header, SCP, label list and MLF parsers).
# Exit status non-zero on a crash, a sanitizer report or a build failure. Installs libclang-rt-14-dev
# (the libFuzzer runtime) when clang cannot link -fsanitize=fuzzer.
set -euo pipefail
cd "$(dirname "$0")/.."
CLANG=${CLANG:-clang}
SECONDS_TO_RUN=${QT_FUZZ_SECONDS:-20}
OUT=${QT_FUZZ_DIR:-build-fuzz}
command -v "$CLANG" >/dev/null || { echo "error: fuzz: $CLANG not found (apt-get install clang)" >&2; exit 1; }
mkdir -p "$OUT"
probe="$OUT/probe.c"
printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' >"$probe"
if ! "$CLANG" -fsanitize=fuzzer "$probe" -o "$OUT/probe" 2>/dev/null; then
    echo "fuzz: clang cannot link libFuzzer; installing libclang-rt-14-dev" >&2
    SUDO=""; [ "$(id -u)" != 0 ] && SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq libclang-rt-14-dev >/dev/null
    "$CLANG" -fsanitize=fuzzer "$probe" -o "$OUT/probe"
fi
SRC=(src/core/qt.c src/quant/*.c)
FLAGS=(-std=c11 -D_GNU_SOURCE -O1 -g -Isrc -Wall -Wextra -Werror)
"$CLANG" "${FLAGS[@]}" -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    "${SRC[@]}" fuzz/fuzz_decode.c -o "$OUT/fuzz_decode" -lm
"$CLANG" "${FLAGS[@]}" -DQT_FUZZ_MAKE_CORPUS "${SRC[@]}" fuzz/fuzz_decode.c -o "$OUT/make_corpus" -lm
rm -rf "$OUT/corpus" && mkdir -p "$OUT/corpus"
"$OUT/make_corpus" "$OUT/corpus"
echo "fuzz: $(ls "$OUT/corpus" | wc -l) seed streams; fuzzing decode_add for ${SECONDS_TO_RUN}s"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
"$OUT/fuzz_decode" -max_total_time="$SECONDS_TO_RUN" -max_len=20000 -print_final_stats=1 \
    -artifact_prefix="$OUT/" "$OUT/corpus" 2>"$OUT/fuzz.log" || {
    tail -40 "$OUT/fuzz.log" >&2
    echo "FAILED: fuzz: decode_add crashed; the input is in $OUT/crash-*" >&2
    exit 1
}
grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$OUT/fuzz.log" || true

# The data readers: image decode path and HTK/MLF parsers (libpng, TurboJPEG).
DATA_SRC=(src/core/qt.c $(ls src/data/*.c | grep -v -e gen_ -e loader -e ring))
DATA_LIBS=($(pkg-config --libs libpng libturbojpeg 2>/dev/null || echo -lpng16 -lturbojpeg) -lm -lpthread)
DATA_FLAGS=("${FLAGS[@]}" $(pkg-config --cflags libpng libturbojpeg 2>/dev/null))
for target in fuzz_image fuzz_htk; do
    "$CLANG" "${DATA_FLAGS[@]}" -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
        "${DATA_SRC[@]}" "fuzz/$target.c" -o "$OUT/$target" "${DATA_LIBS[@]}"
    mkdir -p "$OUT/corpus-$target"
    echo "fuzz: $target for ${SECONDS_TO_RUN}s"
    "$OUT/$target" -max_total_time="$SECONDS_TO_RUN" -max_len=65536 -print_final_stats=1 \
        -artifact_prefix="$OUT/$target-" "$OUT/corpus-$target" 2>"$OUT/$target.log" || {
        tail -40 "$OUT/$target.log" >&2
        echo "FAILED: fuzz: $target crashed; the input is in $OUT/$target-crash-*" >&2
        exit 1
    }
    grep -E "stat::number_of_executed_units" "$OUT/$target.log" || true
done
echo "fuzz: ok"
