"""The PyTorch twins of jaxdl's training steps, which the benchmarks time side by side.

    models.py      the models, layer for layer (NCHW here, NHWC in jaxdl)
    weights.py     `load_flax_params`: jaxdl's weights copied into a twin
    optimizers.py  the config's optimizer and schedule, as optax builds them
    step.py        `TorchStep`, `GanStep` and `build_step(config, total_updates,
                   input_shape)`, which reads the model, task, optimizer, schedule and
                   precision sections of a validated jaxdl config and refuses what it does
                   not mirror (`UnsupportedConfig`: it does not silently train something else)
    timing.py      `python -m benchmarks.torch_twins`: a twin's step timed alone

`python -m benchmarks.step_throughput --compare torch` builds the jaxdl side through
`jaxdl.app.load_config` and `jaxdl.training.loop.build` and the torch side here, from the
SAME validated config; tests/test_torch_twins.py checks each twin against jaxdl whenever
torch is installed (the `bench` extra).

What is mirrored, layer for layer (NCHW here, NHWC in jaxdl; `load_flax_params` copies a
jaxdl state into the torch model, and the comparison checks that the parameter counts and
the first loss agree):

- `cnn` (jaxdl/models/cnn.py; mnist_cnn's config): per entry of `features`, conv kxk with
  bias and symmetric padding k // 2 (= SAME at stride 1) -> activation -> 2x2/2 pool; the
  feature map is flattened in jaxdl's (h, w, c) order, so the dense weights are the same
  matrix; dense -> activation -> dropout -> dense. Weights: Flax's default
  `lecun_normal` (truncated normal, fan_in) and zero biases, not torch's default
  kaiming-uniform.
- CIFAR `resnet20/32/44/56/110` (jaxdl/models/resnet.py): conv3x3(16) -> BN -> ReLU, three
  stages of basic blocks (16, 32, 64 channels, stride 2 entering stages 2 and 3), option-A
  shortcuts (x[:, :, ::2, ::2] zero-padded in channels, split (extra // 2, rest) as jaxdl
  pads), global average pool, dense. Convs without bias, `kaiming_normal_(fan_out, relu)`
  as in jaxdl; BN weight 1 / bias 0 (0 for the last BN of a block with
  `zero_init_last_bn`); the head dense is Flax's `lecun_normal`. BN momentum is converted
  (jaxdl/Flax 0.9 = torch 0.1), epsilon as configured. One difference, not affecting
  speed: torch updates its running variance with the unbiased batch variance, Flax with
  the biased one (so for every BatchNorm below).
- ImageNet `resnet50/101/152` v1.5 (`ImageNetResNet`, written here; torchvision is not
  needed): 7x7/2 conv, BN, ReLU, 3x3/2 max pool, bottlenecks with the stride on the 3x3
  conv and 1x1 conv + BN projection shortcuts, average pool, dense; module names as
  jaxdl's, so weights copy by name. 25,557,032 parameters at 1000 classes, as jaxdl's.
- `lstm_lm` (`CharLSTM`): embedding -> `nn.LSTM` (num_layers, dropout between layers) ->
  dropout -> dense over the vocabulary; gates i, f, g, o as Flax's LSTM cell. Flax's cell
  has one bias per gate, torch's two: each torch b_ih is a zero buffer (not a parameter),
  so both have the same parameters and torch keeps its fused LSTM kernel. Loss: the mean
  next-token cross-entropy over all positions (jaxdl's language_model task).
- `dcgan` (`DCGAN`: `DCGANGenerator`, `DCGANDiscriminator`; names as jaxdl's Flax
  modules): G = dense (no bias) -> BN -> ReLU -> reshape to jaxdl's (h, w, c) layout ->
  stride-2 transposed convs (BN + ReLU; the last with bias) -> sigmoid/tanh; D = stride-2
  convs with XLA's 'SAME' padding (BN after all but the first) -> leaky ReLU -> dense logit
  of the (h, w, c)-ordered features. A Flax ConvTranspose (transpose_kernel=False) is
  torch's ConvTranspose2d with the kernel flipped in space; its 'SAME' padding at stride
  2 is torch's padding (k - 2) / 2 for even k (odd kernels are refused). The step
  (`GanStep`) is jaxdl's gan task: `n_critic` D updates on the real batch and G's samples
  of fresh latents, then one G update through D, each net with its own optimizer, the
  non-saturating or hinge losses. Differences: the latents (torch's generator, not jaxdl's
  PRNG), so the first-loss check uses given latents (`GanStep.initial_loss`).
- Loss (classification): mean softmax cross-entropy (with `task.label_smoothing`).
- Optimizer: `sgd` / `momentum` / `nesterov` as optax builds them (trace = g + m * trace,
  update = -lr * trace, which is torch.optim.SGD with dampening 0), `adam` (optax's
  m_hat / (sqrt(v_hat) + eps) is torch's Adam) and `adamw`; coupled L2 weight decay added
  to the gradient before the optimizer (jaxdl's `add_decayed_weights`, torch's
  `weight_decay`) on the same parameters: `no_bias_no_norm` = tensors with ndim > 1, as
  jaxdl's mask. `grad_clip_norm`: clipping by the global norm of each optimizer's
  gradients before it (torch's clip_grad_norm_ adds 1e-6 to the norm, optax does not).
  The learning rate follows the config's schedule per step (constant, cosine,
  warmup_cosine, piecewise; linear warmup from 0 as jaxdl joins it), through LambdaLR
  stepped inside the step like the schedule inside jaxdl's compiled step.
- Precision: fp32, or for classification bf16 as `torch.autocast(bfloat16)` around the
  forward pass on float32 parameters (jaxdl: model dtype bfloat16, float32 parameters).
  Autocast picks its own ops for bfloat16 (convolutions and matmuls; BatchNorm runs on the
  bfloat16 activations), not exactly XLA's, so losses agree to about 1%, not 1e-3.
- Device: CPU, or CUDA when `build_step(device="cuda")` (step_throughput does so when
  jaxdl runs on a GPU).

`TorchStep(x, y)` is one training step: zero_grad, forward, cross-entropy, backward,
optimizer step, schedule step; it returns the detached loss without synchronising.
Threads: `torch.set_num_threads(os.cpu_count())` (`set_threads`).

Memory format: each model keeps the one measured faster on the 2-core AMD EPYC machine
(torch 2.13.0+cpu, batch 128, eager, this module's alternating windows): the CIFAR ResNets
run channels_last (ResNet-20: 577-582 vs 429-457 examples/s contiguous), the small CNN
contiguous (mnist_cnn: a tie within noise, 3019-3772 vs 3130-3382 over 3 runs, contiguous
ahead in 2). See `models.MEMORY_FORMAT` and benchmarks/LOG.md. The ImageNet ResNets use
channels_last by analogy with the CIFAR ResNets, not measured; the LSTM and the DCGAN run
contiguous (not measured either).
"""

from benchmarks.torch_twins.models import (CIFAR_DEPTHS, IMAGENET_STAGES, MEMORY_FORMAT,
                                           MIRRORED, UnsupportedConfig, build_lm, build_model)
from benchmarks.torch_twins.optimizers import make_optimizer, make_schedule
from benchmarks.torch_twins.step import (GanStep, TorchStep, build_step, set_threads,
                                         to_torch_batch)
from benchmarks.torch_twins.weights import load_flax_params

__all__ = ["CIFAR_DEPTHS", "IMAGENET_STAGES", "MEMORY_FORMAT", "MIRRORED", "GanStep",
           "TorchStep", "UnsupportedConfig", "build_lm", "build_model", "build_step",
           "load_flax_params", "make_optimizer", "make_schedule", "set_threads",
           "to_torch_batch"]
