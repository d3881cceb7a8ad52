"""Convolutional backbones: feature extractors for the dense-prediction and expression models."""

from .ir50 import IR50
from .mobilefacenet import MobileFaceNet
from .mobilenet_v2 import MobileNetV2, mobilenet_v2
from .resnet import ResNet, resnet18, resnet34, resnet50

__all__ = ["IR50", "MobileFaceNet", "MobileNetV2", "ResNet", "mobilenet_v2", "resnet18", "resnet34", "resnet50"]
