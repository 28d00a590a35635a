"""Figures published by the original study (../shared/docs/seed-models.md), kept in one place.

Used by the model tests (parameter counts), by the comparison report (published
accuracy, parameters and phone latency beside ours) and by the README results table
(lightcnn.results), which label the study's figures with STUDY_PROTOCOL.
"""

STUDY_MODELS = ("mobilenetv3_large", "mobilenetv3_small", "our_large", "our_small")

# model.count_params() (BatchNorm moving statistics included), keyed by number of classes.
# 10 and 100 classes at 32x32 (CIFAR strides); 325 classes at 224x224 (birds strides).
PUBLISHED_PARAMS: dict[str, dict[int, int]] = {
    "mobilenetv3_large": {10: 3_936_296, 100: 4_051_586, 325: 4_339_811},
    "mobilenetv3_small": {10: 1_556_568, 100: 1_648_818, 325: 1_879_443},
    "our_large": {10: 2_233_069, 100: 2_348_359, 325: 2_636_728},
    "our_small": {10: 923_137, 100: 1_015_387, 325: 1_246_156},
}

# Trainable parameters at CIFAR-10 (10 classes, 32x32).
PUBLISHED_TRAINABLE_CIFAR10: dict[str, int] = {
    "mobilenetv3_large": 3_901_036,
    "mobilenetv3_small": 1_536_636,
    "our_large": 2_211_463,
    "our_small": 911_155,
}

# Test accuracy, keyed by the study's dataset names.
PUBLISHED_ACCURACY: dict[str, dict[str, float]] = {
    "cifar10": {"mobilenetv3_large": 0.8929, "mobilenetv3_small": 0.8727, "our_large": 0.8813, "our_small": 0.8546},
    "cifar100": {"mobilenetv3_large": 0.6171, "mobilenetv3_small": 0.5893, "our_large": 0.6078, "our_small": 0.5737},
    "bird100": {"mobilenetv3_large": 0.9620, "mobilenetv3_small": 0.9520, "our_large": 0.9380, "our_small": 0.9440},
    "bird325": {"mobilenetv3_large": 0.9575, "mobilenetv3_small": 0.9489, "our_large": 0.9526, "our_small": 0.9563},
}

# How the study produced its published figures: every table that shows one says so.
STUDY_PROTOCOL: dict[str, object] = {
    "epochs": 150,
    "optimizer": "Adam",
    "learning_rate": 1e-3,
    "schedule": "constant",
    "batch_size": 128,
    "label_smoothing": 0.1,
    "checkpoint": "best validation accuracy",
    "data": "official images (lossless CIFAR arrays, 40,000 train / 10,000 validation; "
            "Kaggle bird folders at 224x224)",
    "latency_device": "Qualcomm Snapdragon 865 phone, float32 TFLite, measuring method unpublished",
}
STUDY_RECIPE_SUMMARY = "150 epochs, Adam at a constant lr 1e-3, batch 128"
STUDY_PROTOCOL_SUMMARY = (f"{STUDY_RECIPE_SUMMARY}, official images, best-validation checkpoint; "
                          "latency on a Snapdragon 865 phone")

# Float32 TFLite latency on a Qualcomm Snapdragon 865 phone, in ms (method unpublished).
PUBLISHED_PHONE_LATENCY_MS: dict[str, dict[str, float]] = {
    "cifar10": {"mobilenetv3_large": 8.3, "mobilenetv3_small": 6.5, "our_large": 7.8, "our_small": 5.7},
    "cifar100": {"mobilenetv3_large": 9.5, "mobilenetv3_small": 7.1, "our_large": 8.0, "our_small": 6.9},
}


def study_dataset_key(dataset: str, num_classes: int) -> str | None:
    """The study's name for a dataset run ("cifar10", "bird100", ...), or None if it has none."""
    if dataset in ("cifar10", "cifar100"):
        return dataset
    if dataset == "birds" and num_classes in (100, 325):
        return f"bird{num_classes}"
    return None
