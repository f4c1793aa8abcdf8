"""The model half's settings: the flows' hyper-parameters and training, augmentation, evaluation, and one
section per model family (the emotion judge, paper 002's flow-latent classifier, BiCoGAN, NFGAN) and the
scoreboard. Each family's run functions receive their section; its defaults live here and nowhere else."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, StrictInt, model_validator

from pipelines.params_types import (
    Bool,
    Float,
    Int,
    NonNegativeInt,
    PositiveInt,
    Range,
    Section,
    Str,
)

ABLATION_VARIANTS = ("glow", "glow_svd", "bplf_3x3", "bplf_3x3_1x1", "bplf_3x3_svd", "bplf_3x3_1x1_svd")


class FlowHparams(Section):
    """``flowmodels.build_model``'s hyper-parameters: the one place their defaults live."""

    levels: PositiveInt = 3  # Glow's L
    steps: PositiveInt = 8  # Glow's K per level
    hidden: PositiveInt = 128  # conditioner width
    n_bits: Literal[5, 8] = 8
    coupling_parts: Annotated[StrictInt, Field(ge=2)] = 2  # BPLF: parts of the linear coupling (2 = bi-parallel)
    lu: Bool = True  # LU-parametrised 1x1 convolution (false: plain weight + slogdet)
    glow_coupling: Literal["affine", "additive"] = "affine"  # Glow variants only
    channels_last: Bool = True  # NHWC convolutions in the conditioners: speed only, same numbers
    winograd: Bool = True  # CPU Winograd for the 3x3 conditioners' hidden convolution: speed only


class ModelParams(Section):
    variant: Literal[ABLATION_VARIANTS] = "bplf_3x3_svd"  # type: ignore[valid-type]  # the BPLF paper's best
    variants: tuple[Literal[ABLATION_VARIANTS], ...] = ABLATION_VARIANTS  # type: ignore[valid-type]
    conditional: Bool = True  # emotion-conditional (BPLF equation 3-8)
    hparams: FlowHparams = Field(default_factory=FlowHparams)

    @model_validator(mode="after")
    def _variant_listed(self) -> ModelParams:
        if self.variant not in self.variants:
            raise ValueError(f"variant {self.variant!r} must be one of variants {list(self.variants)}")
        return self


class LoopParams(Section):
    """What ``training.LoopConfig`` takes: budgets (whichever comes first), cadences, the non-finite guard."""

    max_steps: PositiveInt | None = 2000
    max_epochs: Annotated[Float, Field(gt=0)] | None = None
    max_seconds: Annotated[Float, Field(gt=0)] | None = None
    checkpoint_every: NonNegativeInt = 500  # 0: only at the end
    val_every: NonNegativeInt = 500  # 0: only at the end
    log_every: PositiveInt = 10
    max_bad_steps: PositiveInt = 10  # consecutive non-finite steps before training stops with advice
    keep_checkpoints: PositiveInt | None = None  # step files kept (null: all; last.pt always)
    seed: Int = 0
    device: Annotated[Str, Field(pattern=r"^(auto|cpu|cuda|cuda:\d+|mps)$")] = "auto"

    # The fields that shape a family's trajectory (each subclass lists its own): a checkpoint resumes only under
    # the same values; budgets, cadences, the device and the skip tolerance may change between segments.
    TRAJECTORY: ClassVar[tuple[str, ...]] = ()

    def trajectory(self) -> dict[str, Any]:
        return {k: (v.model_dump() if isinstance(v := getattr(self, k), Section) else v) for k in self.TRAJECTORY}

    @model_validator(mode="after")
    def _some_budget(self):
        if self.max_steps is None and self.max_epochs is None and self.max_seconds is None:
            raise ValueError("set at least one budget: max_steps, max_epochs or max_seconds")
        return self


