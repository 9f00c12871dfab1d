"""The tf.Module an export saves: a workload's preprocessing and model as three SavedModel signatures.

    serving = Serving("chexnet", parts, model, state)   # parts: the workload's training.export.ExportParts
    tf.saved_model.save(serving, "out/savedmodel", signatures=serving.signatures())

- ``serving_default(image_bytes)``: a batch of encoded PNG/JPEG strings,
  preprocessed in the graph as predict preprocesses files
  (``parts.read_image``), then the model; the workload's outputs, plus
  ``valid`` (bool) and ``reason`` (predict's reason for an image it would
  refuse, else "") per image.
- ``serving_tensor(image)``: the preprocessed float32 tensor (N, H, W, C).
- ``preprocess(image_bytes)``: the tensor serving_tensor takes, with
  ``valid``, ``reason`` and each image's ``height`` and ``width`` (0 when it
  could not be decoded): what an ONNX user must reproduce.
"""
import tensorflow as tf


class Serving(tf.Module):
    def __init__(self, name, parts, model, state):
        super().__init__(name=f"{name}_export")
        # The variables, not the Keras model: saving a tracked Keras model also traces every layer's call.
        self.weights = list(model.weights)
        self._run = lambda x: model(x, training=False)
        self._parts, self._state = parts, state
        shape = parts.input_shape(state)
        encoded = [tf.TensorSpec([None], tf.string, name="image_bytes")]
        self.serve_tensor = tf.function(self._tensor, input_signature=[
            tf.TensorSpec([None, *shape], tf.float32, name="image")])
        self.preprocess = tf.function(self._preprocess, input_signature=encoded)
        self.serve_bytes = tf.function(self._serve, input_signature=encoded)

    def signatures(self):
        return {"serving_default": self.serve_bytes.get_concrete_function(),
                "serving_tensor": self.serve_tensor.get_concrete_function(),
                "preprocess": self.preprocess.get_concrete_function()}

    def _tensor(self, image):
        return self._parts.tensor_outputs(self._run(image), self._state)

    def _preprocess(self, image_bytes):
        shape = self._parts.input_shape(self._state)
        x, reason, size = tf.map_fn(lambda data: self._parts.read_image(data, self._state), image_bytes,
                                    fn_output_signature=(tf.TensorSpec(shape, tf.float32),
                                                         tf.TensorSpec([], tf.string), tf.TensorSpec([2], tf.int32)))
        x = tf.ensure_shape(x, [None, *shape])
        return {"image": x, "valid": tf.equal(reason, ""), "reason": reason, "height": size[:, 0],
                "width": size[:, 1]}

    def _serve(self, image_bytes):
        pre = self._preprocess(image_bytes)
        logits = self._run(pre["image"])
        return {**self._parts.image_outputs(logits, pre, self._state), "valid": pre["valid"],
                "reason": pre["reason"]}
