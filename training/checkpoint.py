"""Resumable checkpoints: weights, optimizer state and the run's position in one .npz.

    saver = CheckpointSaver(run, plateau, model_info, monitor="val_mean_auc", mode="max")
    # a Keras callback: last.npz every epoch, best.npz on a new best of ``monitor``
    saver.write_last(epochs_done=2, step=40)       # a mid-epoch last.npz (training.interrupt)
    state = restore(run.file("last.npz"), model)   # -> {"epoch": 3, "step": 0, "lr": ..., "best": ..., "plateau": {...}}

``epoch`` counts the epochs completed and ``step`` the batches of the next
one already trained (0 for an end-of-epoch checkpoint).

One file per checkpoint, written by rank 0 through ``RunDir.save_atomic``
(temporary name + rename): a crash mid-write leaves the previous one intact.
"""
import json
import math
import os
import zipfile
import zlib

import numpy as np
import tf_keras as keras

from runtime.errors import UserError


def save(path, model, state):
    arrays = {f"weight_{i:04d}": w for i, w in enumerate(model.get_weights())}
    arrays.update({f"optimizer_{i:04d}": v.numpy() for i, v in enumerate(model.optimizer.variables())})
    arrays["state_json"] = np.frombuffer(json.dumps(state).encode(), dtype=np.uint8)
    with open(path, "wb") as fh:  # a file object: np.savez must not append ".npz" to the temp name
        np.savez(fh, **arrays)


def read(path):
    """(weights, optimizer values, state) of a checkpoint; one line naming the file if it is not one."""
    if not os.path.isfile(path):
        raise UserError(f"{path} not found: nothing to resume or evaluate (train first)")
    try:
        weights, optimizer, state = _load(path)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as err:  # ValueError: bad JSON too
        raise UserError(f"{path} is not a readable checkpoint ({type(err).__name__}: {str(err)[:80] or 'empty'}): "
                        f"empty, truncated, or not written by this project's trainers; pass another "
                        f"checkpoint (best.npz, last.npz) or train again") from None
    if not isinstance(state, dict) or not weights:
        raise UserError(f"{path} holds no model weights and settings: it was not written by this project's "
                        f"trainers; pass best.npz or last.npz of a run")
    return weights, optimizer, state


def _load(path):
    data = np.load(path, allow_pickle=False)  # a pickle is refused: loading one could run code
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError("a single .npy array, not an .npz archive")
    with data:
        if "state_json" not in data.files:
            raise ValueError("an .npz without the trainers' state_json")
        weights = [data[k] for k in sorted(k for k in data.files if k.startswith("weight_"))]
        optimizer = [data[k] for k in sorted(k for k in data.files if k.startswith("optimizer_"))]
        state = json.loads(data["state_json"].tobytes().decode())
    return weights, optimizer, state


def check_same_settings(state, path, expected):
    """Refuse a checkpoint written with other model settings than ``expected`` (the trainer's model_info:
    classes, crop, model, stored size...): its weights would not fit, or would fit and mean something else."""
    for key, value in expected.items():
        if key not in state:
            raise UserError(f"{path} has no {key!r} setting: it was not written by this trainer; start a new "
                            f"--run-name")
        if state[key] != value:
            raise UserError(f"{path} was trained with {key} {state[key]!r}, this run has {value!r}: resume with "
                            f"the settings it was trained with, or start a new --run-name")


def restore(path, model, with_optimizer=True, expected=None):
    """Load weights (and optimizer state) into a compiled ``model``; returns the saved state.

    ``expected``: settings the checkpoint must have been written with (``check_same_settings``).
    """
    weights, opt_values, state = read(path)
    if expected:
        check_same_settings(state, path, expected)
    try:
        model.set_weights(weights)
    except ValueError as err:
        raise UserError(f"{path}: its weights do not fit this model ({err}); was it written by another model "
                        f"or with other settings?") from err
    if with_optimizer:
        optimizer = model.optimizer
        optimizer.build(model.trainable_variables)  # slots must exist before they are assigned
        variables = optimizer.variables()
        if len(variables) != len(opt_values):
            raise UserError(f"{path}: holds {len(opt_values)} optimizer values, the optimizer has "
                            f"{len(variables)}: was it saved with other settings?")
        for var, value in zip(variables, opt_values):
            var.assign(value)
        keras.backend.set_value(optimizer.learning_rate, state["lr"])
    return state