class TrainParams(LoopParams):
    """The flows' training (``flowmodels.training.FlowTrainer``)."""

    optimizer: Literal["adam", "adamax", "adamw"] = "adamax"
    lr: Annotated[Float, Field(gt=0)] = 1e-3
    warmup_steps: NonNegativeInt = 200
    grad_clip: Annotated[Float, Field(ge=0)] | None = 50.0  # 0 or null: no clipping
    batch_size: PositiveInt = 64  # the global batch (split over the ranks of a distributed run)
    bf16: Bool = False  # bf16 autocast (GPU); log-determinants stay float32
    init_batch: PositiveInt = 256  # images of actnorm's data-dependent initialisation

    # The fields that shape the trajectory: a checkpoint resumes only under the same values. Budgets, cadences,
    # the device and the skip tolerance may change between an interrupted run and its resumption.
    TRAJECTORY: ClassVar[tuple[str, ...]] = (
        "optimizer",
        "lr",
        "warmup_steps",
        "grad_clip",
        "batch_size",
        "bf16",
        "seed",
        "init_batch",
    )


class AugmentParams(Section):
    """``training.augment.Augmentation``: ranges drawn uniformly per image (null / 0: off). BiCoGAN's table:
    rotate -50..30 (the one that helped), crop 0..0.2, flip 1, gamma contrast, scale 1..1.5, shear 0..0.2."""

    rotate: Range | None = None  # degrees
    crop: Range | None = None  # fraction of each side cut away, the rest resized back
    flip: Annotated[Float, Field(ge=0, le=1)] = 0.0  # probability of a horizontal flip
    gamma: Range | None = None  # exponent range
    scale: Range | None = None  # zoom factor range
    shear: Range | None = None  # shear factor range

    def build(self):
        from training.augment import Augmentation

        return Augmentation(**self.model_dump())


class DensityAuditParams(Section):
    # whose champion scores every face (runs.density_audit): a raw-pixel variant sees the faces as the shards hold them
    variant: Str = "bplf_3x3"
    least_likely: PositiveInt = 12  # faces per source in the strip of the least likely
    splits: tuple[Literal["train", "val", "test"], ...] = ("train", "test")


class EvaluateParams(Section):
    temperatures: tuple[Annotated[Float, Field(gt=0)], ...] = (0.5, 0.7, 1.0)
    samples_per_class: PositiveInt = 8
    tsne_points: NonNegativeInt = 600  # test images in the t-SNE (as the flow-latent classifier's); 0: no t-SNE
    transfer_reference_per_class: NonNegativeInt = 500  # training images a class for the transfer's means; 0: all
    batch_size: PositiveInt = 128
    seed: Int = 0
    class_prior: Literal["train", "uniform"] = "train"  # Bayes classifiers' p(y): training label frequencies
    density_audit: DensityAuditParams = Field(default_factory=DensityAuditParams)


class JudgeTrainParams(LoopParams):
    """The emotion judge's training (``recognition.training.JudgeTrainer``): a discriminative CNN, early-stopped on
    validation accuracy (``patience`` validations without a new best; the best weights are what is kept)."""

    max_steps: PositiveInt | None = 3000
    val_every: NonNegativeInt = 250
    checkpoint_every: NonNegativeInt = 500
    optimizer: Literal["adam", "adamax", "adamw"] = "adamw"
    lr: Annotated[Float, Field(gt=0)] = 2e-3
    weight_decay: Annotated[Float, Field(ge=0)] = 1e-4
    warmup_steps: NonNegativeInt = 100
    batch_size: PositiveInt = 64
    label_smoothing: Annotated[Float, Field(ge=0, lt=1)] = 0.0
    class_weighting: Literal["balanced", "none"] = "balanced"  # loss weights from the train label counts
    patience: PositiveInt | None = 6  # validations without a new best val accuracy before stopping; null: never
    augment: AugmentParams = Field(
        default_factory=lambda: AugmentParams(rotate=(-15.0, 15.0), flip=0.5, crop=(0.0, 0.1))
    )

    TRAJECTORY: ClassVar[tuple[str, ...]] = (
        "optimizer",
        "lr",
        "weight_decay",
        "warmup_steps",
        "batch_size",
        "label_smoothing",
        "class_weighting",
        "seed",
        "augment",
    )


class JudgeParams(Section):
    """The emotion judge (``recognition.network.EmotionJudge``, a mini-Xception-class CNN): the scoreboard's referee."""

    widths: tuple[PositiveInt, ...] = (32, 64, 128, 256)  # channels of the residual separable-conv stages
    dropout: Annotated[Float, Field(ge=0, lt=1)] = 0.2
    test_time_flip: Bool = True  # average the probabilities of the face and its mirror image
    train: JudgeTrainParams = Field(default_factory=JudgeTrainParams)


