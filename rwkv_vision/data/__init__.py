"""Data sets and transforms: facial expression readers (fer.py), face boxes and crops (faces.py), NYU depth readers and joint transforms (nyu.py),
model preprocessing and training augmentation (transforms.py)."""

from .fer import (EXPRESSIONS, FER2013, LABEL_ORDERS, AffectNet, CKPlus48, FERPlus, ImageFolder, RAFDBBasic,
                  canonical_expression, label_mapping, read_image, subject_folds)
from .faces import FaceBox, crop_face, detect_faces
from .nyu import (CenterCrop, ColorJitter, Compose, Normalize, NYUDepthCSV, NYUDepthV2Labeled, RandomCrop,
                  RandomHorizontalFlip, Resize, read_depth_png, read_rgb)
from .transforms import DepthEvalTransform, EvalTransform, TrainTransform, depth_train_transform, eval_transform

__all__ = ["EXPRESSIONS", "FER2013", "LABEL_ORDERS", "AffectNet", "CKPlus48", "CenterCrop", "ColorJitter", "Compose",
           "DepthEvalTransform", "EvalTransform", "FERPlus", "FaceBox", "ImageFolder", "NYUDepthCSV", "NYUDepthV2Labeled",
           "Normalize", "RAFDBBasic", "RandomCrop", "RandomHorizontalFlip", "Resize", "TrainTransform",
           "canonical_expression", "crop_face", "depth_train_transform", "detect_faces", "eval_transform", "label_mapping", "read_depth_png",
           "read_image", "read_rgb", "subject_folds"]