def init_from(path, model):
    """Fine-tuning's start: load a run's weights into ``model``, layer by layer; no optimizer state, no position.

    A layer whose saved arrays all have its shapes is loaded; one whose shapes differ (a head for
    another number of classes) keeps its fresh initialisation. A checkpoint of another architecture
    (another number of arrays) is refused. Returns {"loaded": [...], "fresh": [...]}: layer names."""
    weights, _, _ = read(path)
    layers = _weighted_layers(model)
    expected = sum(len(layer.weights) for layer in layers)
    if len(weights) != expected:
        raise UserError(f"--init-from {path}: holds {len(weights)} weight arrays, this model has {expected}: it was "
                        f"trained with another network; pass a run of the same --model (the head may differ)")
    loaded, fresh, at = [], [], 0
    for layer in layers:
        n = len(layer.weights)
        saved = weights[at:at + n]
        at += n
        if all(a.shape == tuple(w.shape) for a, w in zip(saved, layer.weights)):
            layer.set_weights(saved)
            loaded.append(layer.name)
        else:
            fresh.append(layer.name)
    return {"loaded": loaded, "fresh": fresh}


def _weighted_layers(model):
    """The layers holding weights, in get_weights' order; a nested model (Workload.device_model's
    network) counts as its own layers."""
    out = []
    for layer in model.layers:
        out += _weighted_layers(layer) if isinstance(layer, keras.Model) else [layer] if layer.weights else []
    return out


class Plateau(keras.callbacks.ReduceLROnPlateau):
    """ReduceLROnPlateau whose counters survive a resume (Keras resets them at train start)."""

    def __init__(self, restored=None, **kwargs):
        super().__init__(**kwargs)
        self.restored, self.started = restored, False

    def on_train_begin(self, logs=None):
        if self.started:
            return  # a resumed partial epoch is its own fit call: keep the counters of the first one
        self.started = True
        super().on_train_begin(logs)
        if self.restored:
            self.best, self.wait, self.cooldown_counter = (self.restored["best"], self.restored["wait"],
                                                           self.restored["cooldown_counter"])

    def state(self):
        return {"best": float(self.best), "wait": int(self.wait), "cooldown_counter": int(self.cooldown_counter)}


class CheckpointSaver(keras.callbacks.Callback):
    """last.npz after every epoch, best.npz when ``monitor`` improves (rank 0 writes).

    ``mode`` "max" (an AUC, a Dice) or "min" (a loss). Every rank keeps the
    same ``best``: the monitored figure is computed identically on all ranks.
    """

    def __init__(self, run, plateau, model_info, monitor, mode="max", best=None):
        """``model_info``: what prediction needs besides weights (classes, stored_size, crop, output)."""
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be max or min, got {mode!r}")
        self.run, self.plateau, self.monitor, self.mode = run, plateau, monitor, mode
        self.best = best if best is not None else (-math.inf if mode == "max" else math.inf)
        self.model_info = model_info
        self.last_written = None  # (epochs done, step) of the last last.npz this run wrote
        self.last_state = None    # and its state

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor, float("nan"))
        improved = not math.isnan(value) and (value > self.best if self.mode == "max" else value < self.best)
        if improved:
            self.best = value
        state = self.write_last(epoch + 1)
        if improved:
            self.run.save_atomic("best.npz", lambda tmp: save(tmp, self.model, state))

    def write_last(self, epochs_done, step=0):
        """last.npz: the model after ``epochs_done`` epochs and ``step`` batches of the next; returns its state."""
        lr = float(keras.backend.get_value(self.model.optimizer.learning_rate))
        state = {"epoch": epochs_done, "step": step, "lr": lr, "best": self.best, "monitor": self.monitor,
                 "plateau": self.plateau.state(), **self.model_info}
        self.run.save_atomic("last.npz", lambda tmp: save(tmp, self.model, state))
        self.last_written, self.last_state = (epochs_done, step), state
        return state