class FlowLatentTrainParams(TrainParams):
    """Paper 002's classifier trains like a flow (same optimizer, warm-up, clipping), on its own budget."""

    max_steps: PositiveInt | None = 2000


class FlowLatentParams(Section):
    """Paper 002's flow-latent classifier (``flowmodels.classifier``): an unconditional Glow f (the flows'
    ``model.hparams``) and a conditional flow h of ``h_steps`` steps on the last latent, loss L_cond + lam L_class."""

    f_variant: Literal[ABLATION_VARIANTS] = "glow"  # type: ignore[valid-type]  # paper 002: Glow
    h_steps: PositiveInt = 4  # paper 002: one block of 4 steps
    h_hidden: PositiveInt | None = None  # null: f's hidden width
    lam: Annotated[Float, Field(ge=0)] = 0.3  # paper 002, eq. 6
    train: FlowLatentTrainParams = Field(default_factory=FlowLatentTrainParams)
    cv_source: Str | None = "jaffe"  # paper 002's protocol: k-fold subject-independent CV on this source; null: off
    cv_max_steps: PositiveInt = 300  # training budget of each fold's model
    tsne_points: NonNegativeInt = 600  # test images in the t-SNE of z'_1


class ScoreboardParams(Section):
    """The scoreboard (``runs.scoreboard``): every model scored on the same test images."""

    samples_per_class: PositiveInt = 100  # N generated faces per emotion for label agreement and the Frechet distance
    temperature: Annotated[Float, Field(gt=0)] = 0.7  # sampling temperature of the flows (stated in the table)
    seed: Int = 0
    batch_size: PositiveInt = 128
    cross_dataset_sources: tuple[Str, ...] = (
        "jaffe",
        "ckplus",
        "fer2013",
    )  # rows/columns of the matrix (those present)
    cross_dataset_flow: Literal[ABLATION_VARIANTS] = "bplf_3x3"  # type: ignore[valid-type]  # whose bpd_raw matrix
    cross_dataset_max_steps: PositiveInt = 400  # training budget of each single-source model


class NfganLossParams(Section):
    """NFGAN's loss weights (paper 004, Algorithm 1). Enc and Dec minimise perceptual L_feat + identity L_id + pixel
    L_pixel; Dec alone also adversarial L_GAN-Dec + symmetry L_sym. The paper's perceptual 1, lambda_1 3e-3, lambda_2
    1e-3 are tuned to VGG-Face / Light CNN feature scales; on this project's own identity network (L_feat ~ 30-100,
    L_id ~ 500, L_pixel ~ 0.5) they let the feature terms drive the generator and the held-out pixel L1 rose (0.53 ->
    0.59 in 300 steps, JAFFE 64x64, narrow nets); pixel-led weights bring L_feat and L_id to a few hundredths of the
    total and lowered it to 0.40, as the pixel loss alone did (``adversarial.nfgan.training``'s docstring)."""

    perceptual: Annotated[Float, Field(ge=0)] = 1e-3  # L_feat (the paper: 1)
    identity: Annotated[Float, Field(ge=0)] = 1e-4  # lambda_1 on L_id (the paper: 3e-3)
    pixel: Annotated[Float, Field(ge=0)] = 1.0  # lambda_2 on L_pixel (the paper: 1e-3)
    symmetry: Annotated[Float, Field(ge=0)] = 0.3  # lambda_3 on L_sym (decoder only)
    adversarial: Annotated[Float, Field(ge=0)] = 0.1  # eta on L_GAN-Dec (decoder only)
    symmetry_space: Literal["pixel", "laplacian"] = "pixel"  # eq. 3 on pixels, or section 4.2's Laplacian variant


class NfganTrainParams(LoopParams):
    """NFGAN's training (``adversarial.nfgan.training.NFGANTrainer``): Algorithm 1, one Adam per side."""

    max_steps: PositiveInt | None = 3000
    val_every: NonNegativeInt = 250
    checkpoint_every: NonNegativeInt = 500
    optimizer: Literal["adam", "adamax", "adamw"] = "adam"
    lr: Annotated[Float, Field(gt=0)] = 2e-4  # the paper gives none: DCGAN's
    betas: tuple[Annotated[Float, Field(ge=0, lt=1)], Annotated[Float, Field(ge=0, lt=1)]] = (0.5, 0.999)
    warmup_steps: NonNegativeInt = 0
    batch_size: PositiveInt = 64
    grad_clip: Annotated[Float, Field(ge=0)] | None = None  # 0 or null: no clipping
    flip: Annotated[Float, Field(ge=0, le=1)] = 0.5  # probability of mirroring a pair (input and target together)

    TRAJECTORY: ClassVar[tuple[str, ...]] = (
        "optimizer",
        "lr",
        "betas",
        "warmup_steps",
        "batch_size",
        "grad_clip",
        "flip",
        "seed",
    )


