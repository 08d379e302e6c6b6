"""Research tools over a finished (or checkpointed) run, each importable and behind
`python -m jaxdl.analysis TOOL --run=WORKDIR [--flags]`:

  adversarial   FGSM / PGD (L-inf, L2; untargeted or targeted): accuracy vs epsilon
  distortions   accuracy under jaxdl's augmentation ops at a sweep of strengths
  saliency      vanilla gradients, SmoothGrad, integrated gradients
  dream         Deep Dream of a layer, activation maximisation of a class logit
  landscape     loss along a line between weights, and on a filter-normalised plane

Each module holds the compiled math as pure functions of (model function, variables,
inputs), and an `analyse(run, ...)` that takes a `jaxdl.trained.TrainedRun`, checks every
input before writing anything, and writes JSON and PNG into WORKDIR/analysis/TOOL/.
"""
