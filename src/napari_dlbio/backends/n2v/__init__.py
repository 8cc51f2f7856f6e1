"""Restoration through CAREamics: Noise2Void / N2V2 (self-supervised), CARE and Noise2Noise (pairs).

The ``algorithm`` setting chooses: ``n2v2`` (default) and ``n2v`` learn from the
noisy images alone; ``care`` learns input -> clean target and ``n2n`` input -> a
second independent noisy acquisition (samples carry ``target_image``, see
:mod:`napari_dlbio.pairs`). CAREamics does the algorithm: its configuration
factories (``create_advanced_n2v_config``, ``create_advanced_care_config``,
``create_advanced_n2n_config``), its data pipeline (patches, augmentation,
mean/std statistics), its N2V/N2V2 pixel masking and losses, its U-Net, its
Lightning training, its checkpoints and its bioimage.io exporter/loader. This
module adds what a napari user needs around it:

- progress after every batch and epoch, cancel within a batch, a time budget and
  the same cosine learning-rate schedule as :func:`napari_dlbio.training.fit`,
  through one Lightning callback;
- all of CAREamics' files (checkpoints, CSV logs) in a temporary work folder,
  never in the current directory; the model's own folder gets the CAREamics
  configuration and a CAREamics checkpoint;
- prediction through the shared tiler (:func:`napari_dlbio.tiling.predict_tiled`:
  progress per tile, cancel, out-of-memory retry) with test-time averaging over
  the 8 flips/rotations of the YX plane, which removes much of the residual noise
  a short CPU training leaves behind. Output is in the input's intensity units;
- per-image percentile normalisation before CAREamics' dataset-wide mean/std, so
  dim and bright images look alike to the network (undone on the output);
- weights and batch-norm statistics averaged over the last quarter of training
  (N2V's loss on a few masked pixels is noisy from step to step).

CAREamics, torch and Lightning are imported only inside functions, so reading
:class:`Settings` (GUI forms, CLI options) stays cheap.

Modules: :mod:`.settings` (the pydantic settings), :mod:`.config` (CAREamics
configuration), :mod:`.callback` (the Lightning callback), :mod:`.model` (the
model and its checkpoint), :mod:`.scores` (validation scores), :mod:`.bioimageio` (export), :mod:`.spec` (the
declaration the registry reads).
"""

from .._lazy import lazy_module

__getattr__, __dir__, __all__ = lazy_module(__name__, {
    "BACKEND": ("napari_dlbio.backends", "backend:n2v"),
    "CHECKPOINT_FILE": (".model", "CHECKPOINT_FILE"),
    "CONFIG_FILE": (".model", "CONFIG_FILE"),
    "N2VModel": (".model", "N2VModel"),
    "Predict": (".settings", "Predict"),
    "Settings": (".settings", "Settings"),
    "N2VPredict": (".settings", "Predict"),
    "N2VSettings": (".settings", "Settings"),
    "SPEC": (".spec", "SPEC"),
    "export_bioimageio": (".bioimageio", "export_bioimageio"),
})