class NfganIdentityTrainParams(LoopParams):
    """The identity network's training (``adversarial.nfgan.identity.IdentityTrainer``): subject classification."""

    max_steps: PositiveInt | None = 2000
    val_every: NonNegativeInt = 250
    checkpoint_every: NonNegativeInt = 500
    optimizer: Literal["adam", "adamax", "adamw"] = "adamw"
    lr: Annotated[Float, Field(gt=0)] = 1e-3
    weight_decay: Annotated[Float, Field(ge=0)] = 1e-4
    warmup_steps: NonNegativeInt = 100
    batch_size: PositiveInt = 64
    augment: AugmentParams = Field(
        default_factory=lambda: AugmentParams(rotate=(-10.0, 10.0), flip=0.5, crop=(0.0, 0.08))
    )

    TRAJECTORY: ClassVar[tuple[str, ...]] = (
        "optimizer",
        "lr",
        "weight_decay",
        "warmup_steps",
        "batch_size",
        "seed",
        "augment",
    )


class NfganIdentityParams(Section):
    """The identity network standing in for the paper's pretrained Light CNN (weights not downloadable here): a
    Light-CNN-like classifier of the training split's subjects whose last two layers feed L_id."""

    widths: tuple[PositiveInt, ...] = (32, 64, 96, 128)  # channels of the conv + max-feature-map + pool blocks
    embedding: PositiveInt = 256  # the penultimate (max-feature-map) embedding
    min_images: PositiveInt = 4  # subjects with fewer training faces are left out of the classifier
    train: NfganIdentityTrainParams = Field(default_factory=NfganIdentityTrainParams)


class NfganEvaluateParams(Section):
    """NFGAN's evaluation (``runs.nfgan``) on the test split's pairs, and the paper's Table 4 (``runs.nfgan_table4``)."""

    strip_faces: PositiveInt = 12  # test pairs in the input -> normalized -> true neutral picture
    # distinct test inputs embedded by dlib (about 0.25 s a face on one CPU core; each input also embeds its output)
    dlib_faces: PositiveInt = 300
    seed: Int = 0  # which test faces the scoreboard row embeds
    # Table 4: expression recognition with and without the normalized faces, subject-independent folds of each of
    # these sources that has pairs in the shard set (CK+ in its original layout, MMI); [] turns it off
    table4_sources: tuple[Str, ...] = ("ckplus", "mmi")
    table4_max_steps: PositiveInt = 300  # each fold's emotion judge (params judge otherwise)


