"""Training settings: TrainConfig, the two recipes and resolve_config.

Recipes:
- "study": the original study's protocol (Adam at a constant 1e-3, batch 128, 150 epochs),
  with the models built "faithful" (as the study's code behaved).
- "default": a modern short schedule (AdamW, linear warm-up then cosine decay, 30 epochs)
  meant to reach the study's CIFAR-10 accuracy in a fifth of the epochs, with the models
  built "corrected".

This module imports neither Keras nor TensorFlow: a stage resolves its settings (and with
them the backend) before Keras is imported.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# Kept equal to lightcnn.models.ATTENTIONS and MODEL_MODES (tested): spelled out here so that
# this module needs no Keras.
Attention = Literal["se", "cbam", "ca", "none"]
ModelMode = Literal["corrected", "faithful"]
Backend = Literal["tensorflow", "jax"]
Precision = Literal["float32", "mixed_float16", "mixed_bfloat16"]
Distribution = Literal["none", "data_parallel"]
OptimizerName = Literal["adamw", "adam", "sgd"]
ScheduleName = Literal["constant", "cosine", "onecycle"]
LrScaling = Literal["linear", "sqrt", "none"]

OPTIMIZERS: tuple[str, ...] = get_args(OptimizerName)
SCHEDULES: tuple[str, ...] = get_args(ScheduleName)
BACKENDS: tuple[str, ...] = get_args(Backend)
PRECISIONS: tuple[str, ...] = get_args(Precision)
DISTRIBUTIONS: tuple[str, ...] = get_args(Distribution)

# Both recipes' learning rates are given for a batch of 128 images; lr_scaling rescales them
# for other (global) batch sizes.
LR_REFERENCE_BATCH = 128

Probability = Annotated[float, Field(ge=0, lt=1)]


class TrainConfig(BaseModel):
    """Every training setting. Build it with resolve_config(recipe, **overrides).

    Frozen and strict: "1e-3" (YAML reads 1e-3 as text) is not a number, 2.0 is not an
    integer epoch count, "yes" is not true.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False,
                              validate_default=True)

    recipe: Literal["default", "study"] = Field(description="the recipe the values started from")
    epochs: int = Field(ge=1, description="epochs to train")
    batch_size: int = Field(
        ge=1, description="global batch size (all devices and hosts together); datasets passed to train_model "
                          "are batched with it")
    optimizer: OptimizerName = Field(description="optimizer")
    learning_rate: float = Field(
        gt=0, description=f"peak learning rate for a batch of {LR_REFERENCE_BATCH} (the constant one for "
                          "schedule 'constant'); rescaled for other batch sizes by lr_scaling")
    lr_scaling: LrScaling = Field(
        description=f"how the learning rate follows the batch size: 'linear' = learning_rate x batch_size / "
                    f"{LR_REFERENCE_BATCH} (Goyal et al. 2017, with the warm-up), 'sqrt' = learning_rate x "
                    f"sqrt(batch_size / {LR_REFERENCE_BATCH}), 'none' = learning_rate as given")
    weight_decay: float = Field(
        ge=0, description="decoupled weight decay on kernels (AdamW/SGD), Keras style: w -= lr * wd * w")
    momentum: Probability = Field(description="SGD momentum (SGD only)")
    nesterov: bool = Field(description="Nesterov momentum (SGD only)")
    schedule: ScheduleName = Field(
        description="learning-rate schedule: constant; cosine (linear warm-up from 0, cosine decay to 0); "
                    "onecycle (warm-up from lr/25, cosine decay to lr/25e4)")
    warmup_epochs: float = Field(ge=0, description="linear warm-up to the peak learning rate, may be fractional")
    label_smoothing: Probability = Field(description="label smoothing of the cross-entropy loss")
    l2: float = Field(ge=0, description="L2 penalty on conv/depthwise/dense kernels, added to the loss")
    dropout: Probability = Field(description="dropout rate before the classifier")
    stochastic_depth: bool = Field(description="stochastic depth on the residual blocks")
    attention: Attention = Field(description="attention block of the models")
    model_mode: ModelMode = Field(
        description="how the models are built: 'corrected' (the intended design) or 'faithful' (as the "
                    "study's code behaved); see lightcnn.models.MODEL_MODES")
    augment: bool = Field(description="random shifts and flips of the training images")
    shift_fraction: Probability = Field(description="largest random shift, as a fraction of the height and width")
    flip: bool = Field(description="random left-right flips")
    seed: int = Field(ge=0, description="seed of the weights, the shuffle, the augmentation and dropout")
    deterministic: bool = Field(
        description="deterministic kernels (TensorFlow op determinism; XLA deterministic GPU ops on JAX): "
                    "identical runs on the same machine, a little slower")
    backend: Backend = Field(
        description="Keras backend; selected before Keras is imported (lightcnn.training.select_backend)")
    precision: Precision = Field(
        description="Keras dtype policy: float32, or mixed precision (float16 needs a GPU; bfloat16 a GPU/TPU "
                    "that has it). Weights and the softmax output stay float32")
    jit_compile: bool | Literal["auto"] = Field(
        description="XLA compilation of the train step ('auto': Keras decides; JAX always compiles)")
    steps_per_execution: int = Field(
        ge=1, description="training steps per compiled call (fewer host round trips on a GPU)")
    distribution: Distribution = Field(
        description="'data_parallel': each batch split over all local devices (JAX DataParallel, or "
                    "TensorFlow MirroredStrategy) and, on JAX, over all hosts of a multi-host launch")

    @model_validator(mode="after")
    def _check_combinations(self) -> TrainConfig:
        problems = []
        if self.optimizer == "adam" and self.weight_decay > 0:
            problems.append("training setting weight_decay must be 0 with optimizer 'adam'; "
                            "use optimizer 'adamw' for decoupled weight decay")
        if self.schedule == "constant" and self.warmup_epochs > 0:
            problems.append("training setting warmup_epochs must be 0 with schedule 'constant'; "
                            "use schedule 'cosine' or 'onecycle' for a warm-up")
        if self.warmup_epochs >= self.epochs:
            problems.append(f"training setting warmup_epochs must be below epochs ({self.epochs}); got "
                            f"{self.warmup_epochs} (for a short run, lower warmup_epochs too)")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def peak_learning_rate(self) -> float:
        """learning_rate rescaled for batch_size by lr_scaling: what the optimiser uses."""
        ratio = self.batch_size / LR_REFERENCE_BATCH
        factor = {"linear": ratio, "sqrt": ratio ** 0.5, "none": 1.0}[self.lr_scaling]
        return self.learning_rate * factor


