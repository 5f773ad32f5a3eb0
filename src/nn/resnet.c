/* resnet.c — ResNets as torchvision and the CIFAR paper define them.
 *
 * cifar:    3x3 conv(16) + BN + ReLU, three stages of n basic blocks (16/32/64 channels,
 *           strides 1/2/2), depth = 6n + 2; shortcuts are identity, or option B
 *           (1x1 conv + BN) where the shape changes; global average pool; linear.
 * imagenet: 7x7/2 conv(64) + BN + ReLU + 3x3/2 max pool, four stages (64/128/256/512
 *           planes), basic blocks for 18/34, bottlenecks (expansion 4, stride on the
 *           3x3 conv, "ResNet v1.5" as in torchvision) for 50/101/152; 1x1 conv + BN
 *           downsample where the shape changes; global average pool; linear.
 * Parameter names follow torchvision (layer1.0.conv1.weight, ..., fc.weight).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/qt.h"
#include "nn/model_priv.h"

static int basic_block(qt_model *m, const char *name, int x, int planes, int stride)
{
    char n[64];
    bool down = stride != 1 || m->slots[x].c != planes;
    snprintf(n, sizeof n, "%s.conv1", name);
    int y = model_conv(m, n, x, planes, 3, stride, 1);
    snprintf(n, sizeof n, "%s.bn1", name);
    y = model_bn(m, n, y);
    snprintf(n, sizeof n, "%s.relu1", name);
    y = model_relu(m, n, y);
    snprintf(n, sizeof n, "%s.conv2", name);
    y = model_conv(m, n, y, planes, 3, 1, 1);
    snprintf(n, sizeof n, "%s.bn2", name);
    y = model_bn(m, n, y);
    if (m->opts.zero_init_residual && m->ops[m->n_ops - 1].kind == OP_BN) m->ops[m->n_ops - 1].zero_gamma = true;
    int sc = x;
    if (down) {
        snprintf(n, sizeof n, "%s.downsample.0", name);
        sc = model_conv(m, n, x, planes, 1, stride, 0);
        snprintf(n, sizeof n, "%s.downsample.1", name);
        sc = model_bn(m, n, sc);
    }
    snprintf(n, sizeof n, "%s.add", name);
    y = model_add(m, n, y, sc);
    snprintf(n, sizeof n, "%s.relu", name);
    return model_relu(m, n, y);
}

static int bottleneck(qt_model *m, const char *name, int x, int planes, int stride)
{
    char n[64];
    const int expansion = 4;
    bool down = stride != 1 || m->slots[x].c != planes * expansion;
    snprintf(n, sizeof n, "%s.conv1", name);
    int y = model_conv(m, n, x, planes, 1, 1, 0);
    snprintf(n, sizeof n, "%s.bn1", name);
    y = model_bn(m, n, y);
    snprintf(n, sizeof n, "%s.relu1", name);
    y = model_relu(m, n, y);
    snprintf(n, sizeof n, "%s.conv2", name);
    y = model_conv(m, n, y, planes, 3, stride, 1);
    snprintf(n, sizeof n, "%s.bn2", name);
    y = model_bn(m, n, y);
    snprintf(n, sizeof n, "%s.relu2", name);
    y = model_relu(m, n, y);
    snprintf(n, sizeof n, "%s.conv3", name);
    y = model_conv(m, n, y, planes * expansion, 1, 1, 0);
    snprintf(n, sizeof n, "%s.bn3", name);
    y = model_bn(m, n, y);
    if (m->opts.zero_init_residual && m->ops[m->n_ops - 1].kind == OP_BN) m->ops[m->n_ops - 1].zero_gamma = true;
    int sc = x;
    if (down) {
        snprintf(n, sizeof n, "%s.downsample.0", name);
        sc = model_conv(m, n, x, planes * expansion, 1, stride, 0);
        snprintf(n, sizeof n, "%s.downsample.1", name);
        sc = model_bn(m, n, sc);
    }
    snprintf(n, sizeof n, "%s.add", name);
    y = model_add(m, n, y, sc);
    snprintf(n, sizeof n, "%s.relu", name);
    return model_relu(m, n, y);
}

int resnet_build(qt_model *m)
{
    const qt_model_opts *o = &m->opts;
    int x = model_add_slot(m, o->in_channels, o->in_height, o->in_width);
    char name[32]; /* "layerS.B" */
    if (o->variant == QT_VARIANT_CIFAR) {
        if (o->depth < 8 || (o->depth - 2) % 6 != 0)
            return qt_fail("resnet: cifar depth %d is not 6n+2 (20, 32, 44, 56, 110)", o->depth);
        int nb = (o->depth - 2) / 6;
        x = model_conv(m, "conv1", x, 16, 3, 1, 1);
        x = model_relu(m, "relu", model_bn(m, "bn1", x));
        static const int planes[3] = {16, 32, 64};
        for (int st = 0; st < 3; st++)
            for (int b = 0; b < nb; b++) {
                snprintf(name, sizeof name, "layer%d.%d", st + 1, b);
                x = basic_block(m, name, x, planes[st], (b == 0 && st > 0) ? 2 : 1);
            }
    } else {
        static const int cfg18[4] = {2, 2, 2, 2}, cfg50[4] = {3, 4, 6, 3}, cfg101[4] = {3, 4, 23, 3},
                         cfg152[4] = {3, 8, 36, 3};
        const int *blocks;
        bool bott = o->depth >= 50;
        switch (o->depth) {
        case 18: blocks = cfg18; break;
        case 34: blocks = cfg50; break; /* 34 = 3,4,6,3 basic blocks */
        case 50: blocks = cfg50; break;
        case 101: blocks = cfg101; break;
        case 152: blocks = cfg152; break;
        default: return qt_fail("resnet: imagenet depth %d is not one of 18, 34, 50, 101, 152", o->depth);
        }
        x = model_conv(m, "conv1", x, 64, 7, 2, 3);
        x = model_relu(m, "relu", model_bn(m, "bn1", x));
        x = model_maxpool(m, "maxpool", x, 3, 2, 1);
        for (int st = 0; st < 4; st++)
            for (int b = 0; b < blocks[st]; b++) {
                snprintf(name, sizeof name, "layer%d.%d", st + 1, b);
                int stride = (b == 0 && st > 0) ? 2 : 1;
                x = bott ? bottleneck(m, name, x, 64 << st, stride) : basic_block(m, name, x, 64 << st, stride);
            }
    }
    x = model_gap(m, "avgpool", x);
    m->logits = model_linear(m, "fc", x, o->classes);
    return 0;
}