class NfganParams(Section):
    """NFGAN (paper 004, ``adversarial.nfgan``): expressive face -> the same person's frontal neutral face."""

    # the paper's 64x64 gray faces; the shards must be built at this size (data.image_size: [64, 64]); sides
    # must be multiples of 32 (the decoder's five stride-2 layers)
    image_size: tuple[PositiveInt, PositiveInt] = (64, 64)
    latent: PositiveInt = 256  # z, Table 1's FC2
    encoder_widths: tuple[PositiveInt, ...] = (32, 64, 128, 256)  # Table 1 Conv1-4
    encoder_hidden: PositiveInt = 512  # Table 1 FC1
    decoder_widths: tuple[PositiveInt, PositiveInt, PositiveInt, PositiveInt] = (512, 256, 128, 64)  # Table 2 FConv1-4
    discriminator_widths: tuple[PositiveInt, ...] = (64, 128, 256, 512)  # Table 3 Conv1-4
    leaky_slope: Annotated[Float, Field(ge=0, lt=1)] = 0.3  # the paper's LReLU alpha
    # whose features L_feat compares (VGG-Face in the paper): the identity network's block `perceptual_layer`
    # (0-based; 1 = its 16x16 map at 64x64, the resolution of VGG-Face's fifth convolution relative to its input)
    # or the emotion judge's pooled features
    perceptual_features: Literal["identity", "judge"] = "identity"
    perceptual_layer: NonNegativeInt = 1
    losses: NfganLossParams = Field(default_factory=NfganLossParams)
    identity: NfganIdentityParams = Field(default_factory=NfganIdentityParams)
    train: NfganTrainParams = Field(default_factory=NfganTrainParams)
    evaluate: NfganEvaluateParams = Field(default_factory=NfganEvaluateParams)

    @model_validator(mode="after")
    def _sides(self) -> NfganParams:
        h, w = self.image_size
        if h % 32 or w % 32:
            raise ValueError(f"image_size {[h, w]}: both sides must be multiples of 32 (the decoder's five doublings)")
        if self.latent % ((h // 32) * (w // 32)):
            raise ValueError(f"latent {self.latent} must divide into the decoder's {h // 32}x{w // 32} starting map")
        return self


class BicoganTrainParams(LoopParams):
    """BiCoGAN's training (``adversarial.bicogan.training.BiCoGANTrainer``): Adam for D and for G+E together,
    one simultaneous step of both per batch, augmentation on the fly (BiCoGAN's table; rotation on by default)."""

    max_steps: PositiveInt | None = 18600  # the seed paper's Fig. 4 run: 18,600 steps of 128 images
    checkpoint_every: NonNegativeInt = 1000
    val_every: NonNegativeInt = 500
    lr: Annotated[Float, Field(gt=0)] = 2e-4  # DCGAN / BiGAN / the seed paper's code: Adam(2e-4, beta1 0.5)
    betas: tuple[Annotated[Float, Field(ge=0, lt=1)], Annotated[Float, Field(ge=0, lt=1)]] = (0.5, 0.999)
    warmup_steps: NonNegativeInt = 0  # linear learning-rate warm-up of both optimizers
    batch_size: PositiveInt = 128  # the seed paper's code
    # G and E's adversarial loss: BiGAN's swapped labels (non_saturating) or the minimax objective itself
    adversarial_loss: Literal["non_saturating", "minimax"] = "non_saturating"
    augment: AugmentParams = Field(default_factory=lambda: AugmentParams(rotate=(-50.0, 30.0)))

    TRAJECTORY: ClassVar[tuple[str, ...]] = (
        "lr",
        "betas",
        "warmup_steps",
        "batch_size",
        "adversarial_loss",
        "seed",
        "augment",
    )


class BicoganParams(Section):
    """BiCoGAN (``adversarial.bicogan``): the networks' sizes, the class set, the sources and the EFL weight
    gamma = min(alpha * e^(rho * epoch), phi) of the paper's objective."""

    z_dim: PositiveInt = 100  # intrinsic factors z (the seed paper's code: 100)
    widths: tuple[PositiveInt, ...] = (64, 128, 256)  # channels of the 4x4/2 stages from the image up (G mirrors them)
    latent_width: PositiveInt = 512  # D's MLP on [z, c]
    joint_width: PositiveInt = 512  # D's joint layer on (x features, [z, c] features)
    classes: Literal["six", "seven"] = "six"  # six: the seed paper's (disgust dropped); seven: all of EMOTIONS
    sources: tuple[Str, ...] | None = None  # null: the EmotionSet's enabled sources; [fer2013] reproduces the paper
    alpha: Annotated[Float, Field(ge=0)] = 1.0  # gamma's initial value
    rho: Annotated[Float, Field(ge=0)] = 0.25  # gamma's exponential rate per epoch
    phi: Annotated[Float, Field(ge=0)] = 10.0  # gamma's cap
    train: BicoganTrainParams = Field(default_factory=BicoganTrainParams)

    @model_validator(mode="after")
    def _known_sources(self) -> BicoganParams:
        from pipelines.params_types import KNOWN_SOURCES

        if self.sources is not None:
            unknown = [s for s in self.sources if s not in KNOWN_SOURCES]
            if unknown or not self.sources:
                raise ValueError(
                    f"sources {list(self.sources)}: each must be one of {list(KNOWN_SOURCES)}, at least one"
                )
        if self.alpha > self.phi:
            raise ValueError(f"alpha {self.alpha} (gamma's initial value) must not exceed phi {self.phi} (its cap)")
        return self
