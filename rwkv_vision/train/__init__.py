"""Training: configuration files, the :class:`Trainer`, optimisers and schedules, checkpoints, distributed runs.

    from rwkv_vision.train import Trainer, load_config
    Trainer(load_config("configs/ck48_rwkv_vit.yaml", ["optim.lr=1e-3"])).fit()
"""

from .config import DATASETS, Config, ConfigError, build_dataset, config_from_dict, load_config
from .optim import SAM, ModelEMA, build_optimizer, build_scheduler
from .trainer import Trainer, seed_everything

__all__ = ["DATASETS", "SAM", "Config", "ConfigError", "ModelEMA", "Trainer", "build_dataset", "build_optimizer",
           "build_scheduler", "config_from_dict", "load_config", "seed_everything"]