CONFIG_KEYS: tuple[str, ...] = tuple(TrainConfig.model_fields)

# Settings shared by both recipes: where and how fast to train, not what to train.
_ENGINE = dict(backend="tensorflow", precision="float32", jit_compile="auto", steps_per_execution=1,
               distribution="none")

RECIPES: dict[str, dict[str, Any]] = {
    # Modern short schedule: AdamW, 2 epochs of linear warm-up to 2e-3 (batch 128), cosine
    # decay to 0 at epoch 30, decoupled weight decay 0.05 on kernels (not biases or
    # BatchNorm). The L2 penalty is off (l2=0): through Adam an L2 gradient is rescaled per
    # weight by the adaptive denominator (weights with noisy gradients are hardly
    # regularised), and with the decoupled decay it would count twice. Adam-type updates
    # also don't depend on the weight scale, which matters here: the models start from
    # small random-uniform kernels, and in a short check on 5,000 CIFAR-10 images SGD
    # (Nesterov, lr 0.1, L2 2.5e-4) learned more slowly than Adam and AdamW. Shifts of 1/8
    # of the size are the usual 4-pixel pad-and-crop of CIFAR training.
    # momentum/nesterov are used by optimizer "sgd" only; for SGD set learning_rate 0.1,
    # weight_decay 0 and l2 2.5e-4 (= PyTorch's coupled weight decay 5e-4).
    # The learning rate follows the batch size linearly (with the warm-up, Goyal et al.).
    "default": dict(
        epochs=30, batch_size=128, optimizer="adamw", learning_rate=2e-3, lr_scaling="linear",
        weight_decay=0.05, momentum=0.9, nesterov=True, schedule="cosine", warmup_epochs=2.0,
        label_smoothing=0.1, l2=0.0, dropout=0.5, stochastic_depth=True, attention="se",
        model_mode="corrected", augment=True, shift_fraction=0.125, flip=True, seed=0, deterministic=True,
        **_ENGINE,
    ),
    # The study's protocol for its published results (shared/docs/seed-models.md), on the
    # models as its code built them; its learning rate is used as given at any batch size.
    "study": dict(
        epochs=150, batch_size=128, optimizer="adam", learning_rate=1e-3, lr_scaling="none",
        weight_decay=0.0, momentum=0.0, nesterov=False, schedule="constant", warmup_epochs=0.0,
        label_smoothing=0.1, l2=5e-5, dropout=0.5, stochastic_depth=True, attention="se",
        model_mode="faithful", augment=True, shift_fraction=0.2, flip=True, seed=0, deterministic=True,
        **_ENGINE,
    ),
}


