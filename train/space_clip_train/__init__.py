"""SPACE-CLIP's training and evaluation (the scripts in train/ are the entry points).

config        TrainConfig: the YAML configs of train/configs/ and command-line overrides, typed and checked
cli           the trainers' command lines (train_kitti.py, train_nyu.py)
trainer       the training loop: steps, validation, best/last checkpoints, the final report, resume
data          list files, image reading, the authors' resizing, augmentation, the dataset base class, collate
kitti, nyu    each dataset's files on disk, ground truth and crops
losses        SILog (+ auxiliary) and SSIM, the paper's and the release's versions, global-batch under torchrun
metrics       depth metrics and the evaluation protocols of each dataset
evaluation    running a model over a list: predictions, flip TTA, metrics, image grids
distributed   one process or many under torchrun
optim         the decoder's EMA and the learning-rate schedules
random_state  every random stream of a process, for exact resumes
"""

try:
    import space_clip_ros  # noqa: F401
except ImportError as error:  # the scripts run from a checkout: the project itself must be installed
    raise SystemExit(f"train/ needs the space_clip_ros package ({error}): install the project from the repository "
                     "root with  pip install -e '.[train]'") from None
