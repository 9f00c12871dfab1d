"""Train ResUNet++ (or U-Net, FCN-8s, SegNet) for polyp segmentation on N ranks (horovodrun/mpirun/srun) or one process.

    horovodrun -np 2 python -m segmentation.train --data-dir data/kvasir-seg/tfrecords --epochs 30 --run-name seg
    horovodrun -np 2 python -m segmentation.train --run-name seg --epochs 40 --resume
    python -m segmentation.train --benchmark --synthetic-input --model unet

The workload (networks, data, loss, validation) is segmentation.workload; the trainer is training.trainer.
"""
import runtime  # noqa: F401  (selects legacy Keras before TensorFlow loads)
from training import trainer


def main(argv=None):
    return trainer.main("segmentation", argv)


if __name__ == "__main__":
    main()