def resolve_config(recipe: str, **overrides: Any) -> TrainConfig:
    """The recipe's values with the non-None overrides applied, validated.

    Raises ValueError with one line per problem, each naming the setting, what it must be
    and the value it got.
    """
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {', '.join(map(repr, RECIPES))}; got {recipe!r}")
    unknown = sorted(set(overrides) - set(CONFIG_KEYS) - {"recipe"})
    if "recipe" in overrides or unknown:
        bad = unknown or ["recipe"]
        raise ValueError(f"unknown training setting(s) {', '.join(bad)} (the recipe is the first argument); "
                         f"valid settings: {', '.join(key for key in CONFIG_KEYS if key != 'recipe')}")
    values = {**RECIPES[recipe], **{key: value for key, value in overrides.items() if value is not None}}
    try:
        return TrainConfig(recipe=recipe, **values)
    except ValidationError as error:
        raise ValueError(_describe_errors(error, values)) from None


def expected_value(key: str) -> str:
    """What a setting must be, in words ("an integer >= 1", "one of 'a', 'b'")."""
    field = TrainConfig.model_fields[key]
    return _describe_type(field.annotation, field.metadata)


def _describe_type(annotation: Any, metadata: list) -> str:
    if get_origin(annotation) is Annotated:
        base, *extra = get_args(annotation)
        return _describe_type(base, [*extra, *metadata])
    if get_origin(annotation) is Literal:
        if len(get_args(annotation)) == 1:
            return repr(get_args(annotation)[0])
        return f"one of {', '.join(map(repr, get_args(annotation)))}"
    args = get_args(annotation)
    if args and get_origin(annotation) is not Literal:  # a union such as bool | Literal["auto"]
        return " or ".join(_describe_type(arg, metadata) for arg in args)
    if annotation is bool:
        return "true or false"
    bounds = {type(item).__name__: getattr(item, type(item).__name__.lower()) for item in _flatten_bounds(metadata)}
    low_key = "Gt" if "Gt" in bounds else "Ge" if "Ge" in bounds else None
    kind = "an integer" if annotation is int else "a number"
    if low_key and "Lt" in bounds:
        return f"{kind} in {'(' if low_key == 'Gt' else '['}{bounds[low_key]}, {bounds['Lt']})"
    if low_key:
        return f"{kind} {'>' if low_key == 'Gt' else '>='} {bounds[low_key]}"
    return kind


def _flatten_bounds(metadata: list) -> list:
    bounds = []
    for item in metadata:
        if isinstance(item, (annotated_types.Gt, annotated_types.Ge, annotated_types.Lt, annotated_types.Le)):
            bounds.append(item)
        elif hasattr(item, "metadata"):  # a FieldInfo inside Annotated
            bounds += _flatten_bounds(item.metadata)
    return bounds


def _describe_errors(error: ValidationError, values: dict[str, Any]) -> str:
    """One line per problem, each naming the setting, what it must be and the bad value."""
    lines: list[str] = []
    for item in error.errors():
        if not item["loc"]:  # the combinations (model validator): its message is already complete
            message = str(item.get("ctx", {}).get("error", item["msg"]))
            lines += [line for line in message.splitlines() if line not in lines]
            continue
        key = str(item["loc"][0])
        if any(line.startswith(f"training setting {key} ") for line in lines):
            continue  # a union reports each branch: one line per setting is enough
        value = values.get(key, item.get("input"))
        expected = expected_value(key) if key in TrainConfig.model_fields else "a known setting"
        hint = " (YAML reads 1e-3 as text: write 1.0e-3)" if isinstance(value, str) and expected.startswith(
            ("a number", "an integer")) else ""
        lines.append(f"training setting {key} must be {expected}; got {value!r}{hint}")
    return "\n".join(lines)
