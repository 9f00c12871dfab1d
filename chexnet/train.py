"""Train CheXNet on N ranks (horovodrun/mpirun/srun) or one process.

    horovodrun -np 2 python -m chexnet.train --data-dir data/chestxray14/tfrecords --epochs 5 --run-name cx
    horovodrun -np 2 python -m chexnet.train --run-name cx --epochs 8 --resume
    python -m chexnet.train --benchmark --synthetic-input --crop 224 --weights none

The workload (model, data, loss, validation) is chexnet.workload; the trainer is training.trainer.
"""
import runtime  # noqa: F401  (selects legacy Keras before TensorFlow loads)
from training import trainer


def main(argv=None):
    return trainer.main("chexnet", argv)


if __name__ == "__main__":
    main()
