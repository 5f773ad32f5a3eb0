/* fuzz_htk — libFuzzer target for the HTK readers: the feature header parser, the SCP,
 * label-list and MLF parsers, and MLF frame labelling, on arbitrary bytes. Built and run
 * by scripts/fuzz.sh (`make fuzz`). The first byte picks the parser; for the MLF, every
 * parsed entry is also turned into frame labels for a length drawn from the input. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "data/htk.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    uint8_t which = data[0] & 3;
    const char *text = (const char *)data + 1;
    size_t n = size - 1;
    char err[512];
    if (which == 0) {
        qt_htk_header h;
        if (qt_htk_parse_header(data + 1, n, n, "f", &h, err, sizeof err) == 0) {
            float v[8];
            size_t floats = (n - QT_HTK_HEADER_BYTES) / 4;
            qt_htk_decode_floats(data + 1 + QT_HTK_HEADER_BYTES, (int64_t)(floats < 8 ? floats : 8), v);
        }
    } else if (which == 1) {
        qt_scp s;
        if (qt_scp_parse(text, n, "s", &s, err, sizeof err) == 0) qt_scp_free(&s);
    } else if (which == 2) {
        qt_label_list l;
        if (qt_label_list_parse(text, n, "l", &l, err, sizeof err) == 0) {
            (void)qt_label_list_find(&l, "a");
            qt_label_list_free(&l);
        }
    } else {
        qt_label_list l;
        const char *names = "sil\na\nb\nc\nsp\n";
        if (qt_label_list_parse(names, strlen(names), "l", &l, err, sizeof err) != 0) abort();
        qt_mlf m;
        if (qt_mlf_parse(text, n, "m", &l, &m, err, sizeof err) == 0) {
            int32_t y[256];
            for (int64_t i = 0; i < m.n_entries; i++) {
                int64_t frames = (int64_t)(data[(size_t)i % size] % 200) + 1;
                (void)qt_mlf_frame_labels(&m, &m.entries[i], "m", frames, 100000, y, err, sizeof err);
                (void)qt_mlf_find(&m, m.entries[i].key);
            }
            qt_mlf_free(&m);
        }
        qt_label_list_free(&l);
    }
    return 0;
}
