"""LightCNN: lightweight CSPNet / MobileNetV3 image classifiers, trained, compared and exported."""

__version__ = "0.1.0"
