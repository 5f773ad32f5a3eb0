/* vgg.c — the plain convnets of QSGD's Table 1, as torchvision defines them:
 *
 * alexnet: conv 11x11/4 (64) - pool - conv 5x5 (192) - pool - conv 3x3 (384, 256, 256)
 *          - pool - [dropout] fc 9216->4096 - [dropout] fc 4096->4096 - fc -> classes;
 *          61,100,840 parameters at 1000 classes.
 * vgg:     depth 11/13/16/19 stacks of 3x3 convs (64..512) and 2x2 pools, then
 *          fc 25088->4096 - [dropout] - fc 4096->4096 - [dropout] - fc -> classes;
 *          vgg19: 143,667,240 parameters.
 * Convolutions carry biases (torchvision's bias=True). torchvision's adaptive average
 * pool (6x6 / 7x7) is the identity at the 224x224 input these networks are defined for,
 * so other input sizes are refused rather than silently changing the classifier.
 */
#include <stdio.h>

#include "core/qt.h"
#include "nn/model_priv.h"

static int classifier(qt_model *m, int x, int hidden, bool dropout_first)
{
    const float p = m->opts.dropout;
    if (dropout_first) x = model_dropout(m, "classifier.0", x, p);
    x = model_linear(m, dropout_first ? "classifier.1" : "classifier.0", x, hidden);
    x = model_relu(m, "classifier.relu1", x);
    x = model_dropout(m, dropout_first ? "classifier.3" : "classifier.2", x, p);
    x = model_linear(m, dropout_first ? "classifier.4" : "classifier.3", x, hidden);
    x = model_relu(m, "classifier.relu2", x);
    if (!dropout_first) x = model_dropout(m, "classifier.5", x, p);
    m->logits = model_linear(m, "classifier.6", x, m->opts.classes);
    return 0;
}

int alexnet_build(qt_model *m)
{
    const qt_model_opts *o = &m->opts;
    if (o->in_height != 224 || o->in_width != 224)
        return qt_fail("alexnet: input must be 224x224 (got %dx%d): set data.image_size = 224", o->in_height,
                       o->in_width);
    int x = model_add_slot(m, o->in_channels, o->in_height, o->in_width);
    x = model_relu(m, "features.1", model_conv_bias(m, "features.0", x, 64, 11, 4, 2));
    x = model_maxpool(m, "features.2", x, 3, 2, 0);
    x = model_relu(m, "features.4", model_conv_bias(m, "features.3", x, 192, 5, 1, 2));
    x = model_maxpool(m, "features.5", x, 3, 2, 0);
    x = model_relu(m, "features.7", model_conv_bias(m, "features.6", x, 384, 3, 1, 1));
    x = model_relu(m, "features.9", model_conv_bias(m, "features.8", x, 256, 3, 1, 1));
    x = model_relu(m, "features.11", model_conv_bias(m, "features.10", x, 256, 3, 1, 1));
    x = model_maxpool(m, "features.12", x, 3, 2, 0);
    QT_ASSERT(m->slots[x].h == 6 && m->slots[x].w == 6);
    return classifier(m, x, 4096, true);
}

int vgg_build(qt_model *m)
{
    const qt_model_opts *o = &m->opts;
    /* Convs per stage (64, 128, 256, 512, 512 channels), each stage ends in a 2x2 pool. */
    static const int per_stage[4][5] = {{1, 1, 2, 2, 2}, {2, 2, 2, 2, 2}, {2, 2, 3, 3, 3}, {2, 2, 4, 4, 4}};
    int idx;
    switch (o->depth) {
    case 11: idx = 0; break;
    case 13: idx = 1; break;
    case 16: idx = 2; break;
    case 19: idx = 3; break;
    default: return qt_fail("vgg: depth %d is not one of 11, 13, 16, 19", o->depth);
    }
    if (o->in_height != 224 || o->in_width != 224)
        return qt_fail("vgg: input must be 224x224 (got %dx%d): set data.image_size = 224", o->in_height,
                       o->in_width);
    int x = model_add_slot(m, o->in_channels, o->in_height, o->in_width), layer = 0;
    char name[32];
    for (int st = 0; st < 5; st++) {
        int ch = st < 4 ? 64 << st : 512;
        for (int k = 0; k < per_stage[idx][st]; k++) {
            snprintf(name, sizeof name, "features.%d", layer++);
            x = model_conv_bias(m, name, x, ch, 3, 1, 1);
            snprintf(name, sizeof name, "features.%d", layer++);
            x = model_relu(m, name, x);
        }
        snprintf(name, sizeof name, "features.%d", layer++);
        x = model_maxpool(m, name, x, 2, 2, 0);
    }
    return classifier(m, x, 4096, false);
}
