"""A small CNN classifier (no Horovod here).

    model = build_cnn(size=32, channels=1, num_classes=4)
"""
import tf_keras as keras


def conv_block(x, filters):
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    # Momentum 0.9: moving statistics settle within the few hundred steps a smoke run has.
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    x = keras.layers.Activation("relu")(x)
    return keras.layers.MaxPooling2D()(x)


def build_cnn(size, channels, num_classes, widths=(16, 32, 64)):
    inputs = keras.Input((size, size, channels))
    x = inputs
    for filters in widths:
        x = conv_block(x, filters)
    x = keras.layers.GlobalAveragePooling2D()(x)
    # Logits in float32 even under mixed precision: softmax/loss are unstable in 16 bits.
    outputs = keras.layers.Dense(num_classes, dtype="float32")(x)
    return keras.Model(inputs, outputs, name="smoke_cnn")
