"""A tiny CNN on synthetic stripes: checks an install end to end in about a minute.

    horovodrun -np 2 python -m smoke.train --epochs 2

Exercises the whole runtime (Horovod init, scaled and warmed-up learning rate,
distributed optimizer, broadcast, metric averaging, throughput, metrics stream)
without any data set on disk.
"""
