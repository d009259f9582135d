"""WF-VAE training: state, sharded train steps, checkpointing and the train loop.

Modules: :mod:`.state` (``TrainState``, AdamW), :mod:`.mesh` (data/FSDP shardings on the one
device mesh), :mod:`.step` (jitted generator/discriminator steps), :mod:`.checkpointing` (orbax
manager with the grain iterator state), :mod:`.writers` (TensorBoard + log metric writer),
:mod:`.loop` (``train_and_evaluate``, driven by ``train.py``).
"""
