/* config.h — the run's configuration: one table of {section, key, type, range, default,
 * help} (config.c) drives INI parsing (inih), --set overrides, --help-config and the
 * generated configs/README.md. Unknown keys, duplicates, keys outside a section and bad
 * values are fatal and name file:line. Each module keeps its own options struct; the
 * config embeds them.
 */
#ifndef QT_CONFIG_H
#define QT_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "data/data.h"
#include "dist/exchange.h"
#include "nn/model.h"
#include "nn/optim.h"

typedef struct { /* [train] */
    int epochs;
    int64_t max_steps; /* stop after this many steps in total (0 = run all epochs) */
    uint64_t seed;
    int threads;
    char device[8]; /* cpu | cuda */
    char log[1024]; /* metrics JSONL path ("" = none) */
    char checkpoint[1024];
    int checkpoint_every; /* steps; 0 = only at the end of each epoch */
    int keep_checkpoints;
    int print_every; /* steps between progress lines */
    bool eval;       /* evaluate after each epoch */
    int64_t eval_limit;
    bool debug_layers;
    int bptt; /* speech: truncated BPTT chunk in frames (0 = whole utterances) */
} qt_train_opts;

typedef struct {
    qt_model_opts model;
    qt_data_opts data;
    qt_optim_opts optim;
    qt_dist_opts dist; /* [dist] and [quant] (codec settings inside) */
    int quant_bits;    /* from [quant] bits; levels derived unless given */
    qt_train_opts train;
    char path[1024];   /* the file it came from */
} qt_config;

/* Defaults for every key. */
void qt_config_default(qt_config *c);
/* Parses FILE on top of the current values. Prints one error line and returns < 0 on
 * the first problem. */
int qt_config_load(qt_config *c, const char *path);
/* Applies "section.key=value" (from --set). */
int qt_config_set(qt_config *c, const char *assignment);
/* Derives dependent values (levels from bits, bucket defaults) and cross-checks keys.
 * Call after load and overrides. */
int qt_config_finish(qt_config *c);
/* Hash of every key that changes the computation (not paths, threads or logging):
 * ranks compare it at start-up and checkpoints record it. */
uint64_t qt_config_hash(const qt_config *c);
/* Writes every key with its current value as INI text (for logs and reproducibility). */
void qt_config_dump(const qt_config *c, FILE *f);
/* Writes the reference (markdown table: key, type, default, range, meaning). */
void qt_config_reference(FILE *f);

#endif
